/**
 * The key list in Redis behind the `KeyStore` interface, so the server's sync, the admin API and
 * every CLI subcommand work on it unchanged when REDIS_URL is set. Only the key list (what people
 * edit) goes through here: a person's change (`update`) is turned into key-list edits (add, remove,
 * enable, disable, label: key-list.ts numbers and merges them) and published, and every instance
 * reloads the list when it hears one. What the pool learns (cooldowns, failures, rests, counts)
 * travels as changes through shared-pool.ts: the server's sync only adopts the list from here.
 *
 * A record's `resetAt` here is the key's switch version (its last add/enable/disable by a person),
 * not a time: the pool only compares it, and runtime facts name it as their basis.
 */
import { displayUrl } from "../../domain/redact.ts";
import type { KeyStore, StoreLoad } from "../ports.ts";
import type { KeyEdit, KeyListEntry } from "../../keys/state-change.ts";
import type { KeyRecord } from "../../keys/schema.ts";
import { readSharedSnapshot, type SharedSnapshot } from "./shared-snapshot.ts";
import type { SharedState } from "./shared-state.ts";
import { backedReload } from "./subscription.ts";
import { utcDayOf } from "../../keys/account-state.ts";

export interface RedisKeyStoreOptions {
  shared: SharedState;
  url: string;
  now?: () => number;
  /** How often the list is reloaded even when no edit was heard. */
  backstopMs?: number;
}

export function createRedisKeyStore({ shared, url, now = Date.now, backstopMs = 5_000 }: RedisKeyStoreOptions): KeyStore {
  const name = `Redis at ${displayUrl(url)} (key list ${shared.keys.keyList})`;
  let entries = new Map<string, KeyListEntry>();

  const failed = (message: string): StoreLoad => ({ ok: false, kind: "io", message: `cannot read the key list from ${name}: ${message}` });

  const load = async (): Promise<StoreLoad> => {
    const list = await shared.keyList.load();
    if (!list.ok) return list.failure === "secret" ? { ok: false, kind: "invalid", message: list.message } : failed(list.message);
    const present = list.value.filter((entry) => !entry.removed);
    const snapshot = await readSharedSnapshot(shared.connection, shared.keys, { keyIds: present.map((entry) => entry.id), day: utcDayOf(now()) });
    if (!snapshot.ok) return failed(snapshot.message);
    entries = new Map(list.value.map((entry) => [entry.id, entry]));
    const records = present.map((entry) => recordOf(entry, snapshot.value, now()));
    return { ok: true, doc: { records, accounts: new Map(), extraTopLevel: {} }, exists: present.length > 0 };
  };

  return {
    name,
    load,

    async update(change) {
      const before = await load();
      if (!before.ok) return before;
      const after = change(before.doc);
      for (const [keyId, edit] of editsBetween(before.doc.records, after.records, now())) {
        const result = await shared.keyList.edit(keyId, edit);
        if (!result.ok) return result.failure === "secret" ? { ok: false, kind: "invalid", message: result.message } : { ok: false, kind: "io", message: `cannot change the key list in ${name}: ${result.message}` };
        if (!result.value.applied) continue;
        // A person's enable also ends the account's rests in Redis (not the free-model class, where
        // a known daily limit lives), as it does in each pool (key-admin.ts), or the next resync
        // would bring them back.
        const account = result.value.entry.account;
        if (edit.edit === "enable" && account !== undefined) await clearAccountRests(shared, account);
        await shared.publish(result.value.change);
      }
      return load();
    },

    watch(onChange) {
      const { reload, stop } = backedReload(async () => {
        const held = [...entries.values()];
        let result = await load();
        // Redis came back empty (restarted without persistence): put the list back as this
        // instance holds it, versions and all, rather than dropping every key. An empty Redis and
        // nothing held from it (this instance started on KEYS_FILE while Redis was away): keep
        // serving the keys in memory, adopt nothing.
        if (result.ok && entries.size === 0) {
          if (held.length === 0) return;
          if ((await shared.keyList.restore(held)).ok) result = await load();
        }
        onChange(result);
      }, backstopMs);
      const offChange = shared.onRemoteChange((remote) => {
        if (remote.kind === "key-edit") reload();
      });
      const offResync = shared.onResync(reload);
      return () => {
        stop();
        offChange();
        offResync();
      };
    },
  };
}

