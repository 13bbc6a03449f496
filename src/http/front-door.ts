/**
 * The front door: who may knock before any route runs. Web pages the user happens to visit must
 * not be able to spend the pool, so:
 *
 * - A request with an `Origin` header comes from a browser. It is refused (403
 *   `origin_not_allowed`) unless its origin is in CORS_ORIGINS; an allowed one gets CORS headers.
 *   A page can send a "simple" POST (`fetch` with `mode: "no-cors"`, a form, `sendBeacon`) without
 *   any preflight, and it would be served even though the page never reads the answer.
 * - `OPTIONS` on the API is answered here (204), never forwarded with a pool key.
 * - While the proxy is open (no PROXY_API_KEYS), the `Host` must be a loopback name, HOST or one of
 *   ALLOWED_HOSTS (else 421 `host_not_allowed`): DNS rebinding makes a page's own name point at
 *   127.0.0.1, and then the browser's same-origin rules no longer keep it out.
 *
 * - While open, a request a browser marks as coming from another site (`Sec-Fetch-Site:
 *   cross-site` or `same-site`) is refused even without an `Origin`: a no-cors GET carries none.
 *
 * Per request this costs one header lookup when there is no `Origin`, and, while open, two more
 * and one string compare with the last allowed `Host` value.
 */
import { ProxyError, renderError } from "../domain/errors.ts";
import { isLoopbackHost } from "./loopback.ts";
import { requestIdFor } from "./request-id.ts";
import { isProxyPath } from "./request-path.ts";

export interface FrontDoorOptions {
  /** Exact origins (as browsers send them), or `["*"]`; empty: no page may call. */
  corsOrigins?: readonly string[] | undefined;
  /** Extra `Host` names answered while open (a gateway's or a reverse proxy's name). */
  allowedHosts?: readonly string[] | undefined;
  /** HOST, the address the server listens on. */
  listenHost: string;
  /** True while clients need no key: then the `Host` is checked. A function when that can change (client keys). */
  open: boolean | (() => boolean);
}

export interface FrontDoor {
  /** A refusal (in the dialect of `path`) or a preflight answer, or undefined when the request may go on to its route. */
  check(request: Request, origin: string | null, path: string): Response | undefined;
  /** Adds the CORS headers for `origin` (already allowed by `check`) to an answer. */
  withCors(response: Response, origin: string): Response;
}

