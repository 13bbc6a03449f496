/**
 * Keeps the pool, the clients and their store in step, off the request path: one watcher and one
 * save loop per process for the whole document (keys and clients).
 *
 * The keys file has one owner, the server on it (store/file/server-claim.ts), and every writer
 * holds its lock. So a save needs no merge: under the lock it reads the file, takes from it what
 * people edit (which keys exist, labels, extra fields, a person's reset, the clients' definitions;
 * the pool's `replaceKeys` and `clients.adopt` take those in), and writes what this server holds
 * for the rest (cooldowns, counters, rests, account state, client usage).
 *
 * Saves are coalesced: a decision (a rest, a cooldown, a disable, a person's edit, a learned fact)
 * within `saveDelayMs`, counters alone at most once per `counterSaveDelayMs`, so a busy proxy does
 * not rewrite its file for every request.
 *
 * With REDIS_URL, runtime state travels as changes (store/redis/shared-pool.ts): nothing is saved
 * here, the key list and the clients (each in a store of its own) are only adopted.
 */
import type { Clients } from "../clients/clients.ts";
import type { EventBus } from "../domain/events.ts";
import type { KeyPool } from "../keys/key-pool.ts";
import { counterKinds, type StateChange } from "../keys/state-change.ts";
import type { KeyStore, StoreFailure } from "./ports.ts";
import type { KeyFileDocument } from "../keys/schema.ts";

export interface StateSync {
  /** Writes any pending state now and waits for it (shutdown, tests). */
  flush(): Promise<void>;
  /** Stops watching and saving, after a final flush. */
  stop(): Promise<void>;
}

export interface StateSyncOptions {
  pool: KeyPool;
  /** The keys file, or the key list in Redis. */
  store: KeyStore;
  clients: Clients;
  /** With REDIS_URL the clients have a store of their own; by default they live in `store`'s document. */
  clientStore?: KeyStore | undefined;
  /** false: runtime state is not this store's to keep (Redis); people's edits are still adopted. */
  saves?: boolean;
  /** How soon a decision is saved. */
  saveDelayMs?: number;
  /** How often, at most, counters alone are saved. */
  counterSaveDelayMs?: number;
  /** How long after a failed write (a full disk, a read-only folder) the save is tried again. */
  retryDelayMs?: number;
  events?: EventBus;
  /** Called when a store problem starts (a broken file, a failed write), once per problem. */
  onStoreError?: (message: string) => void;
  /** Called when that problem has ended (the file loads again, a write went through again). */
  onStoreRecovered?: (message: string) => void;
}

