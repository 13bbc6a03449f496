/**
 * Filling in a request's record (domain/request-record.ts, which stays a leaf: observe/ reads it):
 * what a request starts with, what the end of its relayed answer adds, bodies cut for the log,
 * and the generation id.
 */
import { describeFetchError } from "./answer-checks.ts";
import type { ProxyRequest } from "./forward-types.ts";
import type { RelayEnd } from "./relay.ts";
import type { RequestRecord } from "../domain/request-record.ts";
import type { UsageTap } from "./usage-tap.ts";

export const BODY_LOG_LIMIT = 64 * 1024;

const decoder = new TextDecoder();
/** A body for the log: text, cut at BODY_LOG_LIMIT bytes with a note saying so. */
export function bodyForLog(bytes: ArrayBuffer | Uint8Array): string {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (view.byteLength <= BODY_LOG_LIMIT) return decoder.decode(view);
  return `${decoder.decode(view.subarray(0, BODY_LOG_LIMIT))}… [${view.byteLength - BODY_LOG_LIMIT} more bytes not logged]`;
}

const ID_SCAN_BYTES = 2048;
/** Room after `"id"` for the spaces, the colon and a 128-character id. */
const ID_WINDOW_BYTES = 256;
const ID_KEY = Buffer.from('"id"');
const answerId = /^"id"\s*:\s*"([A-Za-z0-9_.:-]{1,128})"/;

/**
 * The generation id of an answer: the `X-Generation-Id` header, else the first `"id"` in the
 * answer's first bytes (a JSON answer's own id, or the first event of a stream: both lead with it).
 */
export function generationIdOf(headers: Headers, first: Uint8Array | undefined): string | undefined {
  const header = headers.get("x-generation-id");
  if (header) return header.slice(0, 128);
  if (!first) return undefined;
  // Found in the bytes, and only a small window after each `"id"` decoded: decoding the whole
  // head of every answer to find it was a string the size of the answer, per request.
  const head = Buffer.from(first.buffer, first.byteOffset, Math.min(first.byteLength, ID_SCAN_BYTES));
  for (let at = head.indexOf(ID_KEY); at !== -1; at = head.indexOf(ID_KEY, at + ID_KEY.byteLength)) {
    const id = answerId.exec(decoder.decode(head.subarray(at, at + ID_WINDOW_BYTES)))?.[1];
    if (id !== undefined) return id;
  }
  return undefined;
}

/** A new request's record. `startedAt`: epoch milliseconds when the proxy received it. */
export function newRequestRecord(request: ProxyRequest, startedAt: number, logBodies: boolean): RequestRecord {
  // Absent fields are undefined rather than left out: one object shape for every record, and
  // JSON.stringify drops them from the log line all the same.
  return {
    requestId: request.requestId,
    startedAt,
    method: request.method,
    path: request.path,
    model: request.model,
    stream: request.stream,
    status: 0,
    attempts: [],
    durationMs: 0,
    aborted: false,
    clientAddress: request.clientAddress,
    client: request.client,
    userAgent: request.headers.get("user-agent") || undefined,
    requestBody: logBodies && request.body ? bodyForLog(request.body) : undefined,
  };
}

/** What a relayed answer's end adds to its record: the usage, a late error, how it ended. */
export function recordRelayEnd(record: RequestRecord, end: RelayEnd, tap: UsageTap | undefined, isStream: boolean, redactUrl: (text: string) => string): void {
  const captured = tap?.capturedBody();
  const { usage, lateError } = tap?.finish(isStream) ?? {};
  if (captured) record.responseBody = bodyForLog(captured);
  if (usage) record.usage = usage;
  record.aborted = end.kind === "client-gone";
  if (end.kind === "upstream-failed") record.error = `the upstream's answer broke off: ${redactUrl(describeFetchError(end.error))}`;
  else if (lateError) record.error = `error inside the answer: ${lateError}`;
  else if (end.kind === "client-gone") record.error = "the client closed the request";
}
