/**
 * Keeps the client directory and the keys file in step, off the hot path: counters are saved
 * coalesced (one write per `saveDelayMs` at most, never one per request), and changes people
 * make to the file (CLI, editor, another admin API) are adopted within a poll.
 *
 * The counters of a client whose name and creation time match are the server's (its memory
 * wins); everything else in the section is the file's.
 */
import type { KeyStore, StoreLoad } from "../keys/key-store.ts";
import type { ClientDirectory } from "./client-directory.ts";
import { clientsFromDocument, documentWithClients, type ClientRecord } from "./client-schema.ts";

export interface ClientSync {
  /** Writes pending counters now and waits for it (shutdown, tests). */
  flush(): Promise<void>;
  /** Adopts a store result (the admin API's changes) as the watcher would. */
  adopt(result: StoreLoad): void;
  stop(): Promise<void>;
}

export interface ClientSyncOptions {
  directory: ClientDirectory;
  store: KeyStore;
  saveDelayMs?: number;
  /** false: counters are kept elsewhere (Redis); only people's changes are adopted. */
  saveCounters?: boolean;
  now?: () => number;
  onError?: (message: string) => void;
}

export function startClientSync({ directory, store, saveDelayMs = 500, saveCounters = true, now = Date.now, onError }: ClientSyncOptions): ClientSync {
  let timer: Timer | undefined;
  let saving: Promise<void> | undefined;
  let again = false;
  let lastError: string | undefined;
  const report = (message: string) => {
    if (message !== lastError) onError?.(message);
    lastError = message;
  };

  const adopt = (result: StoreLoad) => {
    if (!result.ok) return; // the key sync reports a broken file
    const loaded = clientsFromDocument(result.doc, now());
    if (!loaded.ok) return report(`${store.name}: ${loaded.message}; serving the clients held in memory until it is fixed`);
    lastError = undefined;
    directory.adopt(loaded.clients);
  };

  const save = async (): Promise<void> => {
    timer = undefined;
    if (saving) {
      again = true;
      return saving;
    }
    again = false;
    saving = store
      .update((doc) => {
        const loaded = clientsFromDocument(doc, now());
        if (!loaded.ok) return doc; // not written over; reported by adopt below
        return documentWithClients(doc, withOurCounters(loaded.clients, directory));
      })
      .then(adopt, (error: unknown) => report(`could not save client counters to ${store.name}: ${error instanceof Error ? error.message : String(error)}`))
      .finally(() => {
        saving = undefined;
      });
    await saving;
    if (again) await save();
  };

  const unsubscribe = directory.onChange(() => {
    if (saveCounters && timer === undefined) {
      timer = setTimeout(save, saveDelayMs);
      timer.unref?.();
    }
  });
  const unwatch = store.watch(adopt);

  const flush = async () => {
    for (let round = 0; round < 100; round++) {
      if (timer !== undefined) {
        clearTimeout(timer);
        await save();
      } else if (saving) await saving;
      else return;
    }
  };

  return {
    flush,
    adopt,
    async stop() {
      unsubscribe();
      unwatch();
      await flush();
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
