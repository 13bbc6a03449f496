/**
 * The pool's memory of accounts: rests (of an account, of one model on it, or of one of its keys)
 * and each account's daily free-model budget. The key pool is its only user; what the rests mean
 * for a key now is key-status.ts's to say (it reads `raw()`), this file only keeps them.
 */
import type { EventBus } from "../domain/events.ts";
import { accountIdOf, utcDayOf, type AccountRest, type AccountState, type FreeBudget } from "./account-state.ts";
import type { KeyRecord } from "./schema.ts";

export interface AccountBook {
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
