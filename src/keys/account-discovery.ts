/**
 * Learns which account each key belongs to (and how much of its daily free-model budget is
 * used, and the key's own spending cap) by asking `GET /key`, in the background: never on a
 * request's path, two keys at a time. Keys whose account stays unknown keep counting as an
 * account of their own.
 */
import type { KeyCheck, KeyInfo } from "../domain/key-check.ts";
import type { KeyFacts, KeyPool } from "./key-pool.ts";

export interface DiscoveryOptions {
  pool: KeyPool;
  checkKey: (secret: string) => Promise<KeyCheck>;
  /** Keys asked about at once. */
  concurrency?: number;
  /** Only these keys (default: every key). */
  keyIds?: readonly string[];
  now?: () => number;
  /** Called after each key's lookup answered (with REDIS_URL the holder publishes what it learned). */
  onLearned?: (keyId: string) => void;
}

/** What of a GET /key answer the pool keeps (add-key stores the same in the file). */
export function factsOf(info: KeyInfo, at: number): KeyFacts {
  const { creator_user_id: account, free_model_daily_requests: free } = info;
  return {
    ...(account ? { account } : {}),
    ...(typeof free?.used === "number" ? { freeUsed: free.used } : {}),
    ...(typeof free?.limit === "number" ? { freeLimit: free.limit } : {}),
    keyLimit: { limit: info.limit ?? null, remaining: info.limit_remaining ?? null, reset: info.limit_reset ?? null, checkedAt: at },
  };
}

/**
 * Whether a key may pay again. GET /key carries no account balance (it is not in OpenRouter's
 * answer), so the most it can show is that the key answers and its own cap is not spent; the next
 * paid request is the real test, and another 402 rests the account again.
 */
export function mayPay(info: KeyInfo): boolean {
  return info.limit === null || info.limit === undefined || (info.limit_remaining ?? 0) > 0;
}

/** Resolves when every key has been asked once (tests await it; `serve` does not). */
export async function discoverAccounts({ pool, checkKey, concurrency = 2, keyIds, now = Date.now, onLearned }: DiscoveryOptions): Promise<void> {
  // Every key, not only those whose account is unknown: the day's free-model use is news too.
  const wanted = keyIds ? new Set(keyIds) : undefined;
  const queue = pool.records().filter((record) => !wanted || wanted.has(record.id));
  const worker = async () => {
    for (let record = queue.shift(); record; record = queue.shift()) {
      const check = await checkKey(record.secret).catch(() => undefined);
      // Answered or failed, the key is known now as far as it can be: a failed lookup learns nothing.
      pool.learn(record.id, check?.kind === "valid" ? factsOf(check.info, now()) : {});
      if (check?.kind === "valid") onLearned?.(record.id);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}
