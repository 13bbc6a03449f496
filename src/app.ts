/**
 * The HTTP application: middleware order, routes, and the one place errors are rendered.
 * Built from its dependencies; importing this module starts nothing.
 */
import { Hono } from "hono";
import { ProxyError, renderError } from "./errors.ts";
import { healthHandler } from "./routes/health.ts";
import { proxyHandler } from "./routes/proxy.ts";
import type { ProxyRequest } from "./upstream/forward.ts";

export type AppEnv = { Variables: { requestId: string } };

export interface AppDeps {
  forward: (request: ProxyRequest) => Promise<Response>;
  /** Errors that are the proxy's own fault go here (stderr by default) before a 500 is sent. */
  reportInternalError?: (error: unknown, requestId: string) => void;
}

const clientRequestId = /^[A-Za-z0-9._:-]{1,128}$/;

export function createApp({ forward, reportInternalError = defaultReport }: AppDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.use(async function requestId(c, next) {
    // Keep a caller's id when it is safe to echo; otherwise make one.
    const given = c.req.header("x-request-id");
    const id = given && clientRequestId.test(given) ? given : crypto.randomUUID();
    c.set("requestId", id);
    await next();
    c.res.headers.set("x-request-id", id);
  });

  app.get("/healthz", healthHandler());

  const proxy = proxyHandler(forward);
  app.all("/v1/*", proxy);
  app.all("/api/v1/*", proxy);

  app.notFound((c) =>
    renderError(
      new ProxyError(404, `no route for ${c.req.method} ${c.req.path}: the API is under /v1/ (or /api/v1/)`, {
        type: "not_found_error",
        code: "route_not_found",
      }),
    ),
  );

  app.onError((error, c) => {
    if (!(error instanceof ProxyError)) reportInternalError(error, c.get("requestId") ?? "-");
    return renderError(error);
  });

  return app;
}

function defaultReport(error: unknown, requestId: string): void {
  console.error(`[${requestId}] internal error:`, error);
}
