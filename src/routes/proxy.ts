/**
 * `/v1/*` and `/api/v1/*`: every path below the API root is forwarded as it came (method, query,
 * body bytes), so any OpenAI-compatible client works with either URL shape.
 *
 * This is the hot path, so it is a plain function that the server calls directly rather than a
 * Hono route: routing, context and middleware objects cost more per request than everything the
 * proxy itself does (measured with bench/; see the README's Performance section).
 */
import { ProxyError, renderError } from "../errors.ts";
import type { ProxyRequest } from "../upstream/forward.ts";
import { carriesOneOf } from "./bearer.ts";
import { requestIdFor } from "./request-id.ts";

const methodsWithoutBody = new Set(["GET", "HEAD"]);

export interface ProxyHandlerOptions {
  forward: (request: ProxyRequest) => Promise<Response>;
  /** Set: clients must send one of these as their bearer. */
  proxyApiKeys?: readonly string[] | undefined;
  reportInternalError?: (error: unknown, requestId: string) => void;
  /** The client's address, when the server can tell. */
  clientAddress?: (request: Request) => string | undefined;
}

/** True for paths this handler serves. */
export function isProxyPath(path: string): boolean {
  return path.startsWith("/v1/") || path.startsWith("/api/v1/");
}

export function createProxyHandler({ forward, proxyApiKeys, reportInternalError, clientAddress }: ProxyHandlerOptions) {
  const requireKey = proxyApiKeys !== undefined && proxyApiKeys.length > 0;

  return async function proxy(raw: Request, path: string): Promise<Response> {
    const receivedAt = performance.now();
    const requestId = requestIdFor(raw.headers);
    let response: Response;
    try {
      if (requireKey && !carriesOneOf(raw.headers, proxyApiKeys)) {
        throw new ProxyError(401, "this proxy needs an API key: send Authorization: Bearer <one of PROXY_API_KEYS>", {
          type: "authentication_error",
          code: "invalid_api_key",
        });
      }
      const url = raw.url;
      const queryAt = url.indexOf("?");
      // The body is read once, as bytes, and sent upstream untouched on every attempt.
      const body = methodsWithoutBody.has(raw.method) ? undefined : await raw.arrayBuffer();
      const peeked = body ? peekRouting(body) : {};
      const address = clientAddress?.(raw);
      response = await forward({
        requestId,
        method: raw.method,
        // `/v1/chat/completions` and `/api/v1/chat/completions` → `/chat/completions`
        path: path.slice(path.indexOf("/v1/") + 3),
        search: queryAt === -1 ? "" : url.slice(queryAt),
        headers: raw.headers,
        body,
        signal: raw.signal,
        receivedAt,
        ...peeked,
        ...(address === undefined ? {} : { clientAddress: address }),
      });
    } catch (error) {
      if (!(error instanceof ProxyError)) reportInternalError?.(error, requestId);
      response = renderError(error);
    }
    response.headers.set("x-request-id", requestId);
    return response;
  };
}

const decoder = new TextDecoder();

/**
 * `model` and `stream` from a JSON body, for key choice and logs, without parsing the whole body
 * (a long conversation can be megabytes). Quotes inside JSON strings are escaped, so `"model":"…"`
 * can only be a key; the first one is taken, which is the top-level one unless an object before
 * it has a `model` key of its own.
 */
export function peekRouting(body: ArrayBuffer): { model?: string; stream?: boolean } {
  if (body.byteLength === 0) return {};
  const text = decoder.decode(body);
  const model = /"model"\s*:\s*"((?:[^"\\]|\\.)*)"/.exec(text)?.[1];
  const stream = /"stream"\s*:\s*true\b/.test(text);
  return { ...(model === undefined ? {} : { model }), ...(stream ? { stream } : {}) };
}
