/**
 * What an upstream answer rests, turned into the account book's terms: a 429 on an account
 * limit or a provider, and a 402 by cause (../upstream/payment-causes.ts). The pool calls these
 * from `report`; they hold no state of their own.
 */
import type { Outcome, PaymentOutcome } from "../domain/outcome.ts";
import type { AccountBook } from "./account-book.ts";
import type { AccountRest } from "./account-state.ts";
import { clearableByPerson, nextLimitReset, restTarget } from "./rests.ts";
import type { KeyRecord } from "./schema.ts";

/** A rest that lasts until credits are seen again is written with this horizon (the file needs a time). */
export const UNTIL_CLEARED_HORIZON_MS = 30 * 86_400_000;
/** A free request finding only keys whose GET /key is still out is told to come back this soon. */
export const KEY_LOOKUP_WAIT_MS = 1_000;

type RateLimited = Extract<Outcome, { kind: "rate-limited" }>;

export function applyRateLimit(book: AccountBook, key: KeyRecord, outcome: RateLimited, at: number): void {
  book.addRest(key, {
    scope: outcome.scope === "model" ? "model" : "account",
    modelClass: outcome.modelClass,
    ...(outcome.model === undefined ? {} : { model: outcome.model }),
    until: outcome.until,
    source: outcome.source,
    reason: outcome.message ?? "rate limited (429)",
    ...(outcome.cause === undefined ? {} : { cause: outcome.cause }),
  });
  if (outcome.dailyLimit !== undefined) {
    // The daily limit is learned and used up: no more free requests on this account today.
    const budget = book.freeBudget(key, at);
    budget.limit = outcome.dailyLimit;
    budget.used = Math.max(budget.used, outcome.dailyLimit);
  }
}

/** Rests what a 402 names, and only that; false when nothing rests (the request's own, or no known wait). */
export function applyPayment(book: AccountBook, key: KeyRecord, outcome: PaymentOutcome, at: number): boolean {
  const reason = outcome.message ?? `upstream answered 402 (${outcome.cause})`;
  switch (outcome.cause) {
    case "request-too-big":
      return false;
    case "in-flight":
      // Temporary: the account's paid models wait out the announced time, never longer.
      if (outcome.until === undefined) return false;
      book.addRest(key, { scope: "account", modelClass: "paid", until: outcome.until, source: "retry-after", reason, cause: "in-flight" });
      return true;
    case "key-limit": {
      const reset = nextLimitReset(key.keyLimit?.reset, at);
      book.addRest(key, { scope: "key", keyId: key.id, modelClass: "paid", until: reset.until, source: reset.source, reason, cause: "key-limit" });
      return true;
    }
    case "credits":
    case "negative-balance":
      book.addRest(key, {
        scope: "account",
        modelClass: outcome.cause === "credits" ? "paid" : "all",
        until: at + UNTIL_CLEARED_HORIZON_MS,
        untilCleared: true,
        source: "until-credits",
        reason,
        cause: outcome.cause,
      });
      return true;
  }
}

export function clearOnEnable(book: AccountBook, key: KeyRecord): AccountRest[] {
  return book.clearRests(key, clearableByPerson);
}

/** "paid models (credits): Insufficient credits…", for the enable-key output and the log. */
export function describeCleared(rest: AccountRest): string {
  return `${restTarget(rest)} (${rest.cause ?? "rate-limit"}): ${rest.reason}`;
}
