/**
 * What the last failed attempt of a request left, to answer with when no attempt serves, and the
 * small judgements about it the request run needs at its end.
 */
import { ProxyError } from "../domain/errors.ts";
import type { ChunkReader } from "../domain/redact.ts";
import type { AcquireResult } from "../keys/key-pool.ts";
import type { Attempt } from "./attempt.ts";
import type { Outcome } from "../domain/outcome.ts";
import { answerStands } from "./retry-plan.ts";

export type LastFailure =
  | {
      kind: "response";
      keyId: string;
      status: number;
      headers: Headers;
      bytes: Uint8Array;
      outcome: Outcome;
      /** The bytes are as the upstream encoded them: relayed with their Content-Encoding. */
      encoded: boolean;
      /** An error answer larger than what was read: the rest, and the attempt it belongs to. */
      rest?: { reader: ChunkReader; attempt: Attempt } | undefined;
    }
  | { kind: "unreachable"; reason: string; timedOut: boolean };

/** The upstream's last answer is the one to give when nothing else can serve (see answerStands). */
export function answersItself(last: LastFailure): boolean {
  return last.kind === "response" && answerStands(last.outcome);
}

/**
 * Whether a rate limit ended the request and the proxy may say when a key returns instead: then
 * the run asks the pool once more, for nothing but that answer (see RequestRun.run).
 */
export function mayTellWhenKeysReturn(last: LastFailure | undefined): boolean {
  return last?.kind === "response" && (last.outcome.kind === "rate-limited" || last.outcome.kind === "payment") && !answersItself(last);
}

/** The pool's "no key" is the answer (rather than the upstream's last): only waiting helps. */
export function onlyWaitingHelps(acquired: Exclude<AcquireResult, { ok: true }>, last: LastFailure | undefined): boolean {
  if (last && answersItself(last)) return false;
  return !last || acquired.reason === "all-cooling" || acquired.reason === "free-budget-exhausted" || acquired.reason === "over-budget";
}

export function rateLimitMessage(last: LastFailure | undefined): string | undefined {
  return last?.kind === "response" && last.outcome.kind === "rate-limited" ? last.outcome.message : undefined;
}

/** Every attempt failed without an answer to pass back (none was made: a 500, which cannot happen with MAX_ATTEMPTS ≥ 1). */
export function unreachableError(last: Extract<LastFailure, { kind: "unreachable" }> | undefined, shownBaseUrl: string, attempts: number): ProxyError {
  if (!last) return new ProxyError(500, "no upstream attempt was made", { type: "internal_error", code: "internal_error" });
  return new ProxyError(
    last.timedOut ? 504 : 502,
    `the upstream ${shownBaseUrl} could not be reached after ${attempts} attempt${attempts === 1 ? "" : "s"}: ${last.reason}`,
    { type: last.timedOut ? "timeout_error" : "upstream_error", code: last.timedOut ? "upstream_timeout" : "upstream_unreachable" },
  );
}

/** Ends the unread rest of the last error answer: another attempt follows, or nobody needs it. */
export function dropRest(last: LastFailure | undefined): void {
  if (last?.kind !== "response" || !last.rest) return;
  const { reader, attempt } = last.rest;
  last.rest = undefined;
  attempt.drop(reader);
}

export const shuttingDownError = (): ProxyError =>
  new ProxyError(503, "the proxy shut down before the upstream answered (SHUTDOWN_GRACE_SECONDS ran out): retry in a moment", {
    type: "service_unavailable",
    code: "shutting_down",
    headers: { connection: "close", "retry-after": "1" },
  });

export const clientClosedError = (): ProxyError =>
  new ProxyError(499, "the client closed the request", { type: "invalid_request_error", code: "client_closed_request" });
