/**
 * Who may spend the keys: with PROXY_API_KEYS set, `/v1` and `/api/v1` need one of them as the
 * bearer (or `x-api-key`); without it any bearer is accepted, and `serve` refuses a non-loopback
 * HOST unless ALLOW_OPEN_PROXY=true (see isLoopbackHost).
 */
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "../app.ts";
import { ProxyError } from "../errors.ts";
import { carriesOneOf } from "./bearer.ts";

export function requireClientKey(accepted: readonly string[]): MiddlewareHandler<AppEnv> {
  return async function clientAuth(c, next) {
    if (!carriesOneOf(c.req.raw.headers, accepted)) {
      throw new ProxyError(401, "this proxy needs an API key: send Authorization: Bearer <one of PROXY_API_KEYS>", {
        type: "authentication_error",
        code: "invalid_api_key",
      });
    }
    await next();
  };
}

/** 127.0.0.0/8, ::1 and localhost: only this machine can reach them. */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "").toLowerCase();
  return bare === "localhost" || bare === "::1" || /^127(\.\d{1,3}){3}$/.test(bare) || bare === "::ffff:127.0.0.1";
}
