/**
 * Answers the proxy relays in the upstream's own compression. Bun's `fetch` decodes gzip and
 * brotli by default, and the proxy then sends the decoded bytes: a 370 KB model list that came
 * as ~40 KB of gzip would leave uncompressed. For answers the proxy never needs to read, the
 * client's Accept-Encoding goes upstream and the body comes back as it was encoded
 * (`decompress: false`), Content-Encoding and Content-Length included.
 *
 * Which answers: GETs of the model catalog (`/models` and below). It is the one large answer,
 * it is public (OpenRouter serves it without a key), and nothing in it is the proxy's business.
 * Inference answers are still decoded: their usage, an error inside a 200 and the error bodies
 * that decide retries must be readable, and the key scrubbing (an upstream that echoes the key)
 * needs plain bytes. Other small GETs (/key, /credits, /generation) stay decoded and scrubbed.
 */
export function keepsEncoding(method: string, path: string): boolean {
  return (method === "GET" || method === "HEAD") && (path === "/models" || path.startsWith("/models/"));
}
