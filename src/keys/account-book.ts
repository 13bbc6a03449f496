/**
 * The pool's memory of accounts: rests (of an account, of one model on it, or of one of its keys)
 * and each account's daily free-model budget. The key pool is its only user; it is split out so
 * the pool's file holds choosing and reporting, and this one what the accounts owe and when.
 */
import type { EventBus } from "../observe/events.ts";
import { accountIdOf, nextUtcMidnight, utcDayOf, type AccountRest, type AccountState, type FreeBudget, type ModelClass } from "./account-state.ts";
import { restApplies } from "./rests.ts";
import type { KeyRecord } from "./schema.ts";

/**
 * Why a key's account cannot take a request now. `budget`: the known daily free-model limit is
 * used up (until 00:00 UTC); `unpaid`: it rests until credits come back (no known time); `rest`:
 * anything else with a known end.
 */
export interface AccountBlock {
  until: number;
  /** `soft`: only a privacy 404 says no; used when nothing else is left (settings change, and the upstream's own 404 is the truthful answer). */
  why: "rest" | "budget" | "unpaid" | "soft";
  /** The end was announced (a reset, Retry-After, 00:00 UTC), not the proxy's default guess. */
  known: boolean;
}

export interface AccountBook {
  blockOf(key: KeyRecord, at: number, model: string | undefined, modelClass: ModelClass): AccountBlock | undefined;
  /** Adds (or extends) a rest; the key names the account. */
  addRest(key: KeyRecord, rest: AccountRest): void;
  /** Removes the rests of `key`'s account (and of the key itself) that `which` picks; returns them. */
  clearRests(key: KeyRecord, which: (rest: AccountRest) => boolean): AccountRest[];
  /** Moves a key to its real account, carrying over what was learned under its stand-in. */
  setAccount(key: KeyRecord, account: string): boolean;
  /** Today's free budget of the key's account (a new UTC day starts a new count). */
  freeBudget(key: KeyRecord, at: number): FreeBudget;
  snapshot(): Map<string, AccountState>;
  load(accounts: ReadonlyMap<string, AccountState>): void;
  readonly size: number;
  raw(): ReadonlyMap<string, AccountState>;
}

const copyState = (state: AccountState): AccountState => ({ rests: [...state.rests], ...(state.free ? { free: { ...state.free } } : {}) });

export function createAccountBook({ now, events }: { now: () => number; events?: EventBus | undefined }): AccountBook {
  let accounts = new Map<string, AccountState>();

  const stateOf = (key: KeyRecord): AccountState => {
    const id = accountIdOf(key);
    let state = accounts.get(id);
    if (!state) accounts.set(id, (state = { rests: [] }));
    return state;
  };

  const freeOf = (state: AccountState, at: number): FreeBudget => {
    const day = utcDayOf(at);
    if (!state.free || state.free.day !== day) state.free = { day, used: 0, ...(state.free?.limit === undefined ? {} : { limit: state.free.limit }) };
    return state.free;
  };

  return {
    get size() {
      return accounts.size;
    },
    raw: () => accounts,

    blockOf(key, at, model, modelClass) {
      const state = accounts.get(accountIdOf(key));
      if (!state) return undefined;
      let until = 0;
      let unpaid = false;
      let soft = 0;
      let known = false;
      for (const rest of state.rests) {
        if (rest.until <= at || !restApplies(rest, key.id, model, modelClass)) continue;
        if (rest.untilCleared) unpaid = true;
        else if (rest.cause === "privacy") soft = Math.max(soft, rest.until);
        else if (rest.until >= until) {
          known = rest.source !== "default";
          until = rest.until;
        }
      }
      // The budget is looked at before the rests: a free-models-per-day 429 leaves both a rest and a
      // used-up budget, and only "budget" lets acquire say the daily limit is used up on every
      // account (instead of "all keys are cooling down").
      if (modelClass === "free" && state.free && state.free.day === utcDayOf(at) && state.free.limit !== undefined && state.free.used >= state.free.limit) {
        return { until: Math.max(until, nextUtcMidnight(at)), why: "budget", known: true };
      }
      // Waiting on credits outweighs a rest with a known end: that end would not bring the key back.
      if (unpaid) return { until: Infinity, why: "unpaid", known: false };
      if (until > 0) return { until, why: "rest", known };
      if (soft > 0) return { until: soft, why: "soft", known: false };
      return undefined;
    },

    addRest(key, rest) {
      const state = stateOf(key);
      const same = state.rests.find((each) => each.scope === rest.scope && each.modelClass === rest.modelClass && each.model === rest.model && each.keyId === rest.keyId);
      // Like a key's cooldown, a rest is only ever extended by a later report.
      if (same && same.until >= rest.until) return;
      state.rests = [...state.rests.filter((each) => each !== same && each.until > now()), rest];
      events?.emit("account.rest", {
        account: accountIdOf(key),
        keyId: key.id,
        scope: rest.scope,
        modelClass: rest.modelClass,
        ...(rest.model === undefined ? {} : { model: rest.model }),
        until: rest.until,
        source: rest.source,
        reason: rest.reason,
        ...(rest.cause === undefined ? {} : { cause: rest.cause }),
      });
    },

    clearRests(key, which) {
      const state = accounts.get(accountIdOf(key));
      if (!state) return [];
      const at = now();
      const cleared = state.rests.filter((rest) => rest.until > at && (rest.scope !== "key" || rest.keyId === key.id) && which(rest));
      if (cleared.length > 0) state.rests = state.rests.filter((rest) => !cleared.includes(rest));
      return cleared;
    },

    setAccount(key, account) {
      if (key.account === account) return false;
      const beforeId = accountIdOf(key);
      key.account = account;
      // What was learned under the key's stand-in account (`key:<id>`) carries over to the real one.
      const before = beforeId.startsWith("key:") ? accounts.get(beforeId) : undefined;
      if (before) {
        const after = stateOf(key);
        after.rests = [...after.rests, ...before.rests];
        const newer = !after.free || after.free.day < (before.free?.day ?? "") || (after.free.day === before.free?.day && after.free.used < before.free.used);
        if (before.free && newer) after.free = before.free;
        accounts.delete(beforeId);
      }
      return true;
    },

    freeBudget: (key, at) => freeOf(stateOf(key), at),

    snapshot: () => new Map([...accounts].map(([id, state]) => [id, copyState(state)])),

    load(loaded) {
      accounts = new Map([...loaded].map(([id, state]) => [id, copyState(state)]));
    },
  };
}
