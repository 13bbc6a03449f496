/**
 * `/v1/*` and `/api/v1/*`: every path below the API root is forwarded as it came (method, query,
 * body bytes), so any OpenAI-compatible client works with either URL shape.
 */
import type { Context } from "hono";
import type { ProxyRequest } from "../upstream/forward.ts";
import type { AppEnv } from "../app.ts";

const methodsWithoutBody = new Set(["GET", "HEAD"]);

export function proxyHandler(forward: (request: ProxyRequest) => Promise<Response>) {
  return async function proxy(c: Context<AppEnv>): Promise<Response> {
    const raw = c.req.raw;
    const url = raw.url;
    const queryAt = url.indexOf("?");
    const path = c.req.path;
    // `/v1/chat/completions` and `/api/v1/chat/completions` → `/chat/completions`
    const rest = path.slice(path.indexOf("/v1") + 3);
    return forward({
      requestId: c.get("requestId"),
      method: raw.method,
      path: rest,
      search: queryAt === -1 ? "" : url.slice(queryAt),
      headers: raw.headers,
      // The body is read once, as bytes, and sent upstream untouched on every attempt.
      body: methodsWithoutBody.has(raw.method) ? undefined : await raw.arrayBuffer(),
      signal: raw.signal,
    });
  };
}
