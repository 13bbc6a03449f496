/** The proxy's own answers when no key can take a request: each says why and what to do. */
import { ProxyError } from "../domain/errors.ts";
import type { AcquireResult } from "../keys/key-pool.ts";

export function noKeyError(acquired: Exclude<AcquireResult, { ok: true }>, now: number, lastRateLimitMessage?: string): ProxyError {
  const lastSaid = lastRateLimitMessage ? ` The upstream last said: ${lastRateLimitMessage}` : "";
  switch (acquired.reason) {
    case "no-keys":
      return new ProxyError(503, "no OpenRouter keys are configured: add one with `openrouter-proxy add-key` or to the keys file", {
        type: "service_unavailable",
        code: "no_keys_configured",
      });
    case "all-tried":
      return new ProxyError(503, "every available key was tried for this request and failed", {
        type: "service_unavailable",
        code: "all_keys_failed",
      });
    case "all-disabled":
      return new ProxyError(
        503,
        `all ${acquired.total} keys are disabled after repeated failures: re-enable one with \`openrouter-proxy enable-key <id>\` (or add it again)`,
        { type: "service_unavailable", code: "all_keys_disabled" },
      );
    case "free-budget-exhausted": {
      const seconds = Math.max(1, Math.ceil((acquired.resetAt - now) / 1000));
      const hours = Math.floor(seconds / 3600);
      const minutes = Math.ceil((seconds % 3600) / 60);
      return new ProxyError(
        429,
        `the daily free-model limit is used up on all ${acquired.accounts} account${acquired.accounts === 1 ? "" : "s"}: it resets at ${new Date(acquired.resetAt).toISOString()} (in ${hours} h ${minutes} min); paid models still work`,
        { type: "rate_limit_error", code: "free_model_limit_used_up", headers: { "retry-after": String(seconds) } },
      );
    }
    case "out-of-credits":
      // No Retry-After: nothing says when credits come back (a person adds them; GET /key shows it).
      return new ProxyError(
        402,
        `every account that could serve this request is out of credits (${acquired.accounts} account${acquired.accounts === 1 ? "" : "s"}): add credits on OpenRouter; the proxy sees them within 5 minutes, or at once after \`openrouter-proxy enable-key <id>\``,
        { type: "insufficient_quota", code: "all_accounts_out_of_credits" },
      );
    case "over-budget": {
      // A spending cap resets at a time OpenRouter names (resets_at, or the key's limit_reset): the
      // Retry-After runs to the first; a reset the proxy only guessed gets none.
      const seconds = Math.max(1, Math.ceil((acquired.resetAt - now) / 1000));
      const first = new Date(acquired.resetAt).toISOString();
      return new ProxyError(
        402,
        `every key that could serve this request is over a spending cap (${acquired.keys} key${acquired.keys === 1 ? "" : "s"}: its own limit, its workspace's budget or a guardrail's): the first resets at ${first} (in ${seconds} s)${acquired.resetKnown ? "" : ", a time the proxy chose because none was announced"}; raise the cap on OpenRouter and run \`openrouter-proxy enable-key <id>\` to use it sooner`,
        { type: "insufficient_quota", code: "all_keys_over_budget", headers: acquired.resetKnown ? { "retry-after": String(seconds) } : {} },
      );
    }
    case "all-cooling": {
      const seconds = Math.max(1, Math.ceil((acquired.nextAvailableAt - now) / 1000));
      return new ProxyError(
        429,
        `all keys are rate limited: ${acquired.cooling} of ${acquired.total} cooling down; the first returns in ${seconds} s (${new Date(acquired.nextAvailableAt).toISOString()})${acquired.resetKnown ? "" : ", a rest the proxy chose because no reset was announced"}.${lastSaid}`,
        // Retry-After only from a reset the upstream announced: an SDK sleeps on it (the openai
        // package up to any length, see README), so a guess would hold clients for nothing.
        { type: "rate_limit_error", code: "all_keys_cooling_down", headers: acquired.resetKnown ? { "retry-after": String(seconds) } : {} },
      );
    }
  }
}
