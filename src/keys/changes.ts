/**
 * Key state as changes that merge (issue 14, docs/state-model.md). Every decision the
 * pool makes leaves it as one small `StateChange`; any instance (or the CLI, or a store) applies
 * changes made elsewhere with `applyChange`, and the result does not depend on the order in which
 * changes arrive, nor on a change arriving twice where the rule is idempotent:
 *
 * - an instant ("until": key cooldown, account rest, model-on-account rest; disabled-since;
 *   last used) merges by **max**: a rest is never shortened by anyone;
 * - a counter (requests, successes, failures, tokens, cost; free-model requests per account per
 *   UTC day) merges by **sum of deltas**: a total is never overwritten. (Deltas are not
 *   idempotent: the transport delivers each one once, see store/redis/connection.ts.)
 * - a person's edit (add, remove, enable, disable, label) carries a `version` and wins over what
 *   the pool learned: enabling a key at version v drops every runtime fact learned on a basis
 *   older than v, whichever order the enable and those facts arrive in.
 *
 * Pure: `applyChange` returns a new state and never mutates its input (maps are copied on write).
 * Reads never change state either: expiry is decided from `now` by the reader, never written.
 */
import { emptyRuntime, STREAK_CAP, type AccountRuntime, type Cause, type Instant, type KeyListEntry, type KeyRuntime, type PoolState, type StateChange } from "./pool-state.ts";

export type { AccountRuntime, Cause, CounterDelta, Instant, KeyEdit, KeyListEntry, KeyRuntime, PoolState, StateChange } from "./pool-state.ts";
export { emptyPoolState, emptyRuntime, STREAK_CAP } from "./pool-state.ts";

/**
 * The later of two instants, keeping the later one's cause. Equal instants are ordered by their
 * cause's text, so every instance keeps the same one whichever arrived first.
 */
export function maxInstant<T extends Instant>(current: T | undefined, incoming: T): T {
  if (current === undefined || incoming.until > current.until) return incoming;
  if (incoming.until < current.until) return current;
  return causeText(incoming) > causeText(current) ? incoming : current;
}

/** A cause as one string: the tie-break order, and how Redis stores it (store/redis/scripts.ts). */
export const causeText = (cause: Cause): string => `${cause.source}\u0000${cause.reason}`;

export function causeFromText(text: string): Cause {
  const split = text.indexOf("\u0000");
  return split < 0 ? { source: "unknown", reason: text } : { source: text.slice(0, split), reason: text.slice(split + 1) };
}

export function applyChanges(state: PoolState, changes: Iterable<StateChange>): PoolState {
  let next = state;
  for (const change of changes) next = applyChange(next, change);
  return next;
}

