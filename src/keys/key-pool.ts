/**
 * The key pool: the only owner of key state. `acquire` picks a key for a request, `report` applies
 * what the upstream said about it. Both are synchronous and do no I/O; the store is told that
 * something changed (`onChange`) and writes later, coalesced.
 */
import type { Rotation } from "../config.ts";
import type { EventBus } from "../observe/events.ts";
import type { Outcome, ResetSource } from "../domain/outcome.ts";
import { createAccountBook } from "./account-book.ts";
import { accountIdOf, classOfModel, type AccountState } from "./account-state.ts";
import { viewAccounts, type AccountView } from "./key-view.ts";
import { createChooser } from "./rotation.ts";
import { applyPayment, applyRateLimit, clearOnEnable, describeCleared, KEY_LOOKUP_WAIT_MS } from "./outcome-rests.ts";
import { applyToPool } from "./pool-apply.ts";
import type { StateChange } from "./pool-state.ts";
import type { KeyLimit, KeyRecord } from "./schema.ts";

export interface KeyLease {
  keyId: string;
  /** The real key; it goes into the upstream Authorization header and nowhere else. */
  secret: string;
  /** The key's account id (`key:<id>` while unknown): what a 402 or a session pins to. */
  account: string;
}

export type AcquireResult =
  | { ok: true; lease: KeyLease }
  | { ok: false; reason: "no-keys" | "all-disabled" | "all-tried"; total: number }
  /** `resetKnown`: the first return was announced by the upstream; false: it is the proxy's own default guess. */
  | { ok: false; reason: "all-cooling"; cooling: number; nextAvailableAt: number; resetKnown: boolean; total: number }
  /** Every key left rests until its account has credits again (no known time). */
  | { ok: false; reason: "out-of-credits"; accounts: number; total: number }
  /** Free-model request, and every account's known daily free-model budget is used up. */
  | { ok: false; reason: "free-budget-exhausted"; accounts: number; resetAt: number; total: number };

export interface AcquireOptions {
  /** Keys this request must not use again (they failed it). */
  exclude?: ReadonlySet<string>;
  /** Keys this request would rather not use again (they were tried); used only if nothing else is left. */
  avoid?: ReadonlySet<string>;
  /** Accounts this request must not use again (its own 402 there: it asks too much of them). */
  excludeAccounts?: ReadonlySet<string>;
  /** The key to use when it can serve (session affinity); else ROTATION picks. */
  prefer?: string;
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
  /**
   * What GET /key said about a key: its account, that account's free-model use today, the key's own
   * cap. Called with no facts when the lookup failed: either way a key added at runtime may now
   * take free-model requests.
   */
  learn(keyId: string, facts: KeyFacts): void;
  /** A person's enable-key: the rests of the key's account that are not a known daily limit end; says which. */
  clearRests(keyId: string): string[];
  /** A background GET /key shows the account can pay again: its credit rests end. */
  paidAgain(keyId: string): void;
  /** Keys added while the server runs whose GET /key has not answered yet. */
  pendingLookups(): string[];
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
  /** A change another instance made (issue 14, pool-apply.ts); emits none of the pool's events. */
  apply(change: StateChange): void;
}

export interface KeyFacts {
  account?: string;
  freeUsed?: number;
  freeLimit?: number;
  keyLimit?: KeyLimit;
}

export interface KeyPoolOptions {
  rotation: Rotation;
  failureThreshold: number;
  now?: () => number;
  events?: EventBus;
  /** A key added at runtime takes no free-model request until `learn` (GET /key answered or failed). */
  holdAddedKeys?: boolean;
}

