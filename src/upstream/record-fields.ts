/**
 * The request record's helpers on the request path: bodies cut for the log, the generation id.
 * The record's type is a leaf (domain/request-record.ts), read by observe/ without importing this.
 */

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

