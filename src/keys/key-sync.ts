/**
 * Keeps the pool and the store in step: the pool's changes are saved coalesced (one write per
 * `saveDelayMs` at most, never one per request), and changes someone else makes to the store are
 * adopted by the pool. The hot path only sets a timer; all I/O happens here, off the request.
 */
import type { EventBus } from "../observe/events.ts";
import type { KeyPool } from "./key-pool.ts";
import type { KeyStore, StoreLoad } from "./key-store.ts";

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
  events?: EventBus;
  /** Called once per distinct store problem (a broken file, a failed write). */
  onStoreError?: (message: string) => void;
}

export function startKeySync({ pool, store, saveDelayMs = 500, events, onStoreError }: KeySyncOptions): KeySync {
  let timer: Timer | undefined;
  let saving: Promise<void> | undefined;
  let dirty = false;
  let lastReported: string | undefined;
  /**
   * The last save was refused (the stored file did not parse) or failed: the pool's state waits in
   * memory. Nothing in the pool changes when the file is fixed, so the watcher must ask for the
   * save, or that state would stay unwritten until the next request.
   */
  let unsaved = false;

  const report = (message: string) => {
    if (message === lastReported) return;
    lastReported = message;
    events?.emit("store.error", { message });
    onStoreError?.(message);
  };

  const adopt = (result: StoreLoad) => {
    if (!result.ok) {
      report(`${result.message}; serving from memory and not writing over it until it is fixed`);
      return;
    }
    lastReported = undefined;
    pool.replaceKeys(result.doc.records);
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
        (result) => {
          unsaved = !result.ok;
          adopt(result);
        },
        (error: unknown) => {
          unsaved = true;
          report(`could not write ${store.name}: ${error instanceof Error ? error.message : String(error)}`);
        },
      )
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
    adopt(result);
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
      await flush();
    },
  };
}
