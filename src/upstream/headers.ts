/**
 * Which headers cross the proxy. Hop-by-hop headers belong to one connection (RFC 9110 §7.6.1);
 * the client's credentials are replaced by the chosen key; everything else passes as it came,
 * including OpenRouter's app attribution (`HTTP-Referer`, `X-Title`, `X-OpenRouter-Title`).
 */

const hopByHop = [
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
];

/** Request headers that never go upstream: hop-by-hop, the client's host and credentials,
 * framing/encoding that `fetch` sets itself for the bytes it actually sends, and `Expect` (the
 * proxy has the whole body before it sends; a `100-continue` is between the client and us). */
const notForwarded = [...hopByHop, "host", "authorization", "x-api-key", "content-length", "accept-encoding", "expect"];

/** A native copy, then the few names that must not cross deleted: a third of the cost of a
 * JavaScript callback per header (0.6 µs against 1.8 µs for an OpenAI SDK request's 15 headers). */
export function upstreamRequestHeaders(client: Headers, secret: string, keepEncoding = false): Headers {
  const headers = new Headers(client);
  const acceptEncoding = keepEncoding ? client.get("accept-encoding") : null;
  for (const name of notForwarded) headers.delete(name);
  // An answer relayed encoded (encoded-answers.ts) is encoded as the client accepts, or not at all:
  // without a header of ours, fetch would ask for gzip on the client's behalf.
  if (keepEncoding) headers.set("accept-encoding", acceptEncoding ?? "identity");
  const connection = client.get("connection");
  if (connection !== null) dropConnectionOptions(headers, connection);
  headers.set("authorization", `Bearer ${secret}`);
  return headers;
}

/** A field name (RFC 9110 §5.1 token): anything else cannot be a header, and `delete` would throw. */
const headerName = /^[!#$%&'*+.^_`|~0-9a-z-]+$/;

/**
 * RFC 9110 §7.6.1: the headers a `Connection` header names are for this hop only. Clients
 * send `keep-alive` or `close`, both already dropped, so only another list costs a split.
 */
function dropConnectionOptions(headers: Headers, connection: string): void {
  const lower = connection.toLowerCase();
  if (lower === "keep-alive" || lower === "close") return;
  for (const name of lower.split(",")) {
    const trimmed = name.trim();
    if (trimmed === "" || trimmed === "keep-alive" || trimmed === "close" || !headerName.test(trimmed)) continue;
    headers.delete(trimmed);
  }
}

/**
 * The upstream's response headers made fit for the client. Changes them in place: the upstream
 * Response is ours alone and dropped right after, and a copy per request is measurable at load.
 */
export function clientResponseHeaders(upstream: Headers, extra: Record<string, string>, encoded = false): Headers {
  for (const name of hopByHop) upstream.delete(name);
  // `fetch` has already decoded a compressed body, so the encoding and its length no longer
  // describe the bytes we send on (the same reason hono's proxy helper drops them); `encoded`:
  // the body is relayed as the upstream encoded it, and they still do.
  if (!encoded && upstream.has("content-encoding")) {
    upstream.delete("content-encoding");
    upstream.delete("content-length");
  }
  for (const name in extra) upstream.set(name, extra[name] as string);
  return upstream;
}
