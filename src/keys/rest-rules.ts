/**
 * Pure rules about rests: which rests a person's `enable-key` may clear, when a key's own spending
 * cap resets, how a rest is named. Which requests a rest keeps off a key is key-status.ts's to say.
 */
import { type AccountRest } from "./account-state.ts";
import { nextUtcMidnight } from "../domain/time-text.ts";

/**
 * A known daily limit (the account's free-models-per-day, or a key cap that resets daily) is
 * OpenRouter's count, and it holds until its reset whatever a person says; every other rest is
 * the proxy's judgement, which a person may overrule (they added credits, changed a setting).
 */
export function clearableByPerson(rest: AccountRest): boolean {
  if (rest.cause === "free-per-day") return false;
  if (rest.cause === undefined && /free-models-per-day/i.test(rest.reason)) return false;
  if (rest.cause === "key-limit" && rest.source === "limit_reset:daily") return false;
  return true;
}

/** Which rests end when a person enables a key (`person`), and when GET /key shows credits again (`credits`). */
export const endedBy: Readonly<Record<"person" | "credits", (rest: AccountRest) => boolean>> = {
  person: clearableByPerson,
  credits: (rest) => rest.cause === "credits" || rest.cause === "negative-balance",
};

const DAY = 86_400_000;
/** Without a known `limit_reset`, a key that hit its cap rests this long, then is tried again. */
export const UNKNOWN_KEY_LIMIT_REST_MS = 3_600_000;

/**
 * The next reset of a key's spending cap, from `GET /key` `limit_reset`: daily resets at 00:00
 * UTC, weekly at Monday 00:00 UTC, monthly on the 1st at 00:00 UTC (docs/openrouter.md, "Endpoints");
 * anything else is unknown: an hour.
 */
export function nextLimitReset(limitReset: string | null | undefined, now: number): { until: number; source: string } {
  switch (limitReset) {
    case "daily":
      return { until: nextUtcMidnight(now), source: "limit_reset:daily" };
    case "weekly": {
      const day = Math.floor(now / DAY);
      // 1970-01-01 was a Thursday: (day + 3) % 7 is 0 on Mondays.
      const daysToMonday = 7 - ((day + 3) % 7);
      return { until: (day + daysToMonday) * DAY, source: "limit_reset:weekly" };
    }
    case "monthly": {
      const date = new Date(now);
      return { until: Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1), source: "limit_reset:monthly" };
    }
    default:
      return { until: now + UNKNOWN_KEY_LIMIT_REST_MS, source: "default" };
  }
}

/** "account-wide paid models", "key k_1 (paid models)", "model x/y": what a rest covers, for people. */
export function restTarget(rest: Pick<AccountRest, "scope" | "modelClass" | "model" | "keyId">): string {
  const models = rest.modelClass === "all" ? "all models" : `${rest.modelClass} models`;
  if (rest.scope === "model") return `model ${rest.model ?? "?"}`;
  if (rest.scope === "key") return `key ${rest.keyId ?? "?"} (${models})`;
  return models;
}
