/**
 * The key list in Redis (what people edit: add, remove, enable, disable, label), one JSON entry per
 * key in `<prefix>keys`, each edit numbered by `INCR <prefix>keys:version`. The merge rules are the
 * pure ones (keys/changes.ts): an edit reads the entry, applies the change in memory and writes it
 * back only if the entry is still what it read (compare-and-set in one script; it retries when
 * another edit landed in between), so Redis and every instance agree on the result.
 *
 * With KEYS_ENCRYPTION_KEY set, secrets are stored sealed (`enc:v1:…`, secret-box.ts, bound to
 * the key id), and the `key-edit` change handed back for publishing carries the sealed form too:
 * receivers open it with their own box. Loading never throws: a secret that cannot be opened is a
 * one-line error naming the variable.
 */
import { z } from "zod";
import { applyEdit } from "../../keys/changes.ts";
import type { KeyEdit, KeyListEntry, StateChange } from "../../keys/state-change.ts";
import type { SecretBox } from "../secret-box.ts";
import type { CallResult, RedisConnection } from "./connection.ts";
import type { RedisKeys } from "./redis-keys.ts";
import { luaScript, runScript, type SharedStateScripts } from "./scripts.ts";

// KEYS: the list hash. ARGV: key id, the entry as read ('' when absent), the new entry.
export const COMPARE_AND_SET = luaScript(`
local current = redis.call('HGET', KEYS[1], ARGV[1]) or ''
if current ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
`);

const StoredEntrySchema = z.object({
  id: z.string().min(1),
  secret: z.string(),
  label: z.string().optional(),
  addedAt: z.number(),
  account: z.string().optional(),
  removed: z.boolean(),
  version: z.number().int(),
  addVersion: z.number().int(),
  removeVersion: z.number().int(),
  switchVersion: z.number().int(),
  labelVersion: z.number().int(),
  personDisabled: z.object({ at: z.number(), reason: z.string() }).optional(),
});

/** A secret that could not be sealed or opened (KEYS_ENCRYPTION_KEY wrong or missing). */
export type KeyListResult<T> = CallResult<T> | { ok: false; failure: "secret"; message: string };

export type EditResult = { applied: false } | { applied: true; change: Extract<StateChange, { kind: "key-edit" }>; entry: KeyListEntry };

// KEYS: the list hash, the version counter, the switch hash. ARGV: key id, entry, its highest
// version, its switch version. Puts back an entry Redis lost (a restart without persistence), as
// it was: never over one that is there; the counter only rises.
export const RESTORE_ENTRY = luaScript(`
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
if tonumber(redis.call('GET', KEYS[2]) or '0') < tonumber(ARGV[3]) then redis.call('SET', KEYS[2], ARGV[3]) end
redis.call('HSETNX', KEYS[3], ARGV[1], ARGV[4])
return 1
`);

export interface RedisKeyList {
  /** Every key (tombstones of removed ones included), secrets opened. */
  load(): Promise<KeyListResult<KeyListEntry[]>>;
  /**
   * Applies a person's edit with the next version. `applied: false` when the rules leave the key
   * as it was (enabling an unknown key, adding one that is there: enable a disabled one instead).
   * The change is for publishing.
   */
  edit(keyId: string, edit: KeyEdit): Promise<KeyListResult<EditResult>>;
  /**
   * Puts entries back with their versions (an instance that holds the list, after Redis lost it),
   * so no instance mistakes them for a person's new edits. Entries already there are left alone.
   */
  restore(entries: readonly KeyListEntry[]): Promise<KeyListResult<number>>;
}

export interface RedisKeyListOptions {
  connection: RedisConnection;
  keys: RedisKeys;
  scripts: SharedStateScripts;
  box: SecretBox;
  /** Compare-and-set attempts before giving up (each one lost to another edit of the same key). */
  attempts?: number;
}

