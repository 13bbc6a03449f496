/**
 * Client keys as the server runs them: the directory loaded from the store's document and the gate
 * the proxy handler asks (which also settles every admitted request's reservation by its usage).
 * compose.ts builds this once; the store's sync (store/state-sync.ts) saves the counters and
 * hands people's changes to `adopt`, as the admin API does with its own.
 *
 * The counters of a client whose name and creation time match are the server's (its memory wins);
 * everything else in the section is the store's.
 */
import type { EventBus } from "../domain/events.ts";
import type { PriceBook } from "../domain/model-prices.ts";
import type { KeyFileDocument } from "../keys/schema.ts";
import { createClientDirectory, type ClientDirectory } from "./client-directory.ts";
import { createClientGate, type ClientGate } from "./client-gate.ts";
import { clientsFromDocument, documentWithClients, type ClientRecord } from "./client-schema.ts";
import type { SharedClientCounters } from "./shared-counters.ts";

export interface Clients {
  directory: ClientDirectory;
  gate: ClientGate;
  /** Counters are saved in the store's document (false with REDIS_URL: they are increments in Redis). */
  savesCounters: boolean;
  /** Takes the clients section of a stored document (people's changes), keeping the counters held here. */
  adopt(doc: KeyFileDocument, storeName: string): void;
  /** `doc` with its clients section carrying the counters held here (what a save writes); `doc` itself when the section does not parse. */
  withCounters(doc: KeyFileDocument): KeyFileDocument;
  stop(): Promise<void>;
}

export interface ClientsOptions {
  doc: KeyFileDocument;
  keysFile: string;
  events: EventBus;
  requireClientKey: boolean;
  now: () => number;
  /**
   * With REDIS_URL: the counters shared by every instance, made for the directory. Then counters
   * are not saved in the store's document (they are increments in Redis).
   */
  sharedCounters?: ((directory: ClientDirectory) => SharedClientCounters) | undefined;
  /** Model prices for reservations (the models catalog). */
  prices?: PriceBook;
}

export function startClients({ doc, keysFile, events, requireClientKey, now, sharedCounters, prices }: ClientsOptions): { ok: true; clients: Clients } | { ok: false; message: string } {
  const loaded = clientsFromDocument(doc, now());
  if (!loaded.ok) return { ok: false, message: `${keysFile}: ${loaded.message}; the file was left untouched` };
  const directory = createClientDirectory(loaded.clients);
  const shared = sharedCounters?.(directory);
  let lastError: string | undefined;
  return {
    ok: true,
    clients: {
      directory,
      gate: createClientGate({ directory, requireClientKey, now, shared, ...(prices ? { prices } : {}), onRefused: (client, code) => events.emit("client.refused", { client, code }) }),
      savesCounters: shared === undefined,
      adopt(stored, storeName) {
        const loaded = clientsFromDocument(stored, now());
        if (!loaded.ok) {
          const message = `${storeName}: ${loaded.message}; serving the clients held in memory until it is fixed`;
          if (message !== lastError) events.emit("store.error", { message });
          lastError = message;
          return;
        }
        lastError = undefined;
        directory.adopt(loaded.clients);
      },
      withCounters(doc) {
        const stored = clientsFromDocument(doc, now());
        return stored.ok ? documentWithClients(doc, withOurCounters(stored.clients, directory)) : doc;
      },
      async stop() {
        await shared?.stop();
      },
    },
  };
}

/** The stored clients, with the counters this server holds for the same clients. */
function withOurCounters(stored: ReadonlyMap<string, ClientRecord>, directory: ClientDirectory): Map<string, ClientRecord> {
  const merged = new Map<string, ClientRecord>();
  for (const [name, record] of stored) {
    const ours = directory.byName(name)?.record;
    const same = ours !== undefined && ours.createdAt === record.createdAt;
    merged.set(name, same ? { ...record, usage: structuredClone(ours.usage) } : record);
  }
  return merged;
}

/** Whether the document defines any client (before anything is started). */
export function hasClients(doc: KeyFileDocument): boolean {
  const section = doc.extraTopLevel.clients;
  return typeof section === "object" && section !== null && Object.keys(section).length > 0;
}
