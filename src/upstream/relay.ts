/**
 * Hands an upstream body to the client chunk by chunk, as it arrives: nothing is held back or
 * re-encoded. Around the bytes it watches three things: the client going away (cancel → the
 * upstream request is aborted, so no quota is spent on nobody), an upstream that falls silent
 * for longer than the idle limit, and the end of the body (for the request's bookkeeping).
 */

import type { ChunkReader, ReadResult } from "../domain/redact.ts";
import type { SilenceWatch } from "./silence-watch.ts";
import type { UsageTap } from "./usage-tap.ts";

export type RelayEnd = { kind: "complete" } | { kind: "client-gone" } | { kind: "upstream-failed"; error: unknown };


export interface RelayOptions {
  /** Bytes already read (held until the commit point), sent first. */
  held?: Uint8Array[];
  /** A read already under way when the relay takes over; its result comes next. */
  pending?: Promise<ReadResult>;
  /** Aborting it cancels the upstream `fetch` and its body. */
  upstream: AbortController;
  /** Told of every chunk; it aborts the upstream when the silence gets too long. */
  silence: SilenceWatch;
  /** Sees each chunk after it is handed on (usage accounting); never delays one. */
  tap?: UsageTap;
  onEnd?: (end: RelayEnd) => void;
}

export function relay(
  reader: ChunkReader,
  { upstream, silence, tap, onEnd, held = [], pending }: RelayOptions,
): ReadableStream<Uint8Array> {
  let next = pending;
  let ended = false;

  const end = (result: RelayEnd) => {
    if (ended) return;
    ended = true;
    silence.stop();
    onEnd?.(result);
  };

  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const first = held.shift();
        if (first) {
          controller.enqueue(first);
          tap?.observe(first);
          return;
        }
        let result: ReadResult;
        try {
          const reading = next ?? reader.read();
          next = undefined;
          result = await reading;
        } catch (error) {
          if (ended) return; // the client left first; the stream is already cancelled
          // The upstream died or went silent: end the client's stream with an error (its
          // connection is closed without the final chunk), so nothing hangs on either side.
          end({ kind: "upstream-failed", error });
          controller.error(error);
          return;
        }
        if (ended) return;
        silence.touch();
        if (result.done) {
          end({ kind: "complete" });
          controller.close();
        } else {
          controller.enqueue(result.value);
          tap?.observe(result.value);
        }
      },
      cancel(reason) {
        end({ kind: "client-gone" });
        upstream.abort(reason);
        return reader.cancel(reason).catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}
