/**
 * The client records in Redis (with REDIS_URL), behind the `KeyStore` interface the
 * client code already uses (clients section of a document), so the server's sync, the admin API
 * and every client subcommand work on it unchanged:
 *
 *   <prefix>clients           hash     client name → its entry (JSON, as in the keys file's
 *                                      `clients` section, without `usage`)
 *   <prefix>clients:version   counter  edits so far: an empty hash with no version is a Redis that
 *                                      lost its data (restarted without persistence), not a person
 *                                      removing every client, and the instances put theirs back
 *   <prefix>clients:changes   channel  "<name>" after each person's edit: every instance reloads
 *
 * The documents this store hands out hold only the clients section (no keys: the key list has its
 * own store); their counters come from the shared counters (client-counters.ts). A person's edit
 * is one compare-and-set script over the entries it changes: if another edit landed in between,
 * the change runs again on what is stored now (KeyStore.update allows that), so two `add-client
 * bob` never both win. A missed message is made up for by the resync after every (re)subscribe
 * and a reload every `backstopMs`.
 *
 * `serve` starts with Redis's clients when it holds any; with KEYS_FILE's, imported once, when
 * Redis holds none and the file has some (the compare-and-set makes two instances starting
 * together import them once); with KEYS_FILE's, served from memory, when Redis cannot be reached
 * at startup (Redis's are adopted as soon as it answers).
 */
import { displayUrl } from "../../domain/redact.ts";
import type { EventBus } from "../../domain/events.ts";
import type { ClientDirectory } from "../../clients/client-directory.ts";
import type { SharedClientCounters } from "../../clients/shared-counters.ts";
import { createJsonFileStore } from "../file/json-file-store.ts";
import type { KeyStore, StoreFailure, StoreLoad } from "../ports.ts";
import type { KeyFileDocument } from "../../keys/schema.ts";
import type { RedisConnection } from "./connection.ts";
import { createRedisClientCounters, readClientUsage } from "./client-counters.ts";
import { redisKeys, type RedisKeys } from "./redis-keys.ts";
import { backedReload } from "./subscription.ts";
import { luaScript, runScript } from "./scripts.ts";

// KEYS: the clients hash, the version counter. ARGV: triples of name, entry as read ('' absent), new entry ('' delete).
// All are checked before any is written: the edit applies whole or not at all.
const COMPARE_AND_SET_CLIENTS = luaScript(`
for i = 1, #ARGV, 3 do
  local current = redis.call('HGET', KEYS[1], ARGV[i]) or ''
  if current ~= ARGV[i + 1] then return 0 end
end
for i = 1, #ARGV, 3 do
  if ARGV[i + 2] == '' then redis.call('HDEL', KEYS[1], ARGV[i]) else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2]) end
end
redis.call('INCR', KEYS[2])
return 1
`);

export interface RedisClientStoreOptions {
  connection: RedisConnection;
  keys: RedisKeys;
  url: string;
  now?: () => number;
  /** How often the clients are reloaded even when no edit was heard. */
  backstopMs?: number;
  /** Compare-and-set attempts before giving up (each one lost to another edit). */
  attempts?: number;
}

export function createRedisClientStore({ connection, keys, url, now = Date.now, backstopMs = 5_000, attempts = 20 }: RedisClientStoreOptions): KeyStore {
  const name = `Redis at ${displayUrl(url)} (clients ${keys.clients})`;
  /** The entries last read from a Redis that had its data, to put back if it comes back without. */
  let held = new Map<string, string>();
  const failed = (message: string): StoreFailure => ({ ok: false, kind: "io", message: `cannot reach the clients in ${name}: ${message}` });

  /** The stored entries as text (what compare-and-set compares) and as the clients section. */
  const read = async (): Promise<{ ok: true; raw: Map<string, string>; wiped: boolean; doc: KeyFileDocument } | StoreFailure> => {
    const [result, version] = await Promise.all([connection.send("HGETALL", [keys.clients]), connection.send("GET", [keys.clientsVersion])]);
    if (!result.ok) return failed(result.message);
    if (!version.ok) return failed(version.message);
    const raw = new Map<string, string>();
    const section: Record<string, unknown> = {};
    for (const [client, text] of Object.entries((result.value ?? {}) as Record<string, unknown>)) {
      raw.set(client, String(text));
      try {
        section[client] = JSON.parse(String(text));
      } catch {
        return { ok: false, kind: "invalid", message: `${name}: the entry of client ${client} is not JSON; fix or delete it (HDEL ${keys.clients} ${client})` };
      }
    }
    const usage = await readClientUsage(connection, keys, section, now());
    if (!usage.ok) return failed(usage.message);
    for (const [client, windows] of usage.value) (section[client] as Record<string, unknown>).usage = windows;
    const wiped = raw.size === 0 && (version.value === null || version.value === undefined);
    if (!wiped) held = raw;
    return { ok: true, raw, wiped, doc: { records: [], accounts: new Map(), extraTopLevel: raw.size === 0 ? {} : { clients: section } } };
  };

  const load = async (): Promise<StoreLoad> => {
    const result = await read();
    return result.ok ? { ok: true, doc: result.doc, exists: result.raw.size > 0 } : result;
  };

  return {
    name,
    load,

    async update(change) {
      for (let attempt = 0; attempt < attempts; attempt++) {
        const before = await read();
        if (!before.ok) return before;
        const after = change(before.doc);
        const args = entryEdits(before.raw, after);
        if (args.length === 0) return load();
        const written = await runScript(connection, COMPARE_AND_SET_CLIENTS, [keys.clients, keys.clientsVersion], args);
        if (!written.ok) return failed(written.message);
        if (written.value !== 1) continue; // another edit landed in between: run the change again
        const names = args.filter((_, index) => index % 3 === 0);
        // Best effort: an instance that misses it reloads on its backstop.
        await connection.send("PUBLISH", [keys.clientChanges, names.join(",")]);
        return load();
      }
      return { ok: false, kind: "io", message: `${name}: the clients were edited by others ${attempts} times while this edit was made: try again` };
    },

    watch(onChange) {
      const { reload, stop } = backedReload(async () => {
        let result = await read();
        if (result.ok && result.wiped && held.size > 0) {
          const args = [...held].flatMap(([client, text]) => [client, "", text]);
          const restored = await runScript(connection, COMPARE_AND_SET_CLIENTS, [keys.clients, keys.clientsVersion], args);
          if (restored.ok) result = await read();
        }
        // While Redis is away the clients held in memory keep being served: nothing to adopt.
        if (!result.ok || result.wiped) return;
        onChange({ ok: true, doc: result.doc, exists: result.raw.size > 0 });
      }, backstopMs);
      const subscription = connection.subscribe(keys.clientChanges, { onMessage: reload, onResync: reload });
      return () => {
        stop();
        void subscription.close();
      };
    },
  };
}

