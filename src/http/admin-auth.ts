/** The admin token check shared by every admin route and /metrics. */
import type { MiddlewareHandler } from "hono";
import type { AppEnv } from "./app-env.ts";
import { ProxyError } from "../domain/errors.ts";
import { carriesOneOf } from "./bearer.ts";

/** Unset token: the route answers 404 saying how to turn it on. */
export function requireAdminToken(adminToken: string | undefined): MiddlewareHandler<AppEnv> {
  return async function adminAuth(c, next) {
    if (!adminToken) {
      throw new ProxyError(404, "the admin API is off: set ADMIN_TOKEN to enable it, then send Authorization: Bearer <ADMIN_TOKEN>", {
        type: "not_found_error",
        code: "admin_disabled",
      });
    }
    if (!carriesOneOf(c.req.raw.headers, [adminToken])) {
      throw new ProxyError(401, "the admin API needs Authorization: Bearer <ADMIN_TOKEN>", {
        type: "authentication_error",
        code: "invalid_admin_token",
      });
    }
    await next();
  };
}
