/**
 * The HTTP application: middleware order, routes, and the one place errors are rendered.
 * Built from its dependencies; importing this module starts nothing.
 */
import { Hono } from "hono";
import { ProxyError, renderError } from "../domain/errors.ts";
import type { KeyPool } from "../keys/key-pool.ts";
import type { KeyStore } from "../store/ports.ts";
import type { Metrics } from "../observe/metrics.ts";
import type { UsageLedger } from "../observe/usage-ledger.ts";
import { adminRoutes } from "./admin.ts";
import { adminClientRoutes } from "./admin-clients.ts";
import { requireAdminToken } from "./admin-auth.ts";
import { metricsHandler, statusPage, statusRoutes } from "./status.ts";
import { healthHandler, readinessHandler } from "./health.ts";
import { createProxyHandler } from "./proxy.ts";
import type { BodyLimits } from "./request-body.ts";
import type { AppEnv } from "./app-env.ts";
import { requestIdFor } from "./request-id.ts";
import { absoluteUrl, isProxyPath, isRelativeUrl, requestPath } from "./request-path.ts";
import { createFrontDoor } from "./front-door.ts";
import type { Clients } from "../clients/clients.ts";
import type { ProxyRequest } from "../upstream/forward.ts";
import type { KeyCheck } from "../domain/key-check.ts";

export interface AppDeps {
  forward: (request: ProxyRequest) => Promise<Response>;
  pool: KeyPool;
  store: KeyStore;
  checkKey: (secret: string) => Promise<KeyCheck>;
  ledger: UsageLedger;
  metrics: Metrics;
  bodyLimits: BodyLimits;
  isStopping?: () => boolean;
  /** Unset: the admin API answers 404 saying how to turn it on. */
  adminToken?: string | undefined;
  /** Set: clients must send one of these as their bearer. */
  proxyApiKeys?: readonly string[] | undefined;
  /** CORS_ORIGINS, ALLOWED_HOSTS and HOST, for the front door (front-door.ts). */
  corsOrigins?: readonly string[] | undefined;
  allowedHosts?: readonly string[] | undefined;
  listenHost?: string;
  /** Client keys: the gate for the API, and what the admin API changes. */
  clients?: Clients;
  /** With REDIS_URL the clients have a store of their own; by default they live in `store`. */
  clientStore?: KeyStore | undefined;
  now?: () => number;
  /** With REDIS_URL: whether Redis is reachable (/readyz says degraded while it is not). */
  sharedState?: () => "connected" | "degraded";
  /** Errors that are the proxy's own fault go here (the error log) before a 500 is sent. */
  reportInternalError: (error: unknown, requestId: string) => void;
}

/** The server's entry: the proxy paths go straight to their handler, everything else to Hono. */
export type HttpHandler = (request: Request, server?: { requestIP(request: Request): { address: string } | null }) => Response | Promise<Response>;

export function createHttpHandler(deps: AppDeps): HttpHandler {
  const app = createApp(deps);
  let server: Parameters<HttpHandler>[1];
  const proxy = createProxyHandler({
    forward: deps.forward,
    limits: deps.bodyLimits,
    isStopping: deps.isStopping,
    proxyApiKeys: deps.proxyApiKeys,
    clients: deps.clients?.gate,
    reportInternalError: deps.reportInternalError,
    clientAddress: (request) => server?.requestIP(request)?.address,
  });
  const noProxyKeys = deps.proxyApiKeys === undefined || deps.proxyApiKeys.length === 0;
  // Client keys guard the proxy as PROXY_API_KEYS do, from the moment the first one exists.
  const gate = deps.clients?.gate;
  const open = gate ? () => noProxyKeys && !gate.inUse() : noProxyKeys;
  const door = createFrontDoor({ corsOrigins: deps.corsOrigins, allowedHosts: deps.allowedHosts, listenHost: deps.listenHost ?? "127.0.0.1", open });
  return function handle(request, bunServer) {
    server ??= bunServer;
    const url = request.url;
    const path = requestPath(url);
    const isApi = isProxyPath(path);
    const origin = request.headers.get("origin");
    // The probes are left out: a load balancer asks by IP, and they tell a page nothing.
    if ((open || origin !== null || request.method === "OPTIONS") && path !== "/healthz" && path !== "/readyz") {
      const answer = door.check(request, origin, path);
      if (answer !== undefined) return answer;
    }
    // Hono reads the path from an absolute URL: give it one when Bun did not.
    const response = isApi ? proxy(request, path) : app.fetch(isRelativeUrl(url) ? new Request(absoluteUrl(url), request) : request, bunServer);
    if (origin === null) return response;
    return response instanceof Response ? door.withCors(response, origin) : response.then((answer) => door.withCors(answer, origin));
  };
}

export function createApp({ pool, store, clientStore, checkKey, ledger, metrics, adminToken, clients, now = Date.now, reportInternalError, sharedState }: AppDeps): Hono<AppEnv> {
  const app = new Hono<AppEnv>();

  app.use(async function requestId(c, next) {
    const id = requestIdFor(c.req.raw.headers);
    c.set("requestId", id);
    await next();
    c.res.headers.set("x-request-id", id);
  });

  app.get("/healthz", healthHandler());
  app.get("/readyz", readinessHandler(pool, sharedState));
  // The page first: it must load without the token, which its script then asks for.
  app.get("/admin", statusPage(adminToken));
  app.get("/admin/", statusPage(adminToken));
  app.route("/admin", adminRoutes({ adminToken, pool, store, checkKey, now }));
  if (clients) app.route("/admin", adminClientRoutes({ adminToken, clients, store: clientStore ?? store, now }));
  app.route("/admin", statusRoutes({ ledger, adminToken, now }));
  // Metrics are behind the admin token when there is one, open otherwise (a local scraper).
  if (adminToken) app.get("/metrics", requireAdminToken(adminToken), metricsHandler(metrics));
  else app.get("/metrics", metricsHandler(metrics));

  app.notFound((c) =>
    renderError(
      new ProxyError(404, `no route for ${c.req.method} ${c.req.path}: the API is under /v1/ (or /api/v1/)`, {
        type: "not_found_error",
        code: "route_not_found",
      }),
      c.req.path,
    ),
  );

  app.onError((error, c) => {
    if (!(error instanceof ProxyError)) reportInternalError(error, c.get("requestId") ?? "-");
    return renderError(error, c.req.path);
  });

  return app;
}
