/** `GET /healthz`: 200 while the process serves. */
import type { Context } from "hono";

export function healthHandler() {
  return function health(c: Context): Response {
    return c.json({ status: "ok" });
  };
}
