/**
 * The HTTP application: middleware order, routes, and the one place errors are rendered.
 * Built from its dependencies; importing this module starts nothing.
 */
import { Hono } from "hono";
import { ProxyError, renderError } from "./errors.ts";
import type { KeyPool } from "./keys/key-pool.ts";
import type { KeyStore } from "./keys/key-store.ts";
import { adminRoutes } from "./routes/admin.ts";
import { requireClientKey } from "./routes/client-auth.ts";
import { healthHandler, readinessHandler } from "./routes/health.ts";
import { proxyHandler } from "./routes/proxy.ts";
import type { ProxyRequest } from "./upstream/forward.ts";
import type { KeyCheck } from "./upstream/key-info.ts";

export type AppEnv = { Variables: { requestId: string } };

export interface AppDeps {
  forward: (request: ProxyRequest) => Promise<Response>;
  pool: KeyPool;
  store: KeyStore;
  checkKey: (secret: string) => Promise<KeyCheck>;
  /** Unset: the admin API answers 404 saying how to turn it on. */
  adminToken?: string | undefined;
  /** Set: clients must send one of these as their bearer. */
  proxyApiKeys?: readonly string[] | undefined;
  now?: () => number;
  /** Errors that are the proxy's own fault go here (stderr by default) before a 500 is sent. */
  reportInternalError?: (error: unknown, requestId: string) => void;
}

const clientRequestId = /^[A-Za-z0-9._:-]{1,128}$/;

export function createApp({ forward, pool, store, checkKey, adminToken, proxyApiKeys, now = Date.now, reportInternalError = defaultReport }: AppDeps): Hono<AppEnv> {
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
  app.get("/readyz", readinessHandler(pool, now));
  app.route("/admin", adminRoutes({ adminToken, pool, store, checkKey, now }));

  const proxy = proxyHandler(forward);
  if (proxyApiKeys && proxyApiKeys.length > 0) {
    const clientAuth = requireClientKey(proxyApiKeys);
    app.use("/v1/*", clientAuth);
    app.use("/api/v1/*", clientAuth);
  }
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
