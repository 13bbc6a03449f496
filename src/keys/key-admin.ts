/**
 * People's changes to the key list, as pure functions over a stored document: the CLI and the
 * admin API run them inside `store.update`, so both behave the same and neither touches files.
 */
import { keyIdOf } from "../domain/key-identity.ts";
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
  account?: string,
): { doc: KeyFileDocument; outcome: AddOutcome; record: KeyRecord } {
  const id = keyIdOf(secret);
  const existing = doc.records.find((record) => record.id === id);
  if (!existing) {
    const record = { ...newKeyRecord(secret, now, label), ...(account === undefined ? {} : { account }) };
    return { doc: { ...doc, records: [...doc.records, record] }, outcome: "added", record };
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

/** Clears disabled, failures and cooldown. */
export function enableKey(doc: KeyFileDocument, id: string, now: number): { doc: KeyFileDocument; record?: KeyRecord } {
  const existing = doc.records.find((record) => record.id === id);
  if (!existing) return { doc };
  const record = reset(existing, now);
  return { doc: replace(doc, record), record };
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