export function createRedisKeyList({ connection, keys, scripts, box, attempts = 20 }: RedisKeyListOptions): RedisKeyList {
  const listKey = keys.keyList;
  const versionKey = keys.keyListVersion;

  /** A secret as it is stored: sealed when KEYS_ENCRYPTION_KEY is set. */
  const stored = async (secret: string, keyId: string): Promise<KeyListResult<string>> => {
    if (!box.sealing) return { ok: true, value: secret };
    const sealed = await box.seal(secret, keyId);
    return sealed.ok ? sealed : { ok: false, failure: "secret", message: sealed.message };
  };

  return {
    async load() {
      const result = await connection.send("HGETALL", [listKey]);
      if (!result.ok) return result;
      const entries: KeyListEntry[] = [];
      for (const [id, text] of Object.entries((result.value ?? {}) as Record<string, unknown>)) {
        const entry = parseEntry(String(text));
        if (entry === undefined || entry.id !== id) continue; // not ours: never applied
        if (entry.removed) {
          entries.push(entry);
          continue;
        }
        const secret = await box.open(entry.secret, id);
        if (!secret.ok) return { ok: false, failure: "secret", message: secret.message };
        entries.push({ ...entry, secret: secret.value });
      }
      return { ok: true, value: entries };
    },

    async restore(list) {
      let restored = 0;
      for (const entry of list) {
        const secret = entry.removed ? { ok: true as const, value: entry.secret } : await stored(entry.secret, entry.id);
        if (!secret.ok) return secret;
        const result = await runScript(connection, RESTORE_ENTRY, [listKey, versionKey, keys.switchVersion], [entry.id, JSON.stringify({ ...entry, secret: secret.value }), String(entry.version), String(entry.switchVersion)]);
        if (!result.ok) return result;
        if (result.value === 1) restored += 1;
      }
      return { ok: true, value: restored };
    },

    async edit(keyId, plainEdit) {
      const secret = plainEdit.edit === "add" ? await stored(plainEdit.secret, keyId) : undefined;
      if (secret && !secret.ok) return secret;
      const edit = secret ? { ...plainEdit, secret: secret.value } : plainEdit;
      const version = await connection.send("INCR", [versionKey]);
      if (!version.ok) return version;
      const change: Extract<StateChange, { kind: "key-edit" }> = { kind: "key-edit", keyId, version: Number(version.value), ...edit };
      for (let attempt = 0; attempt < attempts; attempt++) {
        const read = await connection.send("HGET", [listKey, keyId]);
        if (!read.ok) return read;
        const before = typeof read.value === "string" ? read.value : "";
        const current = before === "" ? undefined : parseEntry(before);
        // Adding a key that is there is no edit (as `add-key` says "present"); re-adding a removed
        // one is. (The pure rule lets the newer add win, so instances agree whatever the order.)
        if (change.edit === "add" && current !== undefined && !current.removed) return { ok: true, value: { applied: false } };
        // Any other edit of a key that is not there is no edit either (the CLI says "no such key").
        if (change.edit !== "add" && (current === undefined || current.removed)) return { ok: true, value: { applied: false } };
        // The entry as stored is the starting state; the pure rules decide the rest.
        const entry = applyEdit(current, change);
        if (entry === undefined) return { ok: true, value: { applied: false } };
        const written = await runScript(connection, COMPARE_AND_SET, [listKey], [keyId, before, JSON.stringify(entry)]);
        if (!written.ok) return written;
        if (written.value !== 1) continue; // another edit of this key landed in between: read again
        // What the pool learned about the key before a person's add/enable/disable is void now.
        if (entry.switchVersion === change.version) await connection.write(scripts.enableKey(keyId, change.version));
        const opened = entry.removed ? { ok: true as const, value: "" } : await box.open(entry.secret, keyId);
        return { ok: true, value: { applied: true, change, entry: { ...entry, secret: opened.ok ? opened.value : entry.secret } } };
      }
      return { ok: false, failure: "error", message: `the key ${keyId} was edited by others ${attempts} times while this edit was made: try again` };
    },
  };
}

function parseEntry(text: string): KeyListEntry | undefined {
  try {
    const parsed = StoredEntrySchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}