export function createKeyPool({ rotation, failureThreshold, now = Date.now, events, holdAddedKeys = false }: KeyPoolOptions): KeyPool {
  let keys: KeyRecord[] = [];
  let byId = new Map<string, KeyRecord>();
  let lastStamp = 0;
  let loaded = false;
  const changeListeners = new Set<() => void>();
  const book = createAccountBook({ now, events });
  const chooser = createChooser(rotation);
  /** Keys added at runtime, until their GET /key answers: no free-model request may use them. */
  const pending = new Set<string>();

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

  return {
    acquire({ exclude, avoid, excludeAccounts, prefer, model, dryRun = false } = {}) {
      const at = now();
      if (keys.length === 0) return { ok: false, reason: "no-keys", total: 0 };
      const modelClass = classOfModel(model);
      const usable: KeyRecord[] = [];
      /** Keys only a privacy 404 keeps off this model: tried last, never refused outright. */
      let fallback: KeyRecord[] | undefined;
      let tried = false;
      let nextAt = Infinity;
      /** The first return whose time the upstream announced: equal to nextAt when that one was. */
      let nextKnownAt = Infinity;
      let cooling = 0;
      let budget = 0;
      let unpaid = 0;
      let blockedAccounts: Set<string> | undefined;
      for (const key of keys) {
        if (key.disabled) continue;
        if (!isAvailable(key, at)) {
          cooling++;
          nextAt = Math.min(nextAt, key.cooldownUntil);
          if (key.cooldownSource !== undefined && key.cooldownSource !== "default") nextKnownAt = Math.min(nextKnownAt, key.cooldownUntil);
          continue;
        }
        // Most pools serving paid models never rest an account: skip building the account id then.
        const block = book.size === 0 ? undefined : book.blockOf(key, at, model, modelClass);
        if (block?.why === "soft") {
          if (!exclude?.has(key.id) && !excludeAccounts?.has(accountIdOf(key))) (fallback ??= []).push(key);
          else tried = true;
          continue;
        }
        if (block) {
          cooling++;
          if (block.why === "budget") budget++;
          if (block.why === "unpaid") unpaid++;
          else {
            nextAt = Math.min(nextAt, block.until);
            if (block.known) nextKnownAt = Math.min(nextKnownAt, block.until);
          }
          if (block.why !== "rest") (blockedAccounts ??= new Set()).add(accountIdOf(key));
          continue;
        }
        if (modelClass === "free" && pending.size > 0 && pending.has(key.id)) {
          cooling++;
          nextAt = Math.min(nextAt, at + KEY_LOOKUP_WAIT_MS);
          continue;
        }
        if (exclude?.has(key.id) || (excludeAccounts !== undefined && excludeAccounts.has(accountIdOf(key)))) {
          tried = true;
          continue;
        }
        usable.push(key);
      }
      const fresh = avoid ? usable.filter((key) => !avoid.has(key.id)) : usable;
      const candidates = fresh.length > 0 ? fresh : usable.length > 0 ? usable : (fallback ?? []);
      if (candidates.length === 0) {
        if (tried) return { ok: false, reason: "all-tried", total: keys.length };
        if (cooling === 0) return { ok: false, reason: "all-disabled", total: keys.length };
        const accounts = blockedAccounts?.size ?? 0;
        if (budget === cooling) return { ok: false, reason: "free-budget-exhausted", accounts, resetAt: nextAt, total: keys.length };
        if (unpaid === cooling) return { ok: false, reason: "out-of-credits", accounts, total: keys.length };
        return { ok: false, reason: "all-cooling", cooling, nextAvailableAt: nextAt, resetKnown: nextKnownAt === nextAt, total: keys.length };
      }
      const preferred = prefer === undefined ? undefined : candidates.find((key) => key.id === prefer);
      if (dryRun) {
        const any = preferred ?? (candidates[0] as KeyRecord);
        return { ok: true, lease: { keyId: any.id, secret: any.secret, account: accountIdOf(any) } };
      }
      const key = preferred ?? chooser.choose(candidates, keys);
      // Marked used at acquire time, so concurrent requests spread under least-recently-used;
      // stamps strictly increase, so two acquires in one millisecond still have an order.
      lastStamp = Math.max(at, lastStamp + 1e-3);
      key.lastUsedAt = lastStamp;
      key.requests++;
      chooser.used(key.id);
      changed();
      return { ok: true, lease: { keyId: key.id, secret: key.secret, account: accountIdOf(key) } };
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
      if (context.account !== undefined) learned = book.setAccount(key, context.account);
      const coolUntil = (until: number, source: ResetSource, reason: string) => {
        // A cooldown is only ever extended, never shortened, by a later report.
        if (until <= key.cooldownUntil) return;
        key.cooldownUntil = until;
        key.cooldownSource = source;
        key.cooldownReason = reason;
        chooser.dropped(key.id);
        events?.emit("key.cooldown", { keyId, until, source, reason });
      };
      switch (outcome.kind) {
        case "ok":
          key.successes++;
          key.consecutiveFailures = 0;
          // OpenRouter counts every free-model request an account sends, per UTC day.
          if (classOfModel(context.model) === "free") book.freeBudget(key, at).used++;
          if (outcome.exhausted) coolUntil(outcome.exhausted.until, outcome.exhausted.source, "rate limit remaining is 0");
          break;
        case "rate-limited":
          if (outcome.scope === "key") coolUntil(outcome.until, outcome.source, outcome.message ?? "rate limited (429)");
          else {
            applyRateLimit(book, key, outcome, at);
            chooser.dropped(key.id);
          }
          break;
        case "payment":
          // Never a failure of the key: money, not a broken key (payment-causes.ts).
          if (!applyPayment(book, key, outcome, at) && !learned) return;
          chooser.dropped(key.id);
          break;
        case "privacy":
          book.addRest(key, { scope: "model", modelClass: "all", ...(outcome.model === undefined ? {} : { model: outcome.model }), until: outcome.until, source: "default", reason: outcome.message ?? "no endpoints match the data policy", cause: "privacy" });
          break;
        case "key-failure":
          key.failures++;
          key.consecutiveFailures++;
          events?.emit("key.failure", { keyId, consecutiveFailures: key.consecutiveFailures, reason: outcome.reason });
          if (key.consecutiveFailures >= failureThreshold && !key.disabled) {
            const reason = `${key.consecutiveFailures} consecutive failures; last: ${outcome.reason}`;
            key.disabled = { reason, at };
            chooser.dropped(key.id);
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

    learn(keyId, { account, freeUsed, freeLimit, keyLimit }) {
      pending.delete(keyId);
      const key = byId.get(keyId);
      if (!key) return;
      if (account !== undefined) book.setAccount(key, account);
      if (freeUsed !== undefined || freeLimit !== undefined) {
        const budget = book.freeBudget(key, now());
        // Seeds only raise what was counted here: requests sent since GET /key answered still count.
        if (freeUsed !== undefined) budget.used = Math.max(budget.used, freeUsed);
        if (freeLimit !== undefined) budget.limit = freeLimit;
      }
      if (keyLimit !== undefined) key.keyLimit = keyLimit;
      changed();
    },

    clearRests(keyId) {
      const key = byId.get(keyId);
      if (!key) return [];
      const cleared = clearOnEnable(book, key);
      if (cleared.length === 0) return [];
      const described = cleared.map(describeCleared);
      events?.emit("account.rests-cleared", { account: accountIdOf(key), keyId, cleared: described });
      changed();
      return described;
    },

    paidAgain(keyId) {
      const key = byId.get(keyId);
      if (!key) return;
      const cleared = book.clearRests(key, (rest) => rest.cause === "credits" || rest.cause === "negative-balance");
      if (cleared.length === 0) return;
      events?.emit("account.rests-cleared", { account: accountIdOf(key), keyId, cleared: cleared.map(describeCleared) });
      changed();
    },

    pendingLookups: () => [...pending],

    accounts: () => book.snapshot(),

    loadAccounts(loadedAccounts) {
      book.load(loadedAccounts);
    },

    accountViews() {
      return viewAccounts(keys, book.raw(), now());
    },

    replaceKeys(records) {
      const previous = byId;
      const firstLoad = !loaded; // the keys found at startup were not "added"
      loaded = true;
      const enabledByPerson: KeyRecord[] = [];
      keys = records.map((record) => {
        const known = previous.get(record.id);
        if (!known) {
          if (!firstLoad) {
            if (holdAddedKeys) pending.add(record.id);
            events?.emit("key.added", { keyId: record.id, ...(record.label ? { label: record.label } : {}) });
          }
          return { ...record };
        }
        if (known.resetAt !== record.resetAt) {
          // A person's decision from outside (CLI, admin API, check-keys): theirs wins.
          if (record.disabled) events?.emit("key.disabled", { keyId: record.id, reason: record.disabled.reason });
          else {
            events?.emit("key.enabled", { keyId: record.id });
            enabledByPerson.push(record);
          }
          // What GET /key and error bodies taught the server stays, even if the file has not caught up.
          return {
            ...record,
            ...(record.account === undefined && known.account !== undefined ? { account: known.account } : {}),
            ...(record.keyLimit || !known.keyLimit ? {} : { keyLimit: known.keyLimit }),
          };
        }
        // Same key, no reset by a person: keep the runtime state held here, adopt the rest.
        known.label = record.label;
        known.extra = record.extra;
        if (record.keyLimit && record.keyLimit.checkedAt > (known.keyLimit?.checkedAt ?? 0)) known.keyLimit = record.keyLimit;
        if (record.account !== undefined && known.account === undefined) book.setAccount(known, record.account);
        return known;
      });
      byId = new Map(keys.map((key) => [key.id, key]));
      for (const id of previous.keys()) {
        if (byId.has(id)) continue;
        pending.delete(id);
        chooser.dropped(id);
        events?.emit("key.removed", { keyId: id });
      }
      lastStamp = Math.max(lastStamp, ...keys.map((key) => key.lastUsedAt));
      // An enable-key from outside (the CLI edits the file) clears the account's rests here too:
      // the server's memory is what gets written back.
      for (const record of enabledByPerson) this.clearRests(record.id);
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

    apply(change) {
      if (applyToPool(change, { byId, keys, book, dropped: (keyId) => chooser.dropped(keyId), now })) changed();
    },
  };
}
