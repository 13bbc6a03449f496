/**
 * Changes made by other instances, applied to this pool's memory (issue 14): the pool's `apply`
 * entry hands them here with its records and its account book. Each rule is the merge rule of
 * changes.ts in the pool's terms: an instant is only ever raised (a cooldown, a rest, disabled);
 * a fact learned before a person's last switch of the key (its `basis` is older than the key's
 * `resetAt`, the switch version in the Redis store) is void; free-model counts add up.
 *
 * Nothing here emits the pool's decision events (key.cooldown, account.rest): those are what this
 * instance publishes, and a change heard from elsewhere must not be sent back out.
 */
import type { AccountBook } from "./account-book.ts";
import { accountIdOf, utcDayOf } from "./account-state.ts";
import type { StateChange } from "./pool-state.ts";
import type { KeyRecord } from "./schema.ts";

export interface PoolInternals {
  byId: ReadonlyMap<string, KeyRecord>;
  keys: readonly KeyRecord[];
  book: AccountBook;
  /** The key stops being sticky (it rests now). */
  dropped(keyId: string): void;
  now(): number;
}

const resetSources = new Set(["header", "body", "retry-after", "default"]);

/** Applies one change; true when the pool's memory changed. */
export function applyToPool(change: StateChange, pool: PoolInternals): boolean {
  switch (change.kind) {
    case "key-cooldown": {
      const key = pool.byId.get(change.keyId);
      if (!key || change.basis < (key.resetAt ?? 0) || change.until <= key.cooldownUntil) return false;
      key.cooldownUntil = change.until;
      if (resetSources.has(change.source)) key.cooldownSource = change.source as NonNullable<KeyRecord["cooldownSource"]>;
      key.cooldownReason = change.reason;
      pool.dropped(key.id);
      return true;
    }
    case "key-disabled": {
      const key = pool.byId.get(change.keyId);
      if (!key || change.basis < (key.resetAt ?? 0) || key.disabled) return false;
      key.disabled = { reason: change.reason, at: change.since };
      pool.dropped(key.id);
      return true;
    }
    case "account-rest":
    case "model-rest": {
      const key = keyOfAccount(pool, change.account);
      if (!key) return false;
      pool.book.addRest(key, {
        scope: change.kind === "account-rest" ? "account" : "model",
        modelClass: change.kind === "account-rest" ? change.modelClass : "all",
        ...(change.kind === "model-rest" ? { model: change.model } : {}),
        until: change.until,
        source: change.source,
        reason: change.reason,
      });
      return true;
    }
    case "free-limit":
    case "free-requests": {
      const key = keyOfAccount(pool, change.account);
      if (!key || change.day !== utcDayOf(pool.now())) return false;
      const budget = pool.book.freeBudget(key, pool.now());
      if (change.kind === "free-limit") budget.limit = change.limit;
      else budget.used += change.delta;
      return true;
    }
    default:
      // Edits reach the pool through the store (replaceKeys); counters and streaks live in Redis.
      return false;
  }
}

/** Any key of the account (the book names accounts through their keys). */
function keyOfAccount(pool: PoolInternals, account: string): KeyRecord | undefined {
  return pool.keys.find((key) => accountIdOf(key) === account);
}
