/**
 * A person's decisions and the stored list: adopting a new list (keys join and leave, a person's
 * enable or disable from outside wins over what the server held), and the rests a person's
 * enable-key or a background GET /key showing credits again may end.
 */
import { accountIdOf } from "./account-state.ts";
import { apply } from "./changes.ts";
import { describeCleared } from "./rests.ts";
import type { PoolCore } from "./pool-core.ts";
import type { KeyRecord } from "./schema.ts";

/**
 * Ends the rests of the key's account (and of the key itself) that `by` may end: a person's
 * enable-key (`person`: all but a known daily limit), or a background GET /key showing credits
 * again (`credits`). Describes those that had not ended yet.
 */
export function endRests(core: PoolCore, keyId: string, by: "person" | "credits"): string[] {
  const key = core.byId.get(keyId);
  if (!key) return [];
  const account = accountIdOf(key);
  const before = core.accounts.get(account)?.rests ?? [];
  if (core.decide([{ kind: "rests-cleared", account, keyId, by }]).length === 0) return [];
  const after = new Set(core.accounts.get(account)?.rests);
  const at = core.now();
  const described = before.filter((rest) => !after.has(rest) && rest.until > at).map(describeCleared);
  if (described.length > 0) core.events?.emit("account.rests-cleared", { account, keyId, cleared: described });
  return described;
}

/** Adopts a stored list: new keys join, missing ones leave, known ones keep runtime state. */
export function replaceKeys(core: PoolCore, records: readonly KeyRecord[]): void {
  const { events } = core;
  const previous = core.byId;
  const firstLoad = !core.loaded; // the keys found at startup were not "added"
  core.loaded = true;
  const enabledByPerson: KeyRecord[] = [];
  core.keys = records.map((record) => {
    const known = previous.get(record.id);
    if (!known) {
      if (!firstLoad) {
        if (core.holdAddedKeys) core.pending.add(record.id);
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
        // Counters are not a decision, and this server is their only writer: its count stays.
        requests: known.requests,
        successes: known.successes,
        failures: known.failures,
        lastUsedAt: Math.max(record.lastUsedAt, known.lastUsedAt),
        ...(record.account === undefined && known.account !== undefined ? { account: known.account } : {}),
        ...(record.keyLimit || !known.keyLimit ? {} : { keyLimit: known.keyLimit }),
      };
    }
    // Same key, no reset by a person: keep the runtime state held here, adopt the rest.
    known.label = record.label;
    known.extra = record.extra;
    if (record.keyLimit && record.keyLimit.checkedAt > (known.keyLimit?.checkedAt ?? 0)) known.keyLimit = record.keyLimit;
    // The stored list's fact, applied as heard (not a decision of this pool: nothing to publish).
    if (record.account !== undefined && known.account === undefined) apply(core, { kind: "key-account", keyId: known.id, account: record.account });
    return known;
  });
  core.byId = new Map(core.keys.map((key) => [key.id, key]));
  for (const id of previous.keys()) {
    if (core.byId.has(id)) continue;
    core.pending.delete(id);
    core.chooser.dropped(id);
    events?.emit("key.removed", { keyId: id });
  }
  core.lastStamp = Math.max(core.lastStamp, ...core.keys.map((key) => key.lastUsedAt));
  // An enable-key from outside (the CLI edits the file) clears the account's rests here too:
  // the server's memory is what gets written back.
  for (const record of enabledByPerson) endRests(core, record.id, "person");
}