/** The methods the API takes (as the 405 for TRACE says). */
const API_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";
/** Headers a page's script may read from an answer, besides the CORS-safelisted ones. */
const EXPOSED_HEADERS = "x-request-id, server-timing, retry-after, x-ratelimit-limit, x-ratelimit-remaining, x-ratelimit-reset";
/** What a preflight may ask for: a list of header names, echoed back when it is one. */
const headerNameList = /^[!#$%&'*+.^_`|~0-9a-z-]+(?:\s*,\s*[!#$%&'*+.^_`|~0-9a-z-]+)*$/i;
const PREFLIGHT_MAX_AGE_SECONDS = "600";

export function createFrontDoor({ corsOrigins = [], allowedHosts = [], listenHost, open }: FrontDoorOptions): FrontDoor {
  const anyOrigin = corsOrigins.includes("*");
  const origins = new Set(corsOrigins);
  const hostNames = new Set([...allowedHosts, listenHost].map(bareName));
  /** The last `Host` value let in: nearly every request repeats it. */
  let lastAllowedHost = "";

  function hostAllowed(host: string | null): boolean {
    // No Host at all (HTTP/1.0): not a browser, which always sends one.
    if (host === null || host === "" || host === lastAllowedHost) return true;
    const name = hostNameOf(host);
    const allowed = name !== undefined && (isLoopbackHost(name) || hostNames.has(bareName(name)));
    if (allowed) lastAllowedHost = host;
    return allowed;
  }

  return {
    check(request, origin, path) {
      const isOpen = open === true || (open !== false && open());
      if (isOpen && !hostAllowed(request.headers.get("host"))) {
        const host = String(request.headers.get("host")).slice(0, 200);
        return refusal(request, path, new ProxyError(421, `this proxy does not answer to Host ${JSON.stringify(host)}: while it has no PROXY_API_KEYS it answers only to loopback names (localhost, 127.0.0.1, [::1]), HOST and the names in ALLOWED_HOSTS; add the name to ALLOWED_HOSTS if it is yours`, { type: "invalid_request_error", code: "host_not_allowed" }));
      }
      if (origin !== null && !anyOrigin && !origins.has(origin)) {
        return refusal(request, path, new ProxyError(403, `requests from web pages are refused: the origin ${JSON.stringify(origin.slice(0, 200))} is not in CORS_ORIGINS; set CORS_ORIGINS to that origin to let its pages use the proxy`, { type: "invalid_request_error", code: "origin_not_allowed" }));
      }
      // A page's no-cors GET (`fetch` with mode "no-cors", an <img> or <script> tag) carries no
      // Origin, but browsers mark it with Sec-Fetch-Site. While open nothing else stops it (with
      // PROXY_API_KEYS it cannot carry a key), so it is refused too. A link the user follows (a
      // navigation: a GET, which shows them a page, and spends nothing) is let through.
      if (isOpen && origin === null) {
        const site = request.headers.get("sec-fetch-site");
        if ((site === "cross-site" || site === "same-site") && request.headers.get("sec-fetch-mode") !== "navigate") {
          return refusal(request, path, new ProxyError(403, `requests from web pages are refused: this one came from another site (Sec-Fetch-Site: ${site}) without an Origin; list the page's origin in CORS_ORIGINS and call with CORS`, { type: "invalid_request_error", code: "origin_not_allowed" }));
        }
      }
      if (request.method === "OPTIONS" && isProxyPath(path)) return preflight(request, origin);
      return undefined;
    },
    withCors(response, origin) {
      const headers = response.headers;
      headers.set("access-control-allow-origin", origin);
      headers.append("vary", "Origin");
      headers.set("access-control-expose-headers", EXPOSED_HEADERS);
      return response;
    },
  };
}

/** A preflight from an allowed origin gets the allow headers; a plain OPTIONS (no Origin) the `Allow` list. */
function preflight(request: Request, origin: string | null): Response {
  const headers: Record<string, string> = { allow: API_METHODS, "x-request-id": requestIdFor(request.headers) };
  if (origin !== null) {
    const asked = request.headers.get("access-control-request-headers");
    headers["access-control-allow-origin"] = origin;
    headers["access-control-allow-methods"] = API_METHODS;
    headers["access-control-allow-headers"] = asked !== null && headerNameList.test(asked) ? asked : "authorization, content-type";
    headers["access-control-max-age"] = PREFLIGHT_MAX_AGE_SECONDS;
    headers.vary = "Origin, Access-Control-Request-Headers";
  }
  return new Response(null, { status: 204, headers });
}

function refusal(request: Request, path: string, error: ProxyError): Response {
  return renderError(error, path, { "x-request-id": requestIdFor(request.headers) });
}

/** The name in a Host header (`name`, `name:port`, `[v6]:port`), or undefined when it is not one. */
function hostNameOf(host: string): string | undefined {
  if (host.startsWith("[")) {
    const close = host.indexOf("]");
    if (close === -1 || !portOrNothing(host, close + 1)) return undefined;
    return host.slice(0, close + 1);
  }
  const colon = host.indexOf(":");
  if (colon === -1) return host;
  return portOrNothing(host, colon) ? host.slice(0, colon) : undefined;
}

/** True when `host` from `at` is empty or `:` and digits. */
function portOrNothing(host: string, at: number): boolean {
  return at === host.length || /^:\d{1,5}$/.test(host.slice(at));
}

/** Lower-cased, without brackets or a trailing dot: `[::1]` and `::1`, `Proxy.Internal.` and `proxy.internal` alike. */
function bareName(name: string): string {
  return name.replace(/^\[|\]$/g, "").replace(/\.$/, "").toLowerCase();
}
