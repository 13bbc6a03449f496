/**
 * Reading the start of an upstream body without ever holding a whole answer: a small answer is
 * read to its end and judged whole (and can still be retried); a larger one is judged by its head
 * and then relayed as it arrives. One upstream answer can be gigabytes; the proxy's memory per
 * answer stays bounded by these limits.
 */
import type { ChunkReader } from "../domain/redact.ts";
import type { SilenceWatch } from "./silence-watch.ts";

/** A successful answer up to this size is read whole before it is sent (JSON and error checks). */
export const ANSWER_HEAD_BYTES = 64 * 1024;
/** An error answer is read up to this size for classification; the rest is relayed or dropped. */
export const ERROR_HEAD_BYTES = 64 * 1024;

export interface BodyHead {
  chunks: Uint8Array[];
  bytes: number;
  /** True: `chunks` is the whole body. */
  complete: boolean;
}

/** Reads until the body ends or at least `limit` bytes are in; throws when the body breaks off. */
export async function readHead(reader: ChunkReader, limit: number, silence?: SilenceWatch): Promise<BodyHead> {
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  while (bytes < limit) {
    const { done, value } = await reader.read();
    silence?.touch();
    if (done) return { chunks, bytes, complete: true };
    chunks.push(value);
    bytes += value.byteLength;
  }
  return { chunks, bytes, complete: false };
}

/** The chunks as one array: no copy for a single chunk. */
export function joinChunks(chunks: readonly Uint8Array[]): Uint8Array {
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  return chunks.length === 0 ? new Uint8Array(0) : Buffer.concat(chunks);
}

/**
 * Whether the body may be read in one native call: its length is declared, within `limit`, and
 * not encoded (fetch decodes gzip, so an encoded length says nothing about the decoded size).
 */
export function declaredWithin(headers: Headers, limit: number): boolean {
  const length = headers.get("content-length");
  return length !== null && !headers.has("content-encoding") && Number(length) <= limit;
}

/**
 * A small answer's text (GET /key, an account lookup), or undefined when the body is longer than
 * `limit` or breaks off: such an answer is never read whole, whatever the upstream sends.
 */
export async function boundedText(response: Response, limit: number): Promise<string | undefined> {
  if (!response.body) return "";
  const reader = response.body.getReader();
  try {
    const head = await readHead(reader, limit + 1);
    if (!head.complete || head.bytes > limit) return undefined;
    return new TextDecoder().decode(joinChunks(head.chunks));
  } catch {
    return undefined;
  } finally {
    reader.cancel().catch(() => {});
  }
}
