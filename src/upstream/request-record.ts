/**
 * What happened to one proxied request, filled in by the forward loop and announced once, when
 * the answer (or the stream) has ended: the requests log, metrics and the status page read it.
 */
import type { Usage } from "./usage-tap.ts";

export interface AttemptRecord {
  keyId: string;
  /** The upstream's status, or 0 when it could not be reached. */
  status: number;
  outcome: string;
  /** From sending the attempt to its response headers (or failure). */
  ms: number;
}

export interface RequestRecord {
  requestId: string;
  /** Epoch milliseconds when the proxy received the request. */
  startedAt: number;
  method: string;
  path: string;
  model?: string;
  stream: boolean;
  status: number;
  attempts: AttemptRecord[];
  /** The key that served the answer the client got. */
  keyId?: string;
  /** From receiving the request to sending the client the response headers. */
  ttfbMs?: number;
  durationMs: number;
  usage?: Usage;
  error?: string;
  /** The client went away before the answer was complete. */
  aborted: boolean;
  clientAddress?: string;
  userAgent?: string;
  /** Only with LOG_BODIES=true: the bodies as text, each cut at BODY_LOG_LIMIT bytes. */
  requestBody?: string;
  responseBody?: string;
}

export const BODY_LOG_LIMIT = 64 * 1024;

const decoder = new TextDecoder();
/** A body for the log: text, cut at BODY_LOG_LIMIT bytes with a note saying so. */
export function bodyForLog(bytes: ArrayBuffer | Uint8Array): string {
  const view = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  if (view.byteLength <= BODY_LOG_LIMIT) return decoder.decode(view);
  return `${decoder.decode(view.subarray(0, BODY_LOG_LIMIT))}… [${view.byteLength - BODY_LOG_LIMIT} more bytes not logged]`;
}