async function clearAccountRests(shared: SharedState, account: string): Promise<void> {
  const members = await shared.connection.send("ZRANGE", [shared.keys.accountRest, "0", "-1"]);
  if (!members.ok || !Array.isArray(members.value)) return;
  const ended = members.value.map(String).filter((member) => member.startsWith(`${account}|`) && member !== `${account}|class:free`);
  if (ended.length > 0) await shared.connection.send("ZREM", [shared.keys.accountRest, ...ended]);
}

/** A stored entry as the pool holds a key, with what Redis knows of its runtime state. */
function recordOf(entry: KeyListEntry, snapshot: SharedSnapshot, at: number): KeyRecord {
  const basisOk = (basis: number): boolean => basis >= entry.switchVersion;
  let cooldown: { until: number; source: string; reason: string } | undefined;
  let disabled: { reason: string; at: number } | undefined = entry.personDisabled;
  for (const instant of snapshot.instants) {
    if (instant.kind === "key-cooldown" && instant.keyId === entry.id && basisOk(instant.basis) && instant.until > at) cooldown = instant;
    if (instant.kind === "key-disabled" && instant.keyId === entry.id && basisOk(instant.basis) && disabled === undefined) disabled = { reason: instant.reason, at: instant.since };
  }
  const totals = snapshot.totals.get(entry.id);
  const source = cooldown?.source;
  return {
    id: entry.id,
    secret: entry.secret,
    ...(entry.label === undefined ? {} : { label: entry.label }),
    addedAt: entry.addedAt,
    resetAt: entry.switchVersion,
    ...(entry.account === undefined ? {} : { account: entry.account }),
    cooldownUntil: cooldown?.until ?? 0,
    ...(source === "header" || source === "body" || source === "retry-after" || source === "default" ? { cooldownSource: source } : {}),
    ...(cooldown ? { cooldownReason: cooldown.reason } : {}),
    consecutiveFailures: snapshot.streaks.get(entry.id) ?? 0,
    ...(disabled ? { disabled } : {}),
    lastUsedAt: totals?.lastUsedAt ?? 0,
    requests: totals?.requests ?? 0,
    successes: totals?.successes ?? 0,
    failures: totals?.failures ?? 0,
    extra: {},
    extraState: {},
  };
}

/** The person's edits that turn `before` into `after` (what a pure document change did). */
function editsBetween(before: readonly KeyRecord[], after: readonly KeyRecord[], at: number): Array<[string, KeyEdit]> {
  const edits: Array<[string, KeyEdit]> = [];
  const old = new Map(before.map((record) => [record.id, record]));
  const next = new Set(after.map((record) => record.id));
  for (const record of after) {
    const was = old.get(record.id);
    if (!was) {
      edits.push([record.id, { edit: "add", secret: record.secret, addedAt: record.addedAt || at, ...(record.label === undefined ? {} : { label: record.label }), ...(record.account === undefined ? {} : { account: record.account }) }]);
      continue;
    }
    // enable-key and disable-key move resetAt (key-admin.ts): a person's switch.
    if (record.resetAt !== was.resetAt || (record.disabled === undefined) !== (was.disabled === undefined)) {
      edits.push([record.id, record.disabled ? { edit: "disable", at: record.disabled.at, reason: record.disabled.reason } : { edit: "enable" }]);
    }
    if (record.label !== was.label) edits.push([record.id, { edit: "label", ...(record.label === undefined ? {} : { label: record.label }) }]);
  }
  for (const id of old.keys()) if (!next.has(id)) edits.push([id, { edit: "remove" }]);
  return edits;
}
