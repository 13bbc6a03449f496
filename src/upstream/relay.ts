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

/**
 * A direct stream (Bun's `type: "direct"`): the server calls `pull` once and each chunk is written
 * straight to the client's connection and flushed, with no queue and no promise per chunk in
 * between. Chunks still go one at a time, as they arrive; a write the socket cannot take yet is
 * awaited (backpressure).
 */
class RelaySource {
  readonly type = "direct";
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

  async pull(controller: ReadableStreamDirectController): Promise<void> {
    const { tap, silence } = this.options;
    if (this.held.length > 0) {
      for (const chunk of this.held.splice(0)) {
        controller.write(chunk);
        tap?.observe(chunk);
      }
      controller.flush();
    }
    for (;;) {
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
        controller.close(error instanceof Error ? error : new Error(String(error)));
        return;
      }
      if (this.ended) return;
      silence.touch();
      if (result.done) {
        this.end({ kind: "complete" });
        controller.close();
        return;
      }
      const written = controller.write(result.value);
      controller.flush();
      tap?.observe(result.value);
      if (typeof written !== "number") await written;
    }
  }

  cancel(reason?: unknown): Promise<void> {
    this.end({ kind: "client-gone" });
    this.options.upstream.abort(reason);
    return this.reader.cancel(reason).catch(() => {});
  }
}

export function relay(reader: ChunkReader, options: RelayOptions): ReadableStream<Uint8Array> {
  return new ReadableStream(new RelaySource(reader, options)) as ReadableStream<Uint8Array>;
}
