/**
 * The key pool: the only owner of key state. `acquire` picks a key for a request, `report` applies
 * what the upstream said about it. Both are synchronous and do no I/O; the store is told that
 * something changed (`onChange`) and writes later, coalesced.
 */
import type { Rotation } from "../config.ts";
import type { EventBus } from "../observe/events.ts";
import type { Outcome, ResetSource } from "../upstream/policy.ts";
import { accountIdOf, classOfModel, nextUtcMidnight, utcDayOf, type AccountRest, type AccountState, type ModelClass } from "./account-state.ts";
import { viewAccounts, type AccountView } from "./key-view.ts";
import type { KeyRecord } from "./schema.ts";

export interface KeyLease {
  keyId: string;
  /** The real key; it goes into the upstream Authorization header and nowhere else. */
  secret: string;
}

export type AcquireResult =
  | { ok: true; lease: KeyLease }
  | { ok: false; reason: "no-keys" | "all-disabled" | "all-tried"; total: number }
  | { ok: false; reason: "all-cooling"; cooling: number; nextAvailableAt: number; total: number }
  /** Free-model request, and every account's known daily free-model budget is used up. */
  | { ok: false; reason: "free-budget-exhausted"; accounts: number; resetAt: number; total: number };

export interface AcquireOptions {
  /** Keys this request must not use again (they failed it). */
  exclude?: ReadonlySet<string>;
  /** Keys this request would rather not use again (they were tried); used only if nothing else is left. */
  avoid?: ReadonlySet<string>;
  /** The requested model: only keys whose account may serve it now are candidates. */
  model?: string;
  /** Only ask whether a key could be had: nothing is marked used. */
  dryRun?: boolean;
}

/** What the upstream said besides the outcome: who the key's account is, which model was asked. */
export interface ReportContext {
  model?: string;
  /** The key's account, when the answer named it (`user_id`). */
  account?: string;
}

export type KeyStatus =
  | { state: "active" }
  | { state: "cooling"; until: number; reason?: string }
  | { state: "disabled"; reason: string; at: number };

export interface Availability {
  total: number;
  available: number;
  cooling: number;
  disabled: number;
  /** When the first cooling key returns; undefined when none is cooling. */
  nextAvailableAt?: number;
}

export interface KeyPool {
  acquire(options?: AcquireOptions): AcquireResult;
  /** How many keys could serve now, rest, or are disabled (readiness, error messages). */
  availability(): Availability;
  report(keyId: string, outcome: Outcome, context?: ReportContext): void;
  /** What GET /key said about a key: its account and that account's free-model use today. */
  learn(keyId: string, facts: { account?: string; freeUsed?: number; freeLimit?: number }): void;
  /** The per-account state, for the store (the server's to write) and for views. */
  accounts(): Map<string, AccountState>;
  /** Adopts account state read at startup. */
  loadAccounts(accounts: ReadonlyMap<string, AccountState>): void;
  accountViews(): AccountView[];
  /** Adopts a stored list: new keys join, missing ones leave, known ones keep runtime state. */
  replaceKeys(records: readonly KeyRecord[]): void;
  records(): KeyRecord[];
  statusOf(record: KeyRecord): KeyStatus;
  /** Subscribes to "state changed, persist me"; returns an unsubscribe. */
  onChange(listener: () => void): () => void;
}

export interface KeyPoolOptions {
  rotation: Rotation;
  failureThreshold: number;
  now?: () => number;
  events?: EventBus;
}

