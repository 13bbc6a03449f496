/** Small judgements about an upstream answer, kept apart from the attempt loop that uses them. */
import type { AttemptRecord } from "../domain/request-record.ts";

/** Milliseconds to two decimals, for records and Server-Timing. */
export const round = (ms: number): number => Math.round(ms * 100) / 100;

/**
 * Whether a body sent as JSON plainly is not: its first and last non-blank characters are not
 * those of a JSON object or array. A cheap look at two ends, not a parse of the whole answer.
 * `complete` false: `body` is only the answer's head, so only its first character is looked at.
 */
export function claimsJsonButIsNot(headers: Headers, body: Uint8Array, method: string, status: number, complete = true): boolean {
  // HEAD answers, 204 and 304 carry no body by definition (RFC 9110 §9.3.2, §15.3.5, §15.4.5).
  if (method === "HEAD" || status === 204 || status === 304) return false;
  if (!/json/i.test(headers.get("content-type") ?? "")) return false;
  let start = 0;
  let end = body.byteLength - 1;
  const blank = (byte: number | undefined) => byte === 0x20 || byte === 0x0a || byte === 0x0d || byte === 0x09;
  while (start <= end && blank(body[start])) start++;
  while (end >= start && blank(body[end])) end--;
  if (start > end) return complete; // empty (a head of blanks may still be followed by JSON)
  const first = body[start];
  if (!complete) return first !== 0x7b && first !== 0x5b;
  const last = body[end];
  return !((first === 0x7b && last === 0x7d) || (first === 0x5b && last === 0x5d)); // {…} or […]
}

/**
 * `Server-Timing`: what the proxy itself added (`proxy`), the answering attempt's wait for the
 * upstream's first byte (`upstream`) and, after retries, the earlier attempts' time (`retries`).
 */
export function serverTiming(attempts: readonly AttemptRecord[], elapsedMs: number): string {
  const answering = attempts.at(-1)?.ms ?? 0;
  const earlier = attempts.slice(0, -1).reduce((sum, each) => sum + each.ms, 0);
  return `proxy;dur=${round(Math.max(0, elapsedMs - answering - earlier))}, upstream;dur=${answering}${earlier > 0 ? `, retries;dur=${round(earlier)}` : ""}`;
}

export function describeFetchError(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as Error & { code?: string }).code;
    return code ? `${error.message} (${code})` : error.message;
  }
  return String(error);
}
