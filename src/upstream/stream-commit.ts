/**
 * The commit point of a streamed answer. OpenRouter may answer 200, send `: OPENROUTER PROCESSING`
 * keep-alives, and then an error event (a 429, a provider failure) before any content. So the
 * client's response (its status and the keep-alives) is held until the first real `data:` event
 * or until `commitMs` pass, whichever is first; an error event before that is still retryable.
 * After the commit point bytes pass through untouched and nothing is ever replayed.
 *
 * Only the events before the commit point are parsed; after it, no chunk is looked at here.
 */
import type { ChunkReader, ReadResult } from "../domain/redact.ts";
import type { SilenceWatch } from "./silence-watch.ts";
import type { ErrorBodyFacts } from "./policy.ts";
import { errorFactsOf } from "./policy.ts";
import { SseScanner } from "./sse.ts";
import { errorIn } from "./usage-shapes.ts";

/** Most bytes held before the commit point; keep-alives and an error event are far smaller. */
const HOLD_LIMIT_BYTES = 64 * 1024;

export type CommitDecision =
  /** Content began (or time ran out): send `held`, then the rest; `pending` is a read already under way. */
  | { kind: "commit"; held: Uint8Array[]; pending?: Promise<ReadResult> }
  /** An error event arrived before any content: `status` is what it stands for. */
  | { kind: "error-event"; held: Uint8Array[]; status: number; facts: ErrorBodyFacts }
  /** The stream ended before any content: `held` is the whole answer. */
  | { kind: "ended"; held: Uint8Array[] }
  | { kind: "failed"; error: unknown; held: Uint8Array[] };

export async function holdUntilCommit(
  reader: ChunkReader,
  { commitMs, silence }: { commitMs: number; silence: SilenceWatch },
): Promise<CommitDecision> {
  const held: Uint8Array[] = [];
  let heldBytes = 0;
  const scanner = new SseScanner();
  let timer: Timer | undefined;
  const deadline = new Promise<"deadline">((resolve) => {
    timer = setTimeout(() => resolve("deadline"), commitMs);
  });
  try {
    for (;;) {
      const read = reader.read();
      const next = await Promise.race([read, deadline]);
      if (next === "deadline") return { kind: "commit", held, pending: read };
      if (next.done) return { kind: "ended", held };
      silence.touch();
      held.push(next.value);
      // Held bytes are bounded: a stream that sends no event line for long is committed as it is.
      heldBytes += next.value.byteLength;
      if (heldBytes > HOLD_LIMIT_BYTES) return { kind: "commit", held };
      // Keep-alive comments are not events: the first data event decides.
      for (const data of scanner.push(next.value)) {
        if (data.startsWith("{") && data.includes('"error"')) {
          const facts = errorEventFacts(data);
          if (facts && (facts.message !== undefined || facts.code !== undefined)) return { kind: "error-event", held, status: statusOfCode(facts.code), facts };
        }
        return { kind: "commit", held };
      }
    }
  } catch (error) {
    return { kind: "failed", error, held };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The facts of an error event of any shape (usage-shapes.ts `errorIn`: a chat chunk's `error`,
 * Anthropic's `event: error`, a Responses `error` or `response.failed` event); undefined for an
 * event that carries none.
 */
function errorEventFacts(data: string): ErrorBodyFacts | undefined {
  let event: unknown;
  try {
    event = JSON.parse(data);
  } catch {
    return undefined;
  }
  const error = errorIn(event);
  if (error === undefined) return undefined;
  if (event !== null && typeof event === "object" && (event as { error?: unknown }).error === error) return errorFactsOf(event);
  return errorFactsOf({ error: typeof error === "string" ? { message: error } : error });
}

/** An error event's `code` as an HTTP status: a number is one; anything else counts as a 502. */
export function statusOfCode(code: number | string | undefined): number {
  const value = typeof code === "string" && /^\d{3}$/.test(code) ? Number(code) : code;
  if (typeof value === "number" && value >= 400 && value <= 599) return value;
  if (typeof code === "string" && /rate.?limit/i.test(code)) return 429;
  return 502;
}
