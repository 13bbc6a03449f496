/**
 * The path a request asks for, read from its URL whatever form Bun hands over. With a valid
 * `Host`, Bun gives an absolute URL already normalised (dot segments resolved, `\` read as `/`).
 * Without one (HTTP/1.0 with no `Host`) or with one it cannot parse (`Host: a@b`), it gives the
 * request-target as it came: `/admin/v1/key`, raw. Routing must not tell those two apart, or a
 * path such as `/admin/v1/key` would be read from its first `/v1/`.
 */

const BASE_FOR_RELATIVE = "http://localhost";

export interface RequestTarget {
  /** The path, without the query. */
  path: string;
  /** The URL normalised and made absolute when Bun gave it relative (for Hono); else undefined. */
  absoluteUrl?: string;
}

export function requestTarget(url: string): RequestTarget {
  if (url.charCodeAt(0) !== 47 /* "/" */) {
    // "http://host/path?query": the path starts at the first "/" after "://".
    const start = url.indexOf("/", url.indexOf("://") + 3);
    if (start === -1) return { path: "/" };
    const queryAt = url.indexOf("?", start);
    return { path: queryAt === -1 ? url.slice(start) : url.slice(start, queryAt) };
  }
  // The rare relative form: normalised the way Bun (and the upstream fetch) would, so that
  // `/v1/x/../../key` means `/key` here as it would there.
  const parsed = new URL(url, BASE_FOR_RELATIVE);
  return { path: parsed.pathname, absoluteUrl: parsed.href };
}
