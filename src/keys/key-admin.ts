/**
 * People's changes to the key list, as pure functions over a stored document: the CLI and the
 * admin API run them inside `store.update`, so both behave the same and neither touches files.
 */
import { keyIdOf } from "../domain/key-identity.ts";
import { accountIdOf, utcDayOf, type AccountState } from "./account-state.ts";
import type { KeyFacts } from "./key-pool.ts";
import { clearableByPerson, describeCleared } from "./rests.ts";
import { newKeyRecord, type KeyFileDocument, type KeyRecord } from "./schema.ts";

export type AddOutcome = "added" | "present" | "re-enabled";

/** A cleared record: what enabling a key (or re-adding a disabled one) leaves. */
function reset(record: KeyRecord, now: number): KeyRecord {
  const { disabled: _disabled, cooldownSource: _source, cooldownReason: _reason, ...rest } = record;
  return { ...rest, resetAt: Math.max(now, (record.resetAt ?? 0) + 1), consecutiveFailures: 0, cooldownUntil: 0 };
}

export function addKey(
  doc: KeyFileDocument,
  secret: string,
  now: number,
  label?: string,
  facts: KeyFacts = {},
): { doc: KeyFileDocument; outcome: AddOutcome; record: KeyRecord } {
  const id = keyIdOf(secret);
  const existing = doc.records.find((record) => record.id === id);
  if (!existing) {
    // What GET /key said is stored with the key, so nothing has to guess before its first request.
    const record: KeyRecord = {
      ...newKeyRecord(secret, now, label),
      ...(facts.account === undefined ? {} : { account: facts.account }),
      ...(facts.keyLimit === undefined ? {} : { keyLimit: facts.keyLimit }),
    };
    return { doc: withFreeUse({ ...doc, records: [...doc.records, record] }, record, facts, now), outcome: "added", record };
  }
  if (!existing.disabled) return { doc, outcome: "present", record: existing };
  const record = reset(existing, now);
  return { doc: replace(doc, record), outcome: "re-enabled", record };
}

export function removeKey(doc: KeyFileDocument, id: string): { doc: KeyFileDocument; removed?: KeyRecord } {
  const removed = doc.records.find((record) => record.id === id);
  if (!removed) return { doc };
  return { doc: { ...doc, records: doc.records.filter((record) => record.id !== id) }, removed };
}

/** The account's free-model use today as GET /key told it (only ever raised: requests since count too). */
function withFreeUse(doc: KeyFileDocument, record: KeyRecord, facts: KeyFacts, now: number): KeyFileDocument {
  if (facts.freeUsed === undefined && facts.freeLimit === undefined) return doc;
  const id = accountIdOf(record);
  const day = utcDayOf(now);
  const before = doc.accounts.get(id);
  const used = Math.max(facts.freeUsed ?? 0, before?.free?.day === day ? before.free.used : 0);
  const limit = facts.freeLimit ?? before?.free?.limit;
  const state: AccountState = { rests: before?.rests ?? [], free: { day, used, ...(limit === undefined ? {} : { limit }) } };
  return { ...doc, accounts: new Map([...doc.accounts, [id, state]]) };
}

/**
 * Clears disabled, failures and cooldown, and the rests of the key's account that are not a known
 * daily limit (a person may know better: they added credits, changed a privacy setting); `cleared`
 * says which.
 */
export function enableKey(doc: KeyFileDocument, id: string, now: number): { doc: KeyFileDocument; record?: KeyRecord; cleared: string[] } {
  const existing = doc.records.find((record) => record.id === id);
  if (!existing) return { doc, cleared: [] };
  const record = reset(existing, now);
  const accountId = accountIdOf(existing);
  const state = doc.accounts.get(accountId);
  const cleared = (state?.rests ?? []).filter((rest) => rest.until > now && (rest.scope !== "key" || rest.keyId === id) && clearableByPerson(rest));
  const accounts =
    state && cleared.length > 0 ? new Map([...doc.accounts, [accountId, { ...state, rests: state.rests.filter((rest) => !cleared.includes(rest)) }]]) : doc.accounts;
  return { doc: { ...replace(doc, record), accounts }, record, cleared: cleared.map(describeCleared) };
}

export function disableKey(doc: KeyFileDocument, id: string, reason: string, now: number): { doc: KeyFileDocument; record?: KeyRecord } {
  const existing = doc.records.find((record) => record.id === id);
  if (!existing) return { doc };
  // A person's decision: it must win over the server's memory, like an enable does.
  const record: KeyRecord = { ...existing, resetAt: Math.max(now, (existing.resetAt ?? 0) + 1), disabled: { reason, at: now } };
  return { doc: replace(doc, record), record };
}

function replace(doc: KeyFileDocument, record: KeyRecord): KeyFileDocument {
  return { ...doc, records: doc.records.map((candidate) => (candidate.id === record.id ? record : candidate)) };
}

/** Records the accounts GET /key named (creator_user_id) for keys whose account was not known. */
export function setAccounts(doc: KeyFileDocument, accounts: ReadonlyMap<string, string>): KeyFileDocument {
  let changed = false;
  const records = doc.records.map((record) => {
    const account = accounts.get(record.id);
    if (account === undefined || record.account === account) return record;
    changed = true;
    return { ...record, account };
  });
  return changed ? { ...doc, records } : doc;
}