export function applyChange(state: PoolState, change: StateChange): PoolState {
  switch (change.kind) {
    case "key-edit":
      return applyEdit(state, change);
    case "key-cooldown":
      return onRuntime(state, change.keyId, change.basis, (rt) => {
        const cooldown = maxInstant(rt.cooldown, { until: change.until, source: change.source, reason: change.reason });
        return cooldown === rt.cooldown ? rt : { ...rt, cooldown };
      });
    case "key-disabled":
      return onRuntime(state, change.keyId, change.basis, (rt) =>
        rt.disabled !== undefined &&
        (rt.disabled.since > change.since || (rt.disabled.since === change.since && rt.disabled.reason >= change.reason))
          ? rt
          : { ...rt, disabled: { since: change.since, reason: change.reason } },
      );
    case "key-failure":
      return onRuntime(state, change.keyId, change.basis, (rt) => {
        // A failure at or before the last success belongs to a streak that success ended.
        if (change.at <= rt.streak.lastSuccessAt) return rt;
        const failures = [...rt.streak.failures, change.at].sort((a, b) => a - b).slice(-STREAK_CAP);
        return { ...rt, streak: { lastSuccessAt: rt.streak.lastSuccessAt, failures } };
      });
    case "key-success":
      return onRuntime(state, change.keyId, change.basis, (rt) => {
        // A success ends only the failures before it: a late-arriving older success keeps newer ones.
        if (change.at <= rt.streak.lastSuccessAt) return rt;
        return { ...rt, streak: { lastSuccessAt: change.at, failures: rt.streak.failures.filter((at) => at > change.at) } };
      });
    case "key-counters":
      return onRuntime(state, change.keyId, undefined, (rt) => {
        const d = change.delta;
        return {
          ...rt,
          requests: rt.requests + (d.requests ?? 0),
          successes: rt.successes + (d.successes ?? 0),
          failures: rt.failures + (d.failures ?? 0),
          tokens: rt.tokens + (d.tokens ?? 0),
          cost: rt.cost + (d.cost ?? 0),
          lastUsedAt: Math.max(rt.lastUsedAt, change.lastUsedAt ?? 0),
        };
      });
    case "key-account": {
      // A fact about the key's secret, kept through removal; conflicting reports settle the same way everywhere.
      const entry = state.keys.get(change.keyId) ?? blankEntry(change.keyId);
      const account = maxText(entry.account, change.account);
      if (account === entry.account) return state;
      return { ...state, keys: withEntry(state.keys, change.keyId, { ...entry, account }) };
    }
    case "account-rest":
    case "model-rest": {
      const id = change.kind === "account-rest" ? `class:${change.modelClass}` : `model:${change.model}`;
      const account: AccountRuntime = state.accounts.get(change.account) ?? { rests: new Map() };
      const current = account.rests.get(id);
      const incoming =
        change.kind === "account-rest"
          ? { scope: "account" as const, modelClass: change.modelClass, until: change.until, source: change.source, reason: change.reason }
          : { scope: "model" as const, model: change.model, until: change.until, source: change.source, reason: change.reason };
      if (maxInstant(current, incoming) === current) return state;
      const rests = new Map(account.rests).set(id, incoming);
      return { ...state, accounts: withEntry(state.accounts, change.account, { ...account, rests }) };
    }
    case "free-requests":
    case "free-limit": {
      const account: AccountRuntime = state.accounts.get(change.account) ?? { rests: new Map() };
      const free = applyFree(account.free, change);
      if (free === account.free) return state;
      return { ...state, accounts: withEntry(state.accounts, change.account, { ...account, free }) };
    }
  }
}

/** UTC days as YYYY-MM-DD compare as strings. A new day starts from zero; an older day's news is void. */
function applyFree(
  free: AccountRuntime["free"],
  change: Extract<StateChange, { kind: "free-requests" | "free-limit" }>,
): AccountRuntime["free"] {
  if (free !== undefined && change.day < free.day) return free;
  const today = free !== undefined && free.day === change.day ? free : { day: change.day, used: 0 };
  if (change.kind === "free-requests") return { ...today, used: today.used + change.delta };
  // The latest lesson about a limit wins (a top-up raises it; a 429 teaches where it is).
  const learnedAt = today.limitLearnedAt;
  if (learnedAt !== undefined && (learnedAt > change.learnedAt || (learnedAt === change.learnedAt && (today.limit ?? 0) >= change.limit))) return free;
  return { ...today, limit: change.limit, limitLearnedAt: change.learnedAt };
}

/**
 * Applies `update` to a key's runtime facts. With a `basis`: a fact on an older basis than the
 * key's is dropped; a fact on a newer basis than we know (its instance saw a person's edit that
 * has not reached us yet) first clears what that edit will clear, so arrival order cannot matter.
 */
function onRuntime(state: PoolState, keyId: string, basis: number | undefined, update: (rt: KeyRuntime) => KeyRuntime): PoolState {
  // A removed key's facts are kept (a removal is a switch: older facts are void by their basis),
  // so a fact that arrives before the removal or after it leaves the same state.
  const entry = state.keys.get(keyId);
  let rt = state.runtime.get(keyId) ?? emptyRuntime(entry?.switchVersion ?? 0);
  if (basis !== undefined) {
    if (basis < rt.basis) return state;
    if (basis > rt.basis) rt = resetRuntime(rt, basis);
  }
  const next = update(rt);
  if (next === state.runtime.get(keyId)) return state;
  return { ...state, runtime: withEntry(state.runtime, keyId, next) };
}

