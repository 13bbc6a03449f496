/** `GET /healthz`: 200 while the process serves. `GET /readyz`: 200 when a key can serve now. */
import type { Context } from "hono";
import type { KeyPool } from "../keys/key-pool.ts";

export function healthHandler() {
  return function health(c: Context): Response {
    return c.json({ status: "ok" });
  };
}

export function readinessHandler(pool: KeyPool, now: () => number = Date.now) {
  return function ready(c: Context): Response {
    const availability = pool.availability();
    if (availability.available > 0) return c.json({ status: "ready", ...availability });
    const reason =
      availability.total === 0
        ? "no keys configured: add one with `openrouter-proxy add-key`"
        : availability.cooling > 0
          ? `all available keys are cooling down; the first returns at ${new Date(availability.nextAvailableAt ?? now()).toISOString()}`
          : `all ${availability.total} keys are disabled: re-enable one with \`openrouter-proxy enable-key <id>\``;
    return c.json({ status: "unavailable", reason, ...availability }, 503);
  };
}