/** Compare-and-set arguments for every entry `after` changes (usage left out: it is counted apart). */
function entryEdits(before: ReadonlyMap<string, string>, after: KeyFileDocument): string[] {
  const section = (after.extraTopLevel.clients ?? {}) as Record<string, Record<string, unknown>>;
  const args: string[] = [];
  for (const [client, entry] of Object.entries(section)) {
    const { usage: _usage, ...definition } = entry;
    const text = JSON.stringify(definition);
    const was = before.get(client) ?? "";
    if (text !== was) args.push(client, was, text);
  }
  for (const [client, was] of before) if (!(client in section)) args.push(client, was, "");
  return args;
}

export interface SharedClients {
  store: KeyStore;
  /** The clients to start with (only the document's clients section counts). */
  doc: KeyFileDocument;
  counters: (directory: ClientDirectory) => SharedClientCounters;
}

export interface SharedClientsOptions {
  connection: RedisConnection;
  prefix: string;
  url: string;
  keysFile: string;
  now: () => number;
  /** Where the one line about an import or an unreachable Redis goes: the logs (shared.state). */
  events: EventBus;
}

export async function openSharedClients({ connection, prefix, url, keysFile, now, events }: SharedClientsOptions): Promise<{ ok: true; clients: SharedClients } | { ok: false; message: string }> {
  const keys = redisKeys(prefix);
  const store = createRedisClientStore({ connection, keys, url, now });
  const counters = (directory: ClientDirectory) => createRedisClientCounters({ connection, keys, directory, now });
  const stored = await store.load();
  if (stored.ok && stored.exists) return { ok: true, clients: { store, doc: stored.doc, counters } };
  if (!stored.ok && stored.kind === "invalid") return { ok: false, message: stored.message };
  const file = await createJsonFileStore({ path: keysFile, now }).load();
  const section = file.ok ? file.doc.extraTopLevel.clients : undefined;
  const fileClients = typeof section === "object" && section !== null ? section : undefined;
  const fileDoc: KeyFileDocument = { records: [], accounts: new Map(), extraTopLevel: fileClients === undefined ? {} : { clients: fileClients } };
  if (!stored.ok) {
    if (fileClients !== undefined) events.emit("shared.state", { kind: "notice", message: `Redis unreachable at startup: serving the client keys in ${keysFile} from memory until it is back` });
    return { ok: true, clients: { store, doc: fileDoc, counters } };
  }
  if (fileClients === undefined || Object.keys(fileClients).length === 0) return { ok: true, clients: { store, doc: stored.doc, counters } };
  // Redis holds no clients and KEYS_FILE has some: imported once (a concurrent import by another
  // instance makes this one's compare-and-set run again, and then it finds them there).
  // The change's last run says whether this instance imported them (or found another's import).
  let importing = false;
  const imported = await store.update((doc) => {
    importing = doc.extraTopLevel.clients === undefined;
    return importing ? { ...doc, extraTopLevel: { ...doc.extraTopLevel, clients: fileClients } } : doc;
  });
  if (!imported.ok) return { ok: true, clients: { store, doc: fileDoc, counters } };
  if (importing) events.emit("shared.state", { kind: "notice", message: `Redis held no client keys: imported ${Object.keys(fileClients).length} from ${keysFile} (once; Redis is where client keys live now)` });
  return { ok: true, clients: { store, doc: imported.doc, counters } };
}
