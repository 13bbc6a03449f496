/**
 * The one reducer (docs/state-model.md): `apply(state, change)` folds a `StateChange` into the
 * pool's memory — its key records and its accounts — the same way for the pool's own decisions
 * and for changes heard from elsewhere (another instance, a resync, the stored list). Every merge
 * rule of key state is written here once:
 *
 * - an instant (key cooldown, account rest, a model's rest on an account, disabled-since, last
 *   used) merges by **max**: nobody shortens a rest. Equal instants keep the same cause
 *   everywhere, decided by the cause's text;
 * - a counter (requests, successes, failures; free-model requests per account per UTC day) merges
 *   by **adding deltas**: nobody overwrites a total;
 * - a runtime fact on an older `basis` than the key's last switch by a person (`resetAt`) is
 *   void: a person's enable-key beats whatever was learned before it, whichever arrives first.
 *
 * `apply` changes the state in place (the request path must not copy maps) and does nothing
 * else: no I/O, no events, no clock. Expiry is the reader's business (key-status.ts, from `now`).
 * The shared kinds give the same state in any order; the local ones (state-change.ts) apply in the
 * order this instance decided them.
 *
 * A person's edits of the key list (`key-edit`) are the stores' to merge: `applyEdit` below.
 */
import { accountIdOf, type AccountRest, type AccountState, type FreeBudget } from "./account-state.ts";
import type { Cause, KeyListEntry, StateChange } from "./state-change.ts";
import { endedBy } from "./rests.ts";
import type { KeyRecord } from "./schema.ts";

/** What `apply` folds changes into: the pool's records and its accounts (`key:<id>` while a key's account is unknown). */
export interface PoolMemory {
  readonly byId: ReadonlyMap<string, KeyRecord>;
  readonly accounts: Map<string, AccountState>;
}

/** A cause as one string: the tie-break order, and how Redis stores it (store/redis/scripts.ts). */
export const causeText = (cause: Cause): string => `${cause.source}\u0000${cause.reason}`;

export function causeFromText(text: string): Cause {
  const split = text.indexOf("\u0000");
  return split < 0 ? { source: "unknown", reason: text } : { source: text.slice(0, split), reason: text.slice(split + 1) };
}

/** Whether `incoming` outlasts `current`: the later instant, or on a tie the greater cause, so every order keeps the same one. */
const outlasts = (incoming: Cause & { until: number }, current: Cause & { until: number }): boolean =>
  incoming.until > current.until || (incoming.until === current.until && causeText(incoming) > causeText(current));

const cooldownSources = new Set(["header", "body", "retry-after", "default"]);

