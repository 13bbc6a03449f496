/**
 * What the proxy has been doing: `/admin/usage` (totals since a time), `/admin/requests` (the last
 * ones), `/admin/` (the status page, one HTML file from the binary itself) and `/metrics`.
 */
import { Hono, type Context } from "hono";
import type { AppEnv } from "./app-env.ts";
import { ProxyError } from "../domain/errors.ts";
import type { Metrics } from "../observe/metrics.ts";
import { parseSince, type UsageLedger } from "../observe/usage-ledger.ts";
import { requireAdminToken } from "./admin-auth.ts";
import { statusPageHtml } from "./status-page.ts";

export interface StatusDeps {
  ledger: UsageLedger;
  adminToken: string | undefined;
  now?: () => number;
}

/** Mounted under /admin, behind the admin token. */
export function statusRoutes({ ledger, adminToken, now = Date.now }: StatusDeps): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  routes.use(requireAdminToken(adminToken));

  routes.get("/usage", (c) => {
    const raw = c.req.query("since");
    const since = parseSince(raw, now());
    if (since === undefined) {
      throw new ProxyError(400, `since: ${JSON.stringify(raw)} is not a time; use an ISO date (2026-11-25 or 2026-11-25T10:00:00Z) or epoch milliseconds`, {
        type: "invalid_request_error",
        code: "invalid_since",
      });
    }
    const report = ledger.report(since, now());
    // `?by=client` (or model, key): that breakdown alone, with the totals.
    const by = c.req.query("by");
    if (by === undefined || by === "") return c.json(report);
    const breakdowns = { client: report.byClient, model: report.byModel, key: report.byKey } as const;
    if (!(by in breakdowns)) {
      throw new ProxyError(400, `by: ${JSON.stringify(by.slice(0, 40))} is not a breakdown; use client, model or key`, { type: "invalid_request_error", code: "invalid_by" });
    }
    return c.json({ since: report.since, until: report.until, totals: report.totals, by, [by]: breakdowns[by as keyof typeof breakdowns] });
  });

  routes.get("/requests", (c) => {
    const limit = Math.min(100, Math.max(1, Number(c.req.query("limit") ?? "50") || 50));
    return c.json({ requests: ledger.recent(limit) });
  });

  return routes;
}

/**
 * The status page itself holds no data, so a browser may load it without the token (it cannot
 * send an Authorization header on navigation); its script asks for the token once.
 */
export function statusPage(adminToken: string | undefined) {
  const off = requireAdminToken(undefined);
  return async function page(c: Context<AppEnv>): Promise<Response> {
    if (!adminToken) {
      await off(c, async () => {});
    }
    return c.html(statusPageHtml);
  };
}

export function metricsHandler(metrics: Metrics) {
  return function metricsText(): Response {
    return new Response(metrics.render(), { headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" } });
  };
}