/** What a person's switch (add, remove, enable, disable) clears: cooldown, disabled, the failure streak. Counters stay. */
function resetRuntime(rt: KeyRuntime, basis: number): KeyRuntime {
  const { cooldown: _cooldown, disabled: _disabled, ...kept } = rt;
  return { ...kept, basis, streak: { lastSuccessAt: 0, failures: [] } };
}

function applyEdit(state: PoolState, change: Extract<StateChange, { kind: "key-edit" }>): PoolState {
  const { keyId: id, version: v } = change;
  const entry = state.keys.get(id) ?? blankEntry(id);
  const next: KeyListEntry = { ...entry, version: Math.max(entry.version, v) };
  const takeSwitch = (disabled?: { at: number; reason: string }): void => {
    if (v <= next.switchVersion) return;
    next.switchVersion = v;
    if (disabled) next.personDisabled = disabled;
    else delete next.personDisabled;
  };
  switch (change.edit) {
    case "add":
      if (v <= entry.addVersion) return state;
      next.addVersion = v;
      next.secret = change.secret;
      next.addedAt = change.addedAt;
      if (change.account !== undefined) next.account = maxText(next.account, change.account);
      takeSwitch();
      if (v > next.labelVersion) {
        next.labelVersion = v;
        if (change.label === undefined) delete next.label;
        else next.label = change.label;
      }
      break;
    case "remove":
      if (v <= entry.removeVersion) return state;
      next.removeVersion = v;
      takeSwitch(); // what the pool learned before the removal is void for a key added again later
      break;
    case "enable":
    case "disable":
      if (v <= entry.switchVersion) return state;
      takeSwitch(change.edit === "disable" ? { at: change.at, reason: change.reason } : undefined);
      break;
    case "label":
      if (v <= entry.labelVersion) return state;
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
  let runtime = state.runtime;
  const rt = runtime.get(id);
  if (rt !== undefined && rt.basis < next.switchVersion) {
    const reset = resetRuntime(rt, next.switchVersion);
    // Nothing left but the basis, which the entry's switch version already says: no entry, as
    // when the void facts arrive after the switch and are dropped.
    runtime = isBlank(reset) ? without(runtime, id) : withEntry(runtime, id, reset);
  }
  return { ...state, keys: withEntry(state.keys, id, next), runtime };
}

const isBlank = (rt: KeyRuntime): boolean =>
  rt.requests === 0 && rt.successes === 0 && rt.failures === 0 && rt.tokens === 0 && rt.cost === 0 && rt.lastUsedAt === 0;

function without<V>(map: ReadonlyMap<string, V>, id: string): ReadonlyMap<string, V> {
  const copy = new Map(map);
  copy.delete(id);
  return copy;
}

const blankEntry = (id: string): KeyListEntry => ({ id, secret: "", addedAt: 0, removed: true, version: 0, addVersion: 0, removeVersion: 0, switchVersion: 0, labelVersion: 0 });

/** Of two texts for one fact (an account id), the same one whatever the order: the greater. */
const maxText = (current: string | undefined, incoming: string): string => (current !== undefined && current >= incoming ? current : incoming);

function withEntry<V>(map: ReadonlyMap<string, V>, id: string, value: V): Map<string, V> {
  return new Map(map).set(id, value);
}

/** What a reader derives at `now` (never written back): is the key usable, and until when not. */
export function keyBlockedUntil(state: PoolState, keyId: string, now: number): number | "disabled" | "removed" | undefined {
  const entry = state.keys.get(keyId);
  if (entry === undefined || entry.removed) return "removed";
  if (entry.personDisabled) return "disabled";
  const rt = state.runtime.get(keyId);
  if (rt === undefined || rt.basis < entry.switchVersion) return undefined;
  if (rt.disabled) return "disabled";
  return rt.cooldown !== undefined && rt.cooldown.until > now ? rt.cooldown.until : undefined;
}