/** Applies one change; true when the state changed. */
export function apply(state: PoolMemory, change: StateChange): boolean {
  switch (change.kind) {
    case "key-cooldown": {
      const key = factKey(state, change.keyId, change.basis);
      if (!key) return false;
      // A source the record cannot name (another version's) counts as the proxy's own guess, here and in the tie-break.
      const source = cooldownSources.has(change.source) ? (change.source as NonNullable<KeyRecord["cooldownSource"]>) : "default";
      const current = { until: key.cooldownUntil, source: key.cooldownSource ?? "", reason: key.cooldownReason ?? "" };
      if (!outlasts({ until: change.until, source, reason: change.reason }, current)) return false;
      key.cooldownUntil = change.until;
      key.cooldownSource = source;
      key.cooldownReason = change.reason;
      return true;
    }
    case "key-disabled": {
      const key = factKey(state, change.keyId, change.basis);
      if (!key) return false;
      const current = key.disabled;
      if (current && (current.at > change.since || (current.at === change.since && current.reason >= change.reason))) return false;
      key.disabled = { reason: change.reason, at: change.since };
      return true;
    }
    case "key-failure": {
      const key = factKey(state, change.keyId, change.basis);
      if (!key) return false;
      key.consecutiveFailures++;
      return true;
    }
    case "key-success": {
      const key = factKey(state, change.keyId, change.basis);
      if (!key || key.consecutiveFailures === 0) return false;
      key.consecutiveFailures = 0;
      return true;
    }
    case "key-counters": {
      const key = state.byId.get(change.keyId);
      if (!key) return false;
      const { delta } = change;
      key.requests += delta.requests ?? 0;
      key.successes += delta.successes ?? 0;
      key.failures += delta.failures ?? 0;
      if (change.lastUsedAt !== undefined && change.lastUsedAt > key.lastUsedAt) key.lastUsedAt = change.lastUsedAt;
      return true;
    }
    case "key-account":
      return setAccount(state, change.keyId, change.account);
    case "key-limit": {
      const key = state.byId.get(change.keyId);
      if (!key || (key.keyLimit !== undefined && key.keyLimit.checkedAt > change.keyLimit.checkedAt)) return false;
      key.keyLimit = change.keyLimit;
      return true;
    }
    case "account-rest":
    case "model-rest":
      return addRest(accountOf(state, change.account), restOfChange(change));
    case "rests-cleared": {
      const account = state.accounts.get(change.account);
      if (!account) return false;
      const which = endedBy[change.by];
      const kept = account.rests.filter((rest) => (rest.scope === "key" && rest.keyId !== change.keyId) || !which(rest));
      if (kept.length === account.rests.length) return false;
      account.rests = kept;
      return true;
    }
    case "free-requests":
    case "free-limit":
    case "free-used":
      return applyFree(accountOf(state, change.account), change);
    case "key-edit":
      // The key list is the stores' (applyEdit); the pool adopts the list they hold (replaceKeys).
      return false;
  }
}

/** The key a runtime fact is about, unless the fact is void (unknown key, or learned before the person's last switch). */
function factKey(state: PoolMemory, keyId: string, basis: number): KeyRecord | undefined {
  const key = state.byId.get(keyId);
  return key === undefined || basis < (key.resetAt ?? 0) ? undefined : key;
}

function accountOf(state: PoolMemory, id: string): AccountState {
  let account = state.accounts.get(id);
  if (!account) state.accounts.set(id, (account = { rests: [] }));
  return account;
}

/** The rest a change adds, as the account keeps it (and as the `account.rest` event tells it). */
export function restOfChange(change: Extract<StateChange, { kind: "account-rest" | "model-rest" }>): AccountRest {
  const { until, source, reason, cause } = change;
  if (change.kind === "model-rest") return { scope: "model", modelClass: "all", model: change.model, until, source, reason, ...(cause === undefined ? {} : { cause }) };
  return {
    scope: change.keyId === undefined ? "account" : "key",
    modelClass: change.modelClass,
    ...(change.keyId === undefined ? {} : { keyId: change.keyId }),
    until,
    source,
    reason,
    ...(cause === undefined ? {} : { cause }),
    ...(change.untilCleared ? { untilCleared: true } : {}),
  };
}

/** A rest is one per scope, class, model and key in an account; it is only ever extended. */
function addRest(account: AccountState, rest: AccountRest): boolean {
  const same = account.rests.findIndex((each) => each.scope === rest.scope && each.modelClass === rest.modelClass && each.model === rest.model && each.keyId === rest.keyId);
  if (same < 0) {
    account.rests = [...account.rests, rest];
    return true;
  }
  if (!outlasts(rest, account.rests[same] as AccountRest)) return false;
  account.rests = account.rests.map((each, index) => (index === same ? rest : each));
  return true;
}

/**
 * A key's account becomes known: what was learned under its stand-in (`key:<id>`) moves to the
 * real one (rests kept by max, the free count by the newer day or the higher count).
 */
function setAccount(state: PoolMemory, keyId: string, id: string): boolean {
  const key = state.byId.get(keyId);
  if (!key || key.account === id) return false;
  const beforeId = accountIdOf(key);
  key.account = id;
  const before = beforeId.startsWith("key:") ? state.accounts.get(beforeId) : undefined;
  if (before) {
    const after = accountOf(state, id);
    for (const rest of before.rests) addRest(after, rest);
    if (before.free && (!after.free || after.free.day < before.free.day || (after.free.day === before.free.day && after.free.used < before.free.used))) after.free = before.free;
    state.accounts.delete(beforeId);
  }
  return true;
}

