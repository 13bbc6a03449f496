/**
 * Rests: what an upstream answer rests, as changes for the pool to decide (a 429 on an account
 * limit or a provider, a 402 by cause: ../upstream/payment-causes.ts), and the pure rules about
 * them: which a person's `enable-key` may clear, when a key's own spending cap resets, how a rest
 * is named. The pool's `report` calls these; they hold no state and change nothing themselves.
 * Which requests a rest keeps off a key is key-status.ts's to say.
 */
import type { Outcome, PaymentOutcome } from "../domain/outcome.ts";
import { nextUtcMidnight } from "../domain/time-text.ts";
import { utcDayOf, type AccountRest } from "./account-state.ts";
import type { StateChange } from "./state-change.ts";
import type { KeyRecord } from "./schema.ts";

/** A rest that lasts until credits are seen again is written with this horizon (the file needs a time). */
export const UNTIL_CLEARED_HORIZON_MS = 30 * 86_400_000;
/** A free request finding only keys whose GET /key is still out is told to come back this soon. */
export const KEY_LOOKUP_WAIT_MS = 1_000;

type RateLimited = Extract<Outcome, { kind: "rate-limited" }>;

/** A 429 on the key's account (or one model on it); a free-models-per-day one also teaches the day's limit, used up. */
export function rateLimitChanges(account: string, outcome: RateLimited, at: number): StateChange[] {
  const cause = { until: outcome.until, source: outcome.source, reason: outcome.message ?? "rate limited (429)", ...(outcome.cause === undefined ? {} : { cause: outcome.cause }) };
  const changes: StateChange[] = [];
  // A model's rest needs the model: without one (a request that named none) it would keep nothing off the key.
  if (outcome.scope !== "model") changes.push({ kind: "account-rest", account, modelClass: outcome.modelClass, ...cause });
  else if (outcome.model !== undefined) changes.push({ kind: "model-rest", account, model: outcome.model, ...cause });
  if (outcome.dailyLimit !== undefined) {
    const day = utcDayOf(at);
    changes.push({ kind: "free-limit", account, day, limit: outcome.dailyLimit, learnedAt: at }, { kind: "free-used", account, day, used: outcome.dailyLimit });
  }
  return changes;
}

/** Rests what a 402 names, and only that; none when nothing rests (the request's own, or no known wait). */
export function paymentChanges(account: string, key: KeyRecord, outcome: PaymentOutcome, at: number): StateChange[] {
  const reason = outcome.message ?? `upstream answered ${outcome.status ?? 402} (${outcome.cause})`;
  switch (outcome.cause) {
    case "request-too-big":
      return [];
    case "in-flight":
      // Temporary: the account's paid models wait out the announced time, never longer.
      if (outcome.until === undefined) return [];
      return [{ kind: "account-rest", account, modelClass: "paid", until: outcome.until, source: "retry-after", reason, cause: "in-flight" }];
    case "key-limit":
    case "workspace-budget":
    case "guardrail-budget": {
      // Until the announced resets_at; a key's own cap without one resets by its GET /key limit_reset.
      // A workspace's budget holds every key of the workspace, but the proxy does not learn which
      // keys share one (GET /key does not say): the key that met it rests, and each other key of
      // the workspace rests when it meets it too (docs/openrouter.md, "402 and 403 by cause").
      const reset =
        outcome.until !== undefined
          ? { until: outcome.until, source: "resets_at" }
          : outcome.cause === "key-limit"
            ? nextLimitReset(key.keyLimit?.reset, at)
            : { until: at + UNKNOWN_KEY_LIMIT_REST_MS, source: "default" };
      return [{ kind: "account-rest", account, keyId: key.id, modelClass: "paid", until: reset.until, source: reset.source, reason, cause: outcome.cause }];
    }
    case "credits":
    case "negative-balance":
      return [
        {
          kind: "account-rest",
          account,
          modelClass: outcome.cause === "credits" ? "paid" : "all",
          until: at + UNTIL_CLEARED_HORIZON_MS,
          untilCleared: true,
          source: "until-credits",
          reason,
          cause: outcome.cause,
        },
      ];
  }
}

/** "paid models (credits): Insufficient credits…", for the enable-key output and the log. */
export function describeCleared(rest: AccountRest): string {
  return `${restTarget(rest)} (${rest.cause ?? "rate-limit"}): ${rest.reason}`;
}

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