export function createKeyPool({ rotation, failureThreshold, now = Date.now, events }: KeyPoolOptions): KeyPool {
  let keys: KeyRecord[] = [];
  let byId = new Map<string, KeyRecord>();
  let stickyId: string | undefined;
  let roundRobinCursor = 0;
  let lastStamp = 0;
  let loaded = false;
  const changeListeners = new Set<() => void>();
  let accounts = new Map<string, AccountState>();

  const accountOf = (key: KeyRecord): AccountState => {
    const id = accountIdOf(key);
    let state = accounts.get(id);
    if (!state) accounts.set(id, (state = { rests: [] }));
    return state;
  };

  /** Today's free budget of an account (a new UTC day starts a new count). */
  const freeBudget = (state: AccountState, at: number) => {
    const day = utcDayOf(at);
    if (!state.free || state.free.day !== day) state.free = { day, used: 0, ...(state.free?.limit === undefined ? {} : { limit: state.free.limit }) };
    return state.free;
  };

  /**
   * Why this key's account cannot take this request now, and until when; undefined if it can.
   * "budget" means its known daily free-model limit is used up (until 00:00 UTC).
   */
  function accountRest(key: KeyRecord, at: number, model: string | undefined, modelClass: ModelClass): { until: number; why: "rest" | "budget" } | undefined {
    // Most pools serving paid models never rest an account: skip building the account id then.
    if (accounts.size === 0) return undefined;
    const state = accounts.get(accountIdOf(key));
    if (!state) return undefined;
    let until = 0;
    for (const rest of state.rests) {
      if (rest.until <= at) continue;
      const applies = rest.scope === "model" ? rest.model !== undefined && rest.model === model : rest.modelClass === "all" || rest.modelClass === modelClass;
      if (applies) until = Math.max(until, rest.until);
    }
    // The budget is looked at before the rests: a free-models-per-day 429 leaves both a rest and a
    // used-up budget, and only "budget" lets acquire say the daily limit is used up on every
    // account (instead of "all keys are cooling down").
    if (modelClass === "free" && state.free && state.free.day === utcDayOf(at) && state.free.limit !== undefined && state.free.used >= state.free.limit) {
      return { until: Math.max(until, nextUtcMidnight(at)), why: "budget" };
    }
    if (until > 0) return { until, why: "rest" };
    return undefined;
  }

  function addRest(key: KeyRecord, rest: AccountRest): void {
    const state = accountOf(key);
    const same = state.rests.find((each) => each.scope === rest.scope && each.modelClass === rest.modelClass && each.model === rest.model);
    // Like a key's cooldown, an account's rest is only ever extended by a later report.
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
    });
  }

  function setAccount(key: KeyRecord, account: string): boolean {
    if (key.account === account) return false;
    const beforeId = accountIdOf(key);
    key.account = account;
    // What was learned under the key's stand-in account (`key:<id>`) carries over to the real one.
    const before = beforeId.startsWith("key:") ? accounts.get(beforeId) : undefined;
    if (before) {
      const after = accountOf(key);
      after.rests = [...after.rests, ...before.rests];
      const newer = !after.free || after.free.day < (before.free?.day ?? "") || (after.free.day === before.free?.day && after.free.used < before.free.used);
      if (before.free && newer) after.free = before.free;
      accounts.delete(beforeId);
    }
    return true;
  }

  const changed = () => {
    for (const listener of changeListeners) listener();
  };

  function isAvailable(key: KeyRecord, at: number): boolean {
    if (key.disabled) return false;
    if (key.cooldownUntil > at) return false;
    if (key.cooldownUntil !== 0) {
      // The rest is over: note it once, so logs can say when a key came back.
      key.cooldownUntil = 0;
      delete key.cooldownSource;
      delete key.cooldownReason;
      events?.emit("key.recovered", { keyId: key.id });
    }
    return true;
  }

  function choose(candidates: KeyRecord[]): KeyRecord {
    const leastRecentlyUsed = () =>
      candidates.reduce((best, key) => (key.lastUsedAt < best.lastUsedAt ? key : best), candidates[0] as KeyRecord);
    switch (rotation) {
      case "sticky": {
        const sticky = stickyId === undefined ? undefined : candidates.find((key) => key.id === stickyId);
        return sticky ?? leastRecentlyUsed();
      }
      case "least-recently-used":
        return leastRecentlyUsed();
      case "round-robin": {
        // Walk the key list in its order from the cursor; the first candidate found is next.
        const candidateIds = new Set(candidates.map((key) => key.id));
        for (let step = 0; step < keys.length; step++) {
          const key = keys[(roundRobinCursor + step) % keys.length] as KeyRecord;
          if (candidateIds.has(key.id)) {
            roundRobinCursor = (keys.indexOf(key) + 1) % keys.length;
            return key;
          }
        }
        return candidates[0] as KeyRecord;
      }
    }
  }

  return {
    acquire({ exclude, avoid, model, dryRun = false } = {}) {
      const at = now();
      if (keys.length === 0) return { ok: false, reason: "no-keys", total: 0 };
      const modelClass = classOfModel(model);
      const usable: KeyRecord[] = [];
      let tried = false;
      let nextAt = Infinity;
      let cooling = 0;
      let budgetOnly = true;
      let exhaustedAccounts: Set<string> | undefined;
      for (const key of keys) {
        if (key.disabled) continue;
        if (!isAvailable(key, at)) {
          cooling++;
          budgetOnly = false;
          nextAt = Math.min(nextAt, key.cooldownUntil);
          continue;
        }
        const rest = accountRest(key, at, model, modelClass);
        if (rest) {
          cooling++;
          nextAt = Math.min(nextAt, rest.until);
          if (rest.why === "budget") (exhaustedAccounts ??= new Set()).add(accountIdOf(key));
          else budgetOnly = false;
          continue;
        }
        if (exclude?.has(key.id)) {
          tried = true;
          continue;
        }
        usable.push(key);
      }
      const fresh = avoid ? usable.filter((key) => !avoid.has(key.id)) : usable;
      const candidates = fresh.length > 0 ? fresh : usable;
      if (candidates.length === 0) {
        if (tried) return { ok: false, reason: "all-tried", total: keys.length };
        if (cooling === 0) return { ok: false, reason: "all-disabled", total: keys.length };
        if (budgetOnly) return { ok: false, reason: "free-budget-exhausted", accounts: exhaustedAccounts?.size ?? 0, resetAt: nextAt, total: keys.length };
        return { ok: false, reason: "all-cooling", cooling, nextAvailableAt: nextAt, total: keys.length };
      }
      if (dryRun) {
        const any = candidates[0] as KeyRecord;
        return { ok: true, lease: { keyId: any.id, secret: any.secret } };
      }
      const key = choose(candidates);
      // Marked used at acquire time, so concurrent requests spread under least-recently-used;
      // stamps strictly increase, so two acquires in one millisecond still have an order.
      lastStamp = Math.max(at, lastStamp + 1e-3);
      key.lastUsedAt = lastStamp;
      key.requests++;
      stickyId = key.id;
      changed();
      return { ok: true, lease: { keyId: key.id, secret: key.secret } };
    },

    availability() {
      const at = now();
      let available = 0;
      let disabled = 0;
      let cooling = 0;
      let nextAvailableAt = Infinity;
      for (const key of keys) {
        if (key.disabled) disabled++;
        else if (key.cooldownUntil > at) {
          cooling++;
          nextAvailableAt = Math.min(nextAvailableAt, key.cooldownUntil);
        } else available++;
      }
      return { total: keys.length, available, cooling, disabled, ...(cooling > 0 ? { nextAvailableAt } : {}) };
    },

    report(keyId, outcome, context = {}) {
      const key = byId.get(keyId);
      if (!key) return; // removed while the request was in flight
      const at = now();
      let learned = false;
      if (context.account !== undefined) learned = setAccount(key, context.account);
      const coolUntil = (until: number, source: ResetSource, reason: string) => {
        // A cooldown is only ever extended, never shortened, by a later report.
        if (until <= key.cooldownUntil) return;
        key.cooldownUntil = until;
        key.cooldownSource = source;
        key.cooldownReason = reason;
        if (stickyId === key.id) stickyId = undefined;
        events?.emit("key.cooldown", { keyId, until, source, reason });
      };
      switch (outcome.kind) {
        case "ok":
          key.successes++;
          key.consecutiveFailures = 0;
          // OpenRouter counts every free-model request an account sends, per UTC day.
          if (classOfModel(context.model) === "free") freeBudget(accountOf(key), at).used++;
          if (outcome.exhausted) coolUntil(outcome.exhausted.until, outcome.exhausted.source, "rate limit remaining is 0");
          break;
        case "rate-limited": {
          const reason = outcome.message ?? "rate limited (429)";
          if (outcome.scope === "key") {
            coolUntil(outcome.until, outcome.source, reason);
            break;
          }
          addRest(key, {
            scope: outcome.scope,
            modelClass: outcome.modelClass,
            ...(outcome.model === undefined ? {} : { model: outcome.model }),
            until: outcome.until,
            source: outcome.source,
            reason,
          });
          if (outcome.dailyLimit !== undefined) {
            // The daily limit is learned and used up: no more free requests on this account today.
            const budget = freeBudget(accountOf(key), at);
            budget.limit = outcome.dailyLimit;
            budget.used = Math.max(budget.used, outcome.dailyLimit);
          }
          if (stickyId === key.id) stickyId = undefined;
          break;
        }
        case "key-failure":
          key.failures++;
          key.consecutiveFailures++;
          events?.emit("key.failure", { keyId, consecutiveFailures: key.consecutiveFailures, reason: outcome.reason });
          if (outcome.restPaid) {
            addRest(key, { scope: "account", modelClass: "paid", until: outcome.restPaid.until, source: outcome.restPaid.source, reason: outcome.reason });
          }
          if (key.consecutiveFailures >= failureThreshold && !key.disabled) {
            const reason = `${key.consecutiveFailures} consecutive failures; last: ${outcome.reason}`;
            key.disabled = { reason, at };
            if (stickyId === key.id) stickyId = undefined;
            events?.emit("key.disabled", { keyId, reason });
          }
          break;
        case "shared-capacity":
        case "request-error":
        case "upstream-error":
          if (!learned) return; // not the key's doing: nothing to remember
      }
      changed();
    },

    learn(keyId, { account, freeUsed, freeLimit }) {
      const key = byId.get(keyId);
      if (!key) return;
      if (account !== undefined) setAccount(key, account);
      if (freeUsed !== undefined || freeLimit !== undefined) {
        const budget = freeBudget(accountOf(key), now());
        // Seeds only raise what was counted here: requests sent since GET /key answered still count.
        if (freeUsed !== undefined) budget.used = Math.max(budget.used, freeUsed);
        if (freeLimit !== undefined) budget.limit = freeLimit;
      }
      changed();
    },

    accounts() {
      return new Map([...accounts].map(([id, state]) => [id, { rests: [...state.rests], ...(state.free ? { free: { ...state.free } } : {}) }]));
    },

    loadAccounts(loadedAccounts) {
      accounts = new Map([...loadedAccounts].map(([id, state]) => [id, { rests: [...state.rests], ...(state.free ? { free: { ...state.free } } : {}) }]));
    },

    accountViews() {
      return viewAccounts(keys, accounts, now());
    },

    replaceKeys(records) {
      const previous = byId;
      const firstLoad = !loaded; // the keys found at startup were not "added"
      loaded = true;
      keys = records.map((record) => {
        const known = previous.get(record.id);
        if (!known) {
          if (!firstLoad) events?.emit("key.added", { keyId: record.id, ...(record.label ? { label: record.label } : {}) });
          return { ...record };
        }
        if (known.resetAt !== record.resetAt) {
          // A person's decision from outside (CLI, admin API, check-keys): theirs wins.
          if (record.disabled) events?.emit("key.disabled", { keyId: record.id, reason: record.disabled.reason });
          else events?.emit("key.enabled", { keyId: record.id });
          return { ...record };
        }
        // Same key, no reset by a person: keep the runtime state held here, adopt the rest.
        known.label = record.label;
        known.extra = record.extra;
        if (record.account !== undefined && known.account === undefined) setAccount(known, record.account);
        return known;
      });
      byId = new Map(keys.map((key) => [key.id, key]));
      for (const id of previous.keys()) if (!byId.has(id)) events?.emit("key.removed", { keyId: id });
      lastStamp = Math.max(lastStamp, ...keys.map((key) => key.lastUsedAt));
      if (stickyId !== undefined && !byId.has(stickyId)) stickyId = undefined;
    },

    records() {
      return keys.map((key) => ({ ...key }));
    },

    statusOf(record) {
      if (record.disabled) return { state: "disabled", reason: record.disabled.reason, at: record.disabled.at };
      if (record.cooldownUntil > now()) {
        return { state: "cooling", until: record.cooldownUntil, ...(record.cooldownReason ? { reason: record.cooldownReason } : {}) };
      }
      return { state: "active" };
    },

    onChange(listener) {
      changeListeners.add(listener);
      return () => changeListeners.delete(listener);
    },
  };
}