/**
 * The day's free-model count and the account's limit. UTC days (YYYY-MM-DD) compare as strings:
 * the latest day heard is the day counted (a newer day starts from zero), and counts for an older
 * day are void. Counts add. The limit is the account's, not the day's: the latest lesson wins,
 * whichever day it came on.
 */
function applyFree(account: AccountState, change: Extract<StateChange, { kind: "free-requests" | "free-limit" | "free-used" }>): boolean {
  const current = account.free;
  const newDay = current === undefined || change.day > current.day;
  if (!newDay && change.day < current.day && change.kind !== "free-limit") return false;
  const today: FreeBudget = newDay
    ? { day: change.day, used: 0, ...(current?.limit === undefined ? {} : { limit: current.limit }), ...(current?.learnedAt === undefined ? {} : { learnedAt: current.learnedAt }) }
    : current;
  let changed = newDay;
  switch (change.kind) {
    case "free-requests":
      today.used += change.delta;
      changed ||= change.delta !== 0;
      break;
    case "free-used":
      if (today.used < change.used) {
        today.used = change.used;
        changed = true;
      }
      break;
    case "free-limit": {
      const learnedAt = today.learnedAt ?? -1;
      if (learnedAt > change.learnedAt || (learnedAt === change.learnedAt && (today.limit ?? -1) >= change.limit)) break;
      today.limit = change.limit;
      today.learnedAt = change.learnedAt;
      changed = true;
      break;
    }
  }
  if (changed) account.free = today;
  return changed;
}

/**
 * A person's edit of one key-list entry (the Redis key list): each register (add, removal, switch,
 * label) keeps the edit with the highest version, so every order gives the same entry. Undefined
 * when the edit changes nothing (an older version than its register's).
 */
export function applyEdit(entry: KeyListEntry | undefined, change: Extract<StateChange, { kind: "key-edit" }>): KeyListEntry | undefined {
  const { keyId: id, version: v } = change;
  const current = entry ?? blankEntry(id);
  const next: KeyListEntry = { ...current, version: Math.max(current.version, v) };
  const takeSwitch = (disabled?: { at: number; reason: string }): void => {
    if (v <= next.switchVersion) return;
    next.switchVersion = v;
    if (disabled) next.personDisabled = disabled;
    else delete next.personDisabled;
  };
  switch (change.edit) {
    case "add":
      if (v <= current.addVersion) return undefined;
      next.addVersion = v;
      next.secret = change.secret;
      next.addedAt = change.addedAt;
      if (change.account !== undefined && (next.account === undefined || change.account > next.account)) next.account = change.account;
      takeSwitch();
      if (v > next.labelVersion) {
        next.labelVersion = v;
        if (change.label === undefined) delete next.label;
        else next.label = change.label;
      }
      break;
    case "remove":
      if (v <= current.removeVersion) return undefined;
      next.removeVersion = v;
      takeSwitch(); // what the pool learned before the removal is void for a key added again later
      break;
    case "enable":
    case "disable":
      if (v <= current.switchVersion) return undefined;
      takeSwitch(change.edit === "disable" ? { at: change.at, reason: change.reason } : undefined);
      break;
    case "label":
      if (v <= current.labelVersion) return undefined;
      next.labelVersion = v;
      if (change.label === undefined) delete next.label;
      else next.label = change.label;
      break;
  }
  next.removed = next.addVersion <= next.removeVersion;
  if (next.removed) {
    // No secret is kept for a key that is not present; a later add brings its own.
    next.secret = "";
    next.addedAt = 0;
  }
  return next;
}

const blankEntry = (id: string): KeyListEntry => ({ id, secret: "", addedAt: 0, removed: true, version: 0, addVersion: 0, removeVersion: 0, switchVersion: 0, labelVersion: 0 });
