/**
 * What `serve` runs its client keys on when REDIS_URL is set: the client records in Redis
 * (client-store.ts, shared by every instance and every client subcommand) and the shared counters
 * (client-counters.ts). The clients to start with:
 *
 * - Redis's, when it holds any;
 * - KEYS_FILE's, imported once, when Redis holds none and the file has some (the compare-and-set
 *   makes two instances starting together import them once);
 * - KEYS_FILE's, served from memory, when Redis cannot be reached at startup; Redis's are adopted
 *   as soon as it answers.
 */
import { createJsonFileStore } from "../file/json-file-store.ts";
import type { KeyStore } from "../ports.ts";
import type { KeyFileDocument } from "../../keys/schema.ts";
import type { EventBus } from "../../domain/events.ts";
import type { ClientDirectory } from "../../clients/client-directory.ts";
import type { SharedClientCounters } from "../../clients/shared-counters.ts";
import { redisKeys } from "./redis-keys.ts";
import { createRedisClientCounters } from "./client-counters.ts";
import { createRedisClientStore } from "./client-store.ts";
import type { RedisConnection } from "./connection.ts";

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
