/**
 * Keeps the pool and the store in step: the pool's changes are saved coalesced (one write per
 * `saveDelayMs` at most, never one per request), and changes someone else makes to the store are
 * adopted by the pool. The hot path only sets a timer; all I/O happens here, off the request.
 *
 * Another server may share the store (two servers on one keys file): a save merges with what it
 * holds and the pool adopts what others saved, by file-merge.ts's rules. The base of that merge
 * is what the store held when this process last read or wrote it: for keys each record carries it
 * (`synced`), for accounts it is kept here. Each adoption happens in one synchronous step (read
 * the pool, merge, hand back), so no request's change can fall between.
 */
import type { EventBus } from "../domain/events.ts";
import type { AccountState } from "./account-state.ts";
import { accountsWithBase, countsOf, mergeAccounts, mergeKey, withoutBase } from "./file-merge.ts";
import type { KeyPool } from "./key-pool.ts";
import type { KeyStore, StoreFailure, StoreLoad } from "./key-store.ts";
import type { KeyFileDocument, KeyRecord } from "./schema.ts";

export interface KeySync {
  /** Writes any pending state now and waits for it (shutdown, tests). */
  flush(): Promise<void>;
  /** Stops watching and saving, after a final flush. */
  stop(): Promise<void>;
}

export interface KeySyncOptions {
  pool: KeyPool;
  store: KeyStore;
  saveDelayMs?: number;
  /** How long after a failed write (a full disk, a read-only folder) the save is tried again. */
  retryDelayMs?: number;
  events?: EventBus;
  /** Called when a store problem starts (a broken file, a failed write), once per problem. */
  onStoreError?: (message: string) => void;
  /** Called when that problem has ended (the file loads again, a write went through again). */
  onStoreRecovered?: (message: string) => void;
  now?: () => number;
}

const noCounts = { requests: 0, successes: 0, failures: 0 };

/** What a save sent: the pool's state then, the base of adopting what was written. */
interface Sent {
  records: ReadonlyMap<string, KeyRecord>;
  accounts: ReadonlyMap<string, AccountState>;
}

export function startKeySync({ pool, store, saveDelayMs = 500, retryDelayMs = 5000, events, onStoreError, onStoreRecovered, now = Date.now }: KeySyncOptions): KeySync {
  let timer: Timer | undefined;
  let retryTimer: Timer | undefined;
  let saving: Promise<void> | undefined;
  let dirty = false;
  /** The store problem last reported and not yet over: each is reported when it starts and when it ends. */
  let problem: StoreFailure | undefined;
  /**
   * The last save was refused (the stored file did not parse) or failed: the pool's state waits in
   * memory. Nothing in the pool changes when the file is fixed, so the watcher must ask for the
   * save, or that state would stay unwritten until the next request.
   */
  let unsaved = false;
  /** The accounts as the store held them when this process last read or wrote them. */
  let baseAccounts = pool.accounts();
  /** The store changed while a save was in flight: read it again after, so no news is skipped. */
  let changedWhileSaving = false;

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

  const adopt = (result: StoreLoad, by: "read" | "write", sent?: Sent) => {
    if (!result.ok) {
      report(result);
      return;
    }
    settle(by);
    adoptDoc(result.doc, sent);
  };

  /**
   * The pool takes in `doc`: the key list as it is, runtime state merged with the pool's own. After
   * a save, what the pool counted since the snapshot it sent is its news; after another's write,
   * what it counted since its base.
   */
  const adoptDoc = (doc: KeyFileDocument, sent?: Sent) => {
    // What the pool counted, before a person's reset in `doc` replaces a key's record with the file's.
    const counted = store.holdsSharedState ? new Map(pool.records().map((record) => [record.id, record])) : undefined;
    pool.replaceKeys(doc.records);
    if (counted === undefined) return;
    const stored = new Map(doc.records.map((record) => [record.id, record]));
    const merged: KeyRecord[] = [];
    for (const mine of pool.records()) {
      const theirs = stored.get(mine.id);
      if (theirs === undefined) continue;
      const own = counted.get(mine.id) ?? mine;
      const before = sent?.records.get(mine.id);
      merged.push(mergeKey(theirs, { ...mine, ...countsOf(own) }, before === undefined ? (own.synced ?? noCounts) : countsOf(before)));
    }
    pool.adoptState(merged, mergeAccounts(doc.accounts, pool.accounts(), sent?.accounts ?? baseAccounts, now()));
    baseAccounts = withoutBase(doc.accounts);
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
    timer = undefined;
    if (saving) {
      dirty = true; // one more save after the one in flight
      return saving;
    }
    dirty = false;
    const records = pool.records();
    const accounts = pool.accounts();
    const sent: Sent = { records: new Map(records.map((record) => [record.id, record])), accounts };
    saving = store
      .save(records, store.holdsSharedState ? accountsWithBase(accounts, baseAccounts) : accounts)
      .then(
        (result) => result,
        // A store is not supposed to throw; one that does is a failed write all the same.
        (error: unknown): StoreFailure => ({ ok: false, kind: "io", message: `cannot write ${store.name}: ${error instanceof Error ? error.message : String(error)}` }),
      )
      .then((result) => {
        unsaved = !result.ok;
        adopt(result, "write", sent);
        if (!result.ok && result.kind === "io") retryLater();
      })
      .finally(() => {
        saving = undefined;
      });
    await saving;
    if (changedWhileSaving) {
      changedWhileSaving = false;
      // Adopting what is stored is harmless when it is our own write: it equals the base then.
      const reread = await store.load();
      if (saving === undefined) adopt(reread, "read");
      else changedWhileSaving = true;
    }
    if (dirty) await save();
  };

  const scheduleSave = () => {
    if (timer === undefined) {
      timer = setTimeout(save, saveDelayMs);
      timer.unref?.();
    }
  };
  const unsubscribeChanges = pool.onChange(scheduleSave);
  const unwatch = store.watch((result) => {
    if (store.holdsSharedState && saving !== undefined && result.ok) {
      // Adopted now, the save's result would count this news a second time; adopted after, it could
      // be older than what the save wrote. Read the store again once the save is done.
      changedWhileSaving = true;
      return;
    }
    adopt(result, "read");
    if (result.ok && unsaved) scheduleSave();
  });

  /** Until nothing is pending: a change made while a save runs needs the save after it too. */
  const flush = async () => {
    for (let round = 0; round < 100; round++) {
      if (timer !== undefined) {
        clearTimeout(timer);
        await save();
      } else if (saving) {
        await saving;
      } else if (dirty) {
        await save();
      } else {
        return;
      }
    }
  };

  return {
    flush,
    async stop() {
      unsubscribeChanges();
      unwatch();
      clearTimeout(retryTimer);
      await flush();
    },
  };
}
