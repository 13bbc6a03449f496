/**
 * Hands an upstream body to the client chunk by chunk, as it arrives: nothing is held back or
 * re-encoded. Around the bytes it watches three things: the client going away (cancel → the
 * upstream request is aborted, so no quota is spent on nobody), an upstream that falls silent
 * for longer than the idle limit, and the end of the body (for the request's bookkeeping).
 *
 * The stream's source is one object (pull and cancel are its methods), not a set of closures:
 * one of these exists per answer, tens of thousands a second.
 */

import type { ChunkReader, ReadResult } from "../domain/redact.ts";
import type { SilenceWatch } from "./silence-watch.ts";
import type { UsageTap } from "./usage-tap.ts";

export type RelayEnd = { kind: "complete" } | { kind: "client-gone" } | { kind: "upstream-failed"; error: unknown };

/** Told once, when the relayed body has ended one way or another. */
export interface RelayEnds {
  relayEnded(end: RelayEnd): void;
}

export interface RelayOptions {
  /** Bytes already read (held until the commit point), sent first. */
  held?: Uint8Array[];
  /** A read already under way when the relay takes over; its result comes next. */
  pending?: Promise<ReadResult> | undefined;
  /** Aborting it cancels the upstream `fetch` and its body. */
  upstream: AbortController;
  /** Told of every chunk; it aborts the upstream when the silence gets too long. */
  silence: SilenceWatch;
  /** Sees each chunk after it is handed on (usage accounting); never delays one. */
  tap?: UsageTap | undefined;
  onEnd?: RelayEnds;
}

class RelaySource {
  private ended = false;
  private next: Promise<ReadResult> | undefined;
  private readonly held: Uint8Array[];

  constructor(
    private readonly reader: ChunkReader,
    private readonly options: RelayOptions,
  ) {
    this.next = options.pending;
    this.held = options.held ?? [];
  }

  private end(result: RelayEnd): void {
    if (this.ended) return;
    this.ended = true;
    this.options.silence.stop();
    this.options.onEnd?.relayEnded(result);
  }

  async pull(controller: ReadableStreamDefaultController<Uint8Array>): Promise<void> {
    const first = this.held.shift();
    if (first) {
      controller.enqueue(first);
      this.options.tap?.observe(first);
      return;
    }
    let result: ReadResult;
    try {
      const reading = this.next ?? this.reader.read();
      this.next = undefined;
      result = await reading;
    } catch (error) {
      if (this.ended) return; // the client left first; the stream is already cancelled
      // The upstream died or went silent: end the client's stream with an error (its
      // connection is closed without the final chunk), so nothing hangs on either side.
      this.end({ kind: "upstream-failed", error });
      controller.error(error);
      return;
    }
    if (this.ended) return;
    this.options.silence.touch();
    if (result.done) {
      this.end({ kind: "complete" });
      controller.close();
    } else {
      controller.enqueue(result.value);
      this.options.tap?.observe(result.value);
    }
  }

  cancel(reason?: unknown): Promise<void> {
    this.end({ kind: "client-gone" });
    this.options.upstream.abort(reason);
    return this.reader.cancel(reason).catch(() => {});
  }
}

export function relay(reader: ChunkReader, options: RelayOptions): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>(new RelaySource(reader, options), { highWaterMark: 0 });
}
