/**
 * What the pool shows: copies of its records, each key's status and view, the accounts' views,
 * and the counts by state that /readyz and the metrics gauge report. All of it reads through
 * key-status.ts and writes nothing.
 */
import { viewAccounts, viewKey, type AccountView, type KeyView } from "./key-view.ts";
import { countByState, keyStatus, type KeyState, type KeyStatus } from "./key-status.ts";
import type { PoolCore } from "./pool-core.ts";
import type { KeyRecord } from "./schema.ts";

export interface Availability extends Record<KeyState, number> {
  total: number;
  /** Keys that can serve some request now: `active` and `limited` ones. */
  available: number;
  /** When the first cooling or resting key returns (known times only); absent when none will by itself. */
  nextAvailableAt?: number;
}

export function availability(core: PoolCore): Availability {
  const at = core.now();
  const { accounts } = core;
  const counts: Record<KeyState, number> = { active: 0, limited: 0, resting: 0, cooling: 0, disabled: 0 };
  let nextAvailableAt = Infinity;
  for (const key of core.keys) {
    const status = keyStatus(key, accounts, at);
    counts[status.state]++;
    if (status.state === "cooling" || status.state === "resting") nextAvailableAt = Math.min(nextAvailableAt, status.until);
  }
  const available = counts.active + counts.limited;
  return { total: core.keys.length, available, ...counts, ...(Number.isFinite(nextAvailableAt) ? { nextAvailableAt } : {}) };
}

export const statusOf = (core: PoolCore, record: KeyRecord): KeyStatus => keyStatus(record, core.accounts, core.now());

export const keysByState = (core: PoolCore): Record<KeyState, number> => countByState(core.keys, core.accounts, core.now());

export const keyViews = (core: PoolCore): KeyView[] => {
  const at = core.now();
  return core.keys.map((key) => viewKey(key, core.accounts, at));
};

export const accountViews = (core: PoolCore): AccountView[] => viewAccounts(core.keys, core.accounts, core.now());

export const records = (core: PoolCore): KeyRecord[] => core.keys.map((key) => ({ ...key }));
