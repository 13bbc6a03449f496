/**
 * Keeps the pool and the store in step: the pool's changes are saved coalesced (one write per
 * `saveDelayMs` at most, never one per request), and changes someone else makes to the store are
 * adopted by the pool. The hot path only sets a timer; all I/O happens here, off the request.
 */
import type { EventBus } from "../domain/events.ts";
import type { KeyPool } from "./key-pool.ts";
import type { KeyStore, StoreFailure, StoreLoad } from "./key-store.ts";

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
}

export function startKeySync({ pool, store, saveDelayMs = 500, retryDelayMs = 5000, events, onStoreError, onStoreRecovered }: KeySyncOptions): KeySync {
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

  const adopt = (result: StoreLoad, by: "read" | "write") => {
    if (!result.ok) {
      report(result);
      return;
    }
    settle(by);
    pool.replaceKeys(result.doc.records);
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
    saving = store
      .save(pool.records(), pool.accounts())
      .then(
        (result) => result,
        // A store is not supposed to throw; one that does is a failed write all the same.
        (error: unknown): StoreFailure => ({ ok: false, kind: "io", message: `cannot write ${store.name}: ${error instanceof Error ? error.message : String(error)}` }),
      )
      .then((result) => {
        unsaved = !result.ok;
        adopt(result, "write");
        if (!result.ok && result.kind === "io") retryLater();
      })
      .finally(() => {
        saving = undefined;
      });
    await saving;
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
