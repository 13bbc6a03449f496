/**
 * `/v1/*` and `/api/v1/*`: every path below the API root is forwarded as it came (method, query,
 * body bytes), so any OpenAI-compatible client works with either URL shape.
 *
 * This is the hot path, so it is a plain function that the server calls directly rather than a
 * Hono route: routing, context and middleware objects cost more per request than everything the
 * proxy itself does (measured with bench/; see the README's Performance section).
 */
import { unknownClientKey, type ClientGate } from "../clients/client-gate.ts";
import { ProxyError, renderError } from "../domain/errors.ts";
import type { ProxyRequest } from "../upstream/forward.ts";
import { carriesOneOf, presentedKeys } from "./bearer.ts";
import { isPrivateEndpoint, PRIVATE_ENDPOINTS } from "./private-endpoints.ts";
import { readCheckedBody, type BodyLimits } from "./request-body.ts";
import { requestIdFor } from "./request-id.ts";

export interface ProxyHandlerOptions {
  forward: (request: ProxyRequest) => Promise<Response>;
  limits: BodyLimits;
  /** True once the server is shutting down: new requests are turned away. */
  isStopping?: () => boolean;
  /** Set: clients must send one of these as their bearer. */
  proxyApiKeys?: readonly string[] | undefined;
  /** Client keys (clients/client-gate.ts): once any exists, callers need one. */
  clients?: ClientGate | undefined;
  reportInternalError?: (error: unknown, requestId: string) => void;
  /** The client's address, when the server can tell. */
  clientAddress?: (request: Request) => string | undefined;
}

/**
 * Methods never forwarded. TRACE asks the server to echo the request back, and the request the
 * upstream gets carries a pool key: RFC 9110 §9.3.8 says a client must not send credentials in
 * one. Before this, Bun's fetch dropped the echo's body and the empty 200 was retried on every
 * key into a 502, a server error for the client's own request.
 */
const refusedMethods = new Set(["TRACE"]);

export function createProxyHandler({ forward, limits, isStopping = () => false, proxyApiKeys, clients, reportInternalError = () => {}, clientAddress = () => undefined }: ProxyHandlerOptions) {
  const requireKey = proxyApiKeys !== undefined && proxyApiKeys.length > 0;

  return async function proxy(raw: Request, path: string): Promise<Response> {
    const receivedAt = performance.now();
    const requestId = requestIdFor(raw.headers);
    let response: Response;
    try {
      if (isStopping()) {
        // A kept-alive connection asking after shutdown began: no new work, and close it.
        throw new ProxyError(503, "the proxy is shutting down: retry in a moment", {
          type: "service_unavailable",
          code: "shutting_down",
          headers: { connection: "close", "retry-after": "1" },
        });
      }
      if (refusedMethods.has(raw.method)) {
        throw new ProxyError(405, `${raw.method} is not forwarded: it would echo the request, key included; the API takes GET, POST and DELETE`, {
          type: "invalid_request_error",
          code: "method_not_allowed",
          headers: { allow: "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS" },
        });
      }
      // `/v1/chat/completions` and `/api/v1/chat/completions` → `/chat/completions`
      const apiPath = path.slice(path.indexOf("/v1/") + 3);
      if (isPrivateEndpoint(apiPath)) {
        throw new ProxyError(403, `${path.slice(0, 200)} is an account or management endpoint: the proxy never calls it with a pool key (private: ${PRIVATE_ENDPOINTS.join(", ")} and below)`, {
          type: "invalid_request_error",
          code: "endpoint_not_allowed",
        });
      }
      // With client keys in use, a client's key or (unlimited) a PROXY_API_KEYS entry; else as before.
      const caller = clients?.inUse() ? clients.identify(presentedKeys(raw.headers)) : "off";
      if (caller === "unknown" && !(requireKey && carriesOneOf(raw.headers, proxyApiKeys))) throw unknownClientKey();
      if (caller === "off" && requireKey && !carriesOneOf(raw.headers, proxyApiKeys)) {
        throw new ProxyError(401, "this proxy needs an API key: send Authorization: Bearer <one of PROXY_API_KEYS> (or x-api-key: <it>)", {
          type: "authentication_error",
          code: "invalid_api_key",
        });
      }
      const url = raw.url;
      const queryAt = url.indexOf("?");
      // The one object the run gets; the body's fields are read into it next.
      const request: ProxyRequest = {
        requestId,
        method: raw.method,
        path: apiPath,
        search: queryAt === -1 ? "" : url.slice(queryAt),
        headers: raw.headers,
        body: undefined,
        signal: raw.signal,
        model: undefined,
        models: undefined,
        session: undefined,
        stream: false,
        maxTokens: undefined,
        clientAddress: clientAddress(raw),
        client: undefined,
        receivedAt,
        onDone: undefined,
      };
      // The body is read once, as bytes, checked, and sent upstream untouched on every attempt.
      await readCheckedBody(raw, limits, request);
      // Models and limits are checked before anything goes upstream; the reservation is settled by the record.
      if (typeof caller === "object" && clients) {
        const admitted = clients.admit(caller, request);
        const admission = admitted instanceof Promise ? await admitted : admitted;
        request.client = admission.name;
        request.onDone = admission.done;
      }
      response = await forward(request);
    } catch (error) {
      if (!(error instanceof ProxyError)) reportInternalError(error, requestId);
      response = renderError(error, path);
    }
    response.headers.set("x-request-id", requestId);
    return response;
  };
}
