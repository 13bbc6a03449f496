/**
 * How the pool takes in what another server saved to the shared keys file, once file-merge.ts has
 * merged it with the pool's own state: a cooldown or a disable only ever added (never shortened),
 * the counters and their base as merged.
 */
import { copyAccounts, type AccountState } from "./account-state.ts";
import type { PoolCore } from "./pool-core.ts";
import type { KeyRecord } from "./schema.ts";

/** The pool's entry: each known key takes its merged state; the accounts are the merged ones. */
export function adoptState(core: PoolCore, records: readonly KeyRecord[], accounts: ReadonlyMap<string, AccountState>): void {
  const at = core.now();
  for (const record of records) {
    const key = core.byId.get(record.id);
    if (key === undefined) continue;
    if (adoptKeyState(key, record, at)) core.chooser.dropped(key.id);
    core.lastStamp = Math.max(core.lastStamp, key.lastUsedAt);
  }
  core.accounts = copyAccounts(accounts);
}

/** Updates `key` in place from `merged`; true when it can no longer be chosen (the chooser must forget it). */
export function adoptKeyState(key: KeyRecord, merged: KeyRecord, now: number): boolean {
  let blocked = false;
  // A cooldown already over would only be cleared again (and logged as a recovery twice).
  if (merged.cooldownUntil > key.cooldownUntil && merged.cooldownUntil > now) {
    key.cooldownUntil = merged.cooldownUntil;
    if (merged.cooldownSource === undefined) delete key.cooldownSource;
    else key.cooldownSource = merged.cooldownSource;
    if (merged.cooldownReason === undefined) delete key.cooldownReason;
    else key.cooldownReason = merged.cooldownReason;
    blocked = true;
  }
  if (merged.disabled !== undefined && key.disabled === undefined) {
    key.disabled = merged.disabled;
    blocked = true;
  }
  key.lastUsedAt = Math.max(key.lastUsedAt, merged.lastUsedAt);
  key.requests = merged.requests;
  key.successes = merged.successes;
  key.failures = merged.failures;
  if (merged.synced === undefined) delete key.synced;
  else key.synced = merged.synced;
  return blocked;
}
