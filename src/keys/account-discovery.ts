/**
 * Learns which account each key belongs to (and how much of its daily free-model budget is
 * used) by asking `GET /key`, in the background after startup: never on a request's path, two
 * keys at a time. Keys whose account stays unknown keep counting as an account of their own.
 */
import type { KeyCheck } from "../upstream/key-info.ts";
import type { KeyPool } from "./key-pool.ts";

export interface DiscoveryOptions {
  pool: KeyPool;
  checkKey: (secret: string) => Promise<KeyCheck>;
  /** Keys asked about at once. */
  concurrency?: number;
}

/** Resolves when every key has been asked once (tests await it; `serve` does not). */
export async function discoverAccounts({ pool, checkKey, concurrency = 2 }: DiscoveryOptions): Promise<void> {
  // Every key, not only those whose account is unknown: the day's free-model use is news too.
  const queue = pool.records();
  const worker = async () => {
    for (let record = queue.shift(); record; record = queue.shift()) {
      const check = await checkKey(record.secret).catch(() => undefined);
      if (check?.kind !== "valid") continue;
      const { creator_user_id: account, free_model_daily_requests: free } = check.info;
      pool.learn(record.id, {
        ...(account ? { account } : {}),
        ...(typeof free?.used === "number" ? { freeUsed: free.used } : {}),
        ...(typeof free?.limit === "number" ? { freeLimit: free.limit } : {}),
      });
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}
