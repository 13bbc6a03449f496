/**
 * Client keys as the server runs them: the directory loaded from the keys file, the gate the
 * proxy handler asks, the sync that saves counters and adopts people's changes, and the charge of
 * every finished request's usage to its client. proxy-server.ts builds this once.
 */
import type { EventBus } from "../domain/events.ts";
import { createJsonFileStore } from "../keys/json-file-store.ts";
import type { KeyStore } from "../keys/key-store.ts";
import type { KeyFileDocument } from "../keys/schema.ts";
import { createClientDirectory, type ClientDirectory } from "./client-directory.ts";
import { createClientGate, type ClientGate } from "./client-gate.ts";
import { clientsFromDocument } from "./client-schema.ts";
import { startClientSync, type ClientSync } from "./client-sync.ts";
import type { SharedClientCounters } from "./shared-counters.ts";

export interface Clients {
  directory: ClientDirectory;
  gate: ClientGate;
  sync: ClientSync;
  /** The store the admin API changes clients through. */
  store: KeyStore;
  stop(): Promise<void>;
}

export interface ClientsOptions {
  doc: KeyFileDocument;
  keysFile: string;
  /** A store given by a test; by default a store of its own on KEYS_FILE (see below). */
  store?: KeyStore | undefined;
  events: EventBus;
  requireClientKey: boolean;
  saveDelayMs?: number | undefined;
  now: () => number;
  /**
   * With REDIS_URL: the counters shared by every instance, made for the directory. Then counters
   * are not saved in the store's document (they are increments in Redis).
   */
  sharedCounters?: ((directory: ClientDirectory) => SharedClientCounters) | undefined;
}

export function startClients({ doc, keysFile, store: given, events, requireClientKey, saveDelayMs, now, sharedCounters }: ClientsOptions): { ok: true; clients: Clients } | { ok: false; message: string } {
  const loaded = clientsFromDocument(doc, now());
  if (!loaded.ok) return { ok: false, message: `${keysFile}: ${loaded.message}; the file was left untouched` };
  const directory = createClientDirectory(loaded.clients);
  // A store instance of its own: a JSON file store's watcher skips text its instance has already
  // seen, so two watchers on one instance would miss each other's news.
  const store = given ?? createJsonFileStore({ path: keysFile, now });
  const shared = sharedCounters?.(directory);
  const sync = startClientSync({
    directory,
    store,
    now,
    saveCounters: shared === undefined,
    ...(saveDelayMs === undefined ? {} : { saveDelayMs }),
    onError: (message) => events.emit("store.error", { message }),
  });
  const unsubscribe = events.on("request.done", (record) => {
    if (!record.client || !record.usage) return;
    const at = now();
    directory.charge(record.client, record.usage.totalTokens, record.usage.cost ?? 0, at);
    const charged = shared && directory.byName(record.client)?.record;
    if (charged) shared.charged(charged, record.usage.totalTokens, record.usage.cost ?? 0, at);
  });
  return {
    ok: true,
    clients: {
      directory,
      gate: createClientGate({ directory, requireClientKey, now, shared, onRefused: (client, code) => events.emit("client.refused", { client, code }) }),
      sync,
      store,
      async stop() {
        unsubscribe();
        await sync.stop();
        await shared?.stop();
      },
    },
  };
}

/** Whether the document defines any client (before anything is started). */
export function hasClients(doc: KeyFileDocument): boolean {
  const section = doc.extraTopLevel.clients;
  return typeof section === "object" && section !== null && Object.keys(section).length > 0;
}
