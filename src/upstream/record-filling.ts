/**
 * Filling in a request's record (request-record.ts, which stays a leaf: observe/ reads it): what
 * a request starts with, and what the end of its relayed answer adds.
 */
import { describeFetchError } from "./answer-checks.ts";
import type { ProxyRequest } from "./forward-types.ts";
import type { RelayEnd } from "./relay.ts";
import { bodyForLog } from "./record-fields.ts";
import type { RequestRecord } from "../domain/request-record.ts";
import type { UsageTap } from "./usage-tap.ts";

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
