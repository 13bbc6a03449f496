/**
 * `GET /healthz`: 200 while the process serves. `GET /readyz`: 200 when a key can serve some
 * request now (its status, keys/key-status.ts, is `active` or `limited`: the same answer acquire obeys).
 */
import type { Context } from "hono";
import type { Availability, KeyPool } from "../keys/key-pool.ts";

export function healthHandler() {
  return function health(c: Context): Response {
    return c.json({ status: "ok" });
  };
}

/** `sharedState` (REDIS_URL): while Redis is unreachable the proxy still serves, from memory, and says `degraded`. */
export function readinessHandler(pool: KeyPool, sharedState?: () => "connected" | "degraded") {
  return function ready(c: Context): Response {
    const availability = pool.availability();
    const shared = sharedState?.();
    if (availability.available > 0) return c.json({ status: shared === "degraded" ? "degraded" : "ready", ...(shared ? { redis: shared } : {}), ...availability });
    return c.json({ status: "unavailable", reason: unreadyReason(availability), ...(shared ? { redis: shared } : {}), ...availability }, 503);
  };
}

function unreadyReason(availability: Availability): string {
  const { total, cooling, resting, nextAvailableAt } = availability;
  if (total === 0) return "no keys configured: add one with `openrouter-proxy add-key`";
  if (cooling + resting === 0) return `all ${total} keys are disabled: re-enable one with \`openrouter-proxy enable-key <id>\``;
  if (nextAvailableAt === undefined) return "every key's account waits for credits: add credits at OpenRouter, or clear the rest with `openrouter-proxy enable-key <id>`";
  const returns = `the first returns at ${new Date(nextAvailableAt).toISOString()}`;
  if (resting === 0) return `all available keys are cooling down; ${returns}`;
  return `no key can serve now (${cooling} cooling down, ${resting} resting on their account's limits); ${returns}`;
}
