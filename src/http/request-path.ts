/**
 * The path a request asks for, read from its URL whatever form Bun hands over. With a valid
 * `Host`, Bun gives an absolute URL already normalised (dot segments resolved, `\` read as `/`).
 * Without one (HTTP/1.0 with no `Host`) or with one it cannot parse (`Host: a@b`), it gives the
 * request-target as it came: `/admin/v1/key`, raw. Routing must not tell those two apart, or a
 * path such as `/admin/v1/key` would be read from its first `/v1/`.
 */

/** True for the API roots the proxy forwards (proxy.ts): OpenAI's `/v1/` and OpenRouter's `/api/v1/`. */
export function isProxyPath(path: string): boolean {
  return path.startsWith("/v1/") || path.startsWith("/api/v1/");
}

const BASE_FOR_RELATIVE = "http://localhost";

/** True when Bun gave the URL relative (`/path?query`): see absoluteUrl. */
export function isRelativeUrl(url: string): boolean {
  return url.charCodeAt(0) === 47 /* "/" */;
}

/** The path, without the query. */
export function requestPath(url: string): string {
  if (isRelativeUrl(url)) return new URL(url, BASE_FOR_RELATIVE).pathname;
  // "http://host/path?query": the path starts at the first "/" after "://".
  const start = url.indexOf("/", url.indexOf("://") + 3);
  if (start === -1) return "/";
  const queryAt = url.indexOf("?", start);
  return queryAt === -1 ? url.slice(start) : url.slice(start, queryAt);
}

/**
 * A relative URL made absolute and normalised the way Bun (and the upstream fetch) would, so that
 * `/v1/x/../../key` means `/key` here as it would there; for Hono, which needs an absolute URL.
 */
export function absoluteUrl(url: string): string {
  return new URL(url, BASE_FOR_RELATIVE).href;
}