export function startStateSync({
  pool,
  store,
  clients,
  clientStore,
  saves = true,
  saveDelayMs = 500,
  counterSaveDelayMs = 5000,
  retryDelayMs = 5000,
  events,
  onStoreError,
  onStoreRecovered,
}: StateSyncOptions): StateSync {
  let timer: Timer | undefined;
  /** When the pending timer fires (performance.now()): a decision may bring it forward, never back. */
  let dueAt = Infinity;
  let retryTimer: Timer | undefined;
  let saving: Promise<void> | undefined;
  let again = false;
  /**
   * The shortest delay asked for while a save ran: the timer starts when that save is done, so
   * counters are written at most once per `counterSaveDelayMs` measured from write to write.
   */
  let askedWhileSaving: number | undefined;
  /** The store problem last reported and not yet over: each is reported when it starts and when it ends. */
  let problem: StoreFailure | undefined;
  /**
   * The last save was refused (the stored file did not parse) or failed: the state waits in
   * memory. Nothing in the pool changes when the file is fixed, so the watcher must ask for the
   * save, or that state would stay unwritten until the next request.
   */
  let unsaved = false;

  const report = (failure: StoreFailure) => {
    if (failure.message === problem?.message) return;
    problem = failure;
    const message =
      failure.kind === "invalid"
        ? `${failure.message}; serving from memory and not writing over it until it is fixed`
        : `${failure.message}; serving from memory and trying the save again every ${Math.round(retryDelayMs / 1000) || 1} s`;
    events?.emit("store.error", { message });
    onStoreError?.(message);
  };

  /**
   * A read or write went through. A write ends any problem; a read ends only a broken file (a file
   * that loads says nothing about whether it can be written).
   */
  const settle = (by: "read" | "write") => {
    if (!problem || (by === "read" && problem.kind !== "invalid")) return;
    const message = problem.kind === "invalid" ? `${store.name} loads again` : `${store.name} can be written again; the key state held in memory is saved`;
    problem = undefined;
    events?.emit("store.recovered", { message });
    onStoreRecovered?.(message);
  };

  /** People's edits in a stored document reach the pool and the clients. */
  const adoptDoc = (doc: KeyFileDocument) => {
    pool.replaceKeys(doc.records);
    if (!clientStore) clients.adopt(doc, store.name);
  };

  /** The document as it is stored now (people's edits) with what this server holds written in. */
  const withMemory = (doc: KeyFileDocument): KeyFileDocument => {
    adoptDoc(doc);
    const records = pool.records();
    // Nothing stored and nothing to remember: do not create a file nobody asked for.
    if (records.length === 0 && doc.records.length === 0 && doc.extraTopLevel.clients === undefined) return doc;
    const next: KeyFileDocument = { ...doc, records, accounts: pool.accounts() };
    return clientStore ? next : clients.withCounters(next);
  };

  /** After a failed write nothing else may ask for a save (an idle pool): try again by itself. */
  const retryLater = () => {
    if (retryTimer !== undefined) return;
    retryTimer = setTimeout(() => {
      retryTimer = undefined;
      void save();
    }, retryDelayMs);
    retryTimer.unref?.();
  };

  const save = async (): Promise<void> => {
    clearTimeout(timer);
    timer = undefined;
    dueAt = Infinity;
    if (saving) {
      again = true; // one more save after the one in flight
      return saving;
    }
    again = false;
    saving = store
      .update(withMemory)
      .then(
        (result) => result,
        // A store is not supposed to throw; one that does is a failed write all the same.
        (error: unknown): StoreFailure => ({ ok: false, kind: "io", message: `cannot write ${store.name}: ${error instanceof Error ? error.message : String(error)}` }),
      )
      .then((result) => {
        unsaved = !result.ok;
        if (result.ok) settle("write");
        else {
          report(result);
          if (result.kind === "io") retryLater();
        }
      })
      .finally(() => {
        saving = undefined;
        if (askedWhileSaving !== undefined) {
          const delayMs = askedWhileSaving;
          askedWhileSaving = undefined;
          scheduleSave(delayMs);
        }
      });
    await saving;
    if (again) await save();
  };

  function scheduleSave(delayMs: number): void {
    if (!saves) return;
    if (saving) {
      askedWhileSaving = Math.min(askedWhileSaving ?? Infinity, delayMs);
      return;
    }
    const at = performance.now() + delayMs;
    if (timer !== undefined && dueAt <= at) return;
    clearTimeout(timer);
    dueAt = at;
    timer = setTimeout(save, delayMs);
    timer.unref?.();
  }
  /** Counters alone (an acquire, a plain success) wait for their own, longer period. */
  const delayOf = (changes: readonly StateChange[]) => (changes.every((change) => counterKinds.has(change.kind)) ? counterSaveDelayMs : saveDelayMs);

  const offPool = pool.onChange((changes) => scheduleSave(delayOf(changes)));
  const offClients = clients.savesCounters && !clientStore ? clients.directory.onChange(() => scheduleSave(counterSaveDelayMs)) : () => {};
  const unwatch = store.watch((result) => {
    if (!result.ok) return report(result);
    settle("read");
    adoptDoc(result.doc);
    if (unsaved) scheduleSave(saveDelayMs);
  });
  // A broken clients store is reported by what it says (clients.adopt), not as the key store's problem.
  const unwatchClients = clientStore ? clientStore.watch((result) => result.ok && clients.adopt(result.doc, clientStore.name)) : () => {};

  /** Until nothing is pending: a change made while a save runs needs the save after it too. */
  const flush = async () => {
    for (let round = 0; round < 100; round++) {
      if (timer !== undefined) await save();
      else if (saving) await saving;
      else return;
    }
  };

  return {
    flush,
    async stop() {
      offPool();
      offClients();
      unwatch();
      unwatchClients();
      clearTimeout(retryTimer);
      await flush();
    },
  };
}
