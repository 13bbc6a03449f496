/**
 * Two servers on one keys file (issue 14, point 1): the merge rules of changes.ts applied to the
 * file's fields, so that neither server's save erases what the other learned.
 *
 * A save no longer writes "everything I hold" over the file. Against what the file holds now
 * (`theirs`), what this process holds (`mine`) and what the file held when this process last read
 * or wrote it (the `base`), it keeps:
 * - "until" instants (key cooldown, disabled-since, account and model rests) by **max**: nobody
 *   shortens a rest, except a rest that is gone from one side while the other still has it as the
 *   base had it (a person's enable-key, an account that can pay again): that removal is news;
 * - counters (requests, successes, failures; an account's free-model requests per UTC day) as
 *   the file's total plus this process's **delta** since its base: no total is overwritten;
 * - a person's edits (the key list, labels, a reset by enable/disable-key, marked by `resetAt`) as
 *   the file has them: they win over either server's runtime state.
 *
 * The same rules bring another process's save into this one's memory (the store's watch sees the
 * file change): then `theirs` is the file and `mine` the pool; the file's totals become the new base.
 * Pure functions: no I/O, no clock but the `now` given.
 */
import type { AccountRest, AccountState, FreeBudget } from "./account-state.ts";
import type { KeyCounts, KeyRecord } from "./schema.ts";

export const countsOf = (record: KeyCounts): KeyCounts => ({ requests: record.requests, successes: record.successes, failures: record.failures });

const zeroCounts: KeyCounts = { requests: 0, successes: 0, failures: 0 };

/**
 * The file's total plus what `mine` counted beyond `base` (never below zero). A total below the base
 * is a copy older than what was read before (an editor saving what it loaded a while ago): the
 * base was in the file, so it counts from there.
 */
function addDelta(theirs: number, mine: number, base: number): number {
  return Math.max(0, Math.max(theirs, base) + (mine - base));
}

/**
 * One key's state: `theirs` and `mine` merged, counters on top of `base` (what `mine` counted
 * beyond it is its own news). The list fields (label, extra fields, addedAt, resetAt) are theirs.
 * `synced` of the result is `theirs`' counts: the caller that writes the result sets its own.
 */
export function mergeKey(theirs: KeyRecord, mine: KeyRecord, base: KeyCounts = mine.synced ?? zeroCounts): KeyRecord {
  // A person reset the key (enable-key, disable-key) since `mine` read it: their decision wins over
  // what this process learned before it. Counters are not a decision: they still add up.
  const personDecided = theirs.resetAt !== mine.resetAt;
  const cooling = personDecided || theirs.cooldownUntil > mine.cooldownUntil ? theirs : mine;
  const disabled = personDecided ? theirs.disabled : latest(mine.disabled, theirs.disabled);
  const account = mine.account ?? theirs.account;
  // What GET /key said last, whoever asked (add-key writes it; the server learns it too).
  const keyLimit = (theirs.keyLimit?.checkedAt ?? 0) > (mine.keyLimit?.checkedAt ?? 0) ? theirs.keyLimit : mine.keyLimit;
  const { cooldownSource: _source, cooldownReason: _reason, disabled: _disabled, account: _account, keyLimit: _keyLimit, ...list } = theirs;
  return {
    ...list,
    ...(account === undefined ? {} : { account }),
    ...(keyLimit === undefined ? {} : { keyLimit }),
    cooldownUntil: cooling.cooldownUntil,
    ...(cooling.cooldownSource === undefined ? {} : { cooldownSource: cooling.cooldownSource }),
    ...(cooling.cooldownReason === undefined ? {} : { cooldownReason: cooling.cooldownReason }),
    ...(disabled === undefined ? {} : { disabled }),
    // The failure streak is this process's own (it decides when to disable on it), unless a person reset it.
    consecutiveFailures: personDecided ? theirs.consecutiveFailures : mine.consecutiveFailures,
    lastUsedAt: Math.max(theirs.lastUsedAt, mine.lastUsedAt),
    requests: addDelta(theirs.requests, mine.requests, base.requests),
    successes: addDelta(theirs.successes, mine.successes, base.successes),
    failures: addDelta(theirs.failures, mine.failures, base.failures),
    synced: countsOf(theirs),
  };
}

/**
 * A person's reset replaces a key's record with the file's (key-edits.ts): the counters this
 * process counted and had not saved yet are carried onto it, its base becomes the file's.
 */
export function carryUnsaved(record: KeyRecord, known: KeyRecord): KeyCounts & { synced: KeyCounts } {
  const base = known.synced ?? zeroCounts;
  return {
    requests: addDelta(record.requests, known.requests, base.requests),
    successes: addDelta(record.successes, known.successes, base.successes),
    failures: addDelta(record.failures, known.failures, base.failures),
    synced: record.synced ?? countsOf(record),
  };
}

/** Of two "disabled since" facts, the later one (disabled-since merges by max). */
function latest(a: KeyRecord["disabled"], b: KeyRecord["disabled"]): KeyRecord["disabled"] {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return b.at > a.at ? b : a;
}

/**
 * What a save writes for the keys: the stored list decides which keys exist (a person's add or
 * remove), each known key merged with the server's. The result's totals are what the file will
 * hold: the server's new base.
 */
