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
  /** The key that served the answer the client got (or carried the attempt the client left during). */
  keyId?: string;
  /**
   * OpenRouter's id for the generation (`X-Generation-Id`, else the answer's `id`): with it a user
   * looks the cost up later (`GET /generation?id=`).
   */
  generationId?: string;
  /** From receiving the request to sending the client the response headers. */
  ttfbMs?: number;
  durationMs: number;
  usage?: Usage;
  error?: string;
  /** The client went away before the answer was complete. */
  aborted: boolean;
  clientAddress?: string;
  /** The client (by name, never its key) when client keys are in use. */
  client?: string;
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

const ID_SCAN_BYTES = 2048;
const answerId = /"id"\s*:\s*"([A-Za-z0-9_.:-]{1,128})"/;

/**
 * The generation id of an answer: the `X-Generation-Id` header, else the first `"id"` in the
 * answer's first bytes (a JSON answer's own id, or the first event of a stream: both lead with it).
 */
export function generationIdOf(headers: Headers, first: Uint8Array | undefined): string | undefined {
  const header = headers.get("x-generation-id");
  if (header) return header.slice(0, 128);
  if (!first) return undefined;
  return answerId.exec(decoder.decode(first.subarray(0, ID_SCAN_BYTES)))?.[1];
}