export function mergeKeysForSave(theirs: readonly KeyRecord[], ours: readonly KeyRecord[]): KeyRecord[] {
  const oursById = new Map(ours.map((record) => [record.id, record]));
  return theirs.map((stored) => {
    const mine = oursById.get(stored.id);
    const merged = mine === undefined ? stored : mergeKey(stored, mine);
    return { ...merged, synced: countsOf(merged) };
  });
}

/** The identity of a rest: one per scope, class, model and key in an account (as changes.ts keeps them). */
const restId = (rest: AccountRest): string => `${rest.scope}\u0000${rest.modelClass}\u0000${rest.model ?? ""}\u0000${rest.keyId ?? ""}`;

/**
 * The accounts (rests, free-model counts) of `theirs` and `mine`, three-way against `base`. An
 * account or rest missing from `mine` that `base` had as `theirs` has it was removed here (a rest
 * cleared, a stand-in account `key:<id>` moved to the real one): it goes. Rests that are over are
 * dropped.
 */
export function mergeAccounts(
  theirs: ReadonlyMap<string, AccountState>,
  mine: ReadonlyMap<string, AccountState>,
  base: ReadonlyMap<string, AccountState>,
  now: number,
): Map<string, AccountState> {
  const merged = new Map<string, AccountState>();
  for (const id of new Set([...theirs.keys(), ...mine.keys()])) {
    const state = mergeAccount(theirs.get(id), mine.get(id), base.get(id), now);
    // Nothing left to say (a stand-in account whose count moved to the real one): no entry.
    const said = state.rests.length > 0 || (state.free !== undefined && (state.free.used > 0 || state.free.limit !== undefined));
    if (said) merged.set(id, state);
  }
  return merged;
}

function mergeAccount(theirs: AccountState | undefined, mine: AccountState | undefined, base: AccountState | undefined, now: number): AccountState {
  const byId = (rests: readonly AccountRest[] | undefined) => new Map((rests ?? []).map((rest) => [restId(rest), rest]));
  const their = byId(theirs?.rests);
  const my = byId(mine?.rests);
  const based = byId(base?.rests);
  const rests: AccountRest[] = [];
  for (const id of new Set([...their.keys(), ...my.keys()])) {
    const t = their.get(id);
    const m = my.get(id);
    const b = based.get(id);
    let kept: AccountRest | undefined;
    if (t !== undefined && m !== undefined) kept = t.until > m.until ? t : m;
    // Gone on one side, as the base had it on the other: removed by that side. Else it is news.
    else if (m !== undefined) kept = b !== undefined && m.until <= b.until ? undefined : m;
    else if (t !== undefined) kept = b !== undefined && t.until <= b.until ? undefined : t;
    if (kept !== undefined && kept.until > now) rests.push(kept);
  }
  const free = mergeFree(theirs?.free, mine?.free, base?.free);
  return { rests, ...(free === undefined ? {} : { free }) };
}

/**
 * An account's free-model count of the latest UTC day either side knows: theirs plus what mine
 * counted that day beyond the base (a day the base did not count starts at zero). The limit is the
 * one mine learned since the base, else theirs.
 */
function mergeFree(theirs: FreeBudget | undefined, mine: FreeBudget | undefined, base: FreeBudget | undefined): FreeBudget | undefined {
  const day = [theirs?.day, mine?.day].filter((each): each is string => each !== undefined).sort().at(-1);
  if (day === undefined) return undefined;
  const on = (budget: FreeBudget | undefined) => (budget?.day === day ? budget : undefined);
  const used = addDelta(on(theirs)?.used ?? 0, on(mine)?.used ?? 0, on(base)?.used ?? 0);
  const mineLearned = mine?.limit !== undefined && mine.limit !== base?.limit;
  const limit = mineLearned ? mine?.limit : (theirs?.limit ?? mine?.limit);
  return { day, used, ...(limit === undefined ? {} : { limit }) };
}

/**
 * The accounts a server hands its store to save: its own, each carrying the base it merges against
 * (`synced`), and the accounts of the base it no longer holds as empty ones (so their removal is
 * seen). Inside the one map, a store wrapper that passes the accounts on passes the base too.
 */
export function accountsWithBase(mine: ReadonlyMap<string, AccountState>, base: ReadonlyMap<string, AccountState>): Map<string, AccountState> {
  const out = new Map<string, AccountState>();
  for (const [id, state] of mine) {
    const synced = base.get(id);
    out.set(id, synced === undefined ? state : { ...state, synced });
  }
  for (const [id, synced] of base) if (!out.has(id)) out.set(id, { rests: [], synced });
  return out;
}

/** What a save writes for the accounts: the file's merged with the server's, against the base each carries. */
export function mergeAccountsForSave(theirs: ReadonlyMap<string, AccountState>, sent: ReadonlyMap<string, AccountState>, now: number): Map<string, AccountState> {
  const mine = new Map<string, AccountState>();
  const base = new Map<string, AccountState>();
  for (const [id, { synced, ...state }] of sent) {
    mine.set(id, state);
    if (synced !== undefined) base.set(id, synced);
  }
  return mergeAccounts(theirs, mine, base, now);
}

/** Accounts as a store holds them: no `synced` bases (a store that echoes what it was sent passes them back). */
export function withoutBase(accounts: ReadonlyMap<string, AccountState>): Map<string, AccountState> {
  const out = new Map<string, AccountState>();
  for (const [id, { synced: _synced, ...state }] of accounts) if (state.rests.length > 0 || state.free !== undefined) out.set(id, state);
  return out;
}
