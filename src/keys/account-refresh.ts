/**
 * Keeps what the pool knows about accounts fresh, in the background (never on a request's path):
 * - a key that appears while the server runs (file edit, CLI, admin API) is looked up at once
 *   with GET /key; until that answers or fails the pool gives it no free-model request;
 * - every key is looked up again after each UTC midnight and every hour;
 * - an account resting until its credits return has one of its keys asked every 5 minutes (the
 *   first time 5 minutes after the 402), and the rest ends when the answer says the key may pay
 *   (see `mayPay`: GET /key shows no balance, so the next paid request is the real test).
 * `tick()` does what is due at the pool's clock; a timer calls it in production, tests call it
 * after moving the injected clock, so nothing waits in real time.
 */
import type { EventBus } from "../domain/events.ts";
import { utcDay } from "../domain/time-text.ts";
import type { KeyCheck } from "../domain/key-check.ts";
import { discoverAccounts, factsOf, mayPay } from "./account-discovery.ts";
import type { KeyPool } from "./key-pool.ts";
import { UNTIL_CLEARED_HORIZON_MS } from "./rests.ts";

export const REFRESH_EVERY_MS = 3_600_000;
export const CREDITS_CHECK_EVERY_MS = 5 * 60_000;

export interface AccountRefresher {
  /** Does what is due now: the daily and hourly refresh, the credit checks. */
  tick(): Promise<void>;
  /** Settles when every lookup started so far has answered (tests). */
  idle(): Promise<void>;
  stop(): void;
}

export interface AccountRefresherOptions {
  pool: KeyPool;
  checkKey: (secret: string) => Promise<KeyCheck>;
  events: EventBus;
  now?: () => number;
  /** How often the timer calls `tick` (real time); 0: no timer. */
  tickEveryMs?: number;
  /** When the keys found at startup were looked up (their first refresh is due an hour later). */
  startedAt?: number;
  /**
   * With REDIS_URL: whether this instance holds the discovery lease (store/redis/redis-backend.ts).
   * Without it the hourly and daily refresh is left to the holder, and a key that appears is
   * looked up here only if the holder's facts have not arrived within `factsWaitMs`.
   */
  holdsLease?: () => boolean;
  factsWaitMs?: number;
  /** Called after a lookup taught the pool about a key (the holder publishes it). */
  onLearned?: (keyId: string) => void;
}

export const FACTS_WAIT_MS = 30_000;

export function startAccountRefresher({
  pool,
  checkKey,
  events,
  now = Date.now,
  tickEveryMs = 30_000,
  startedAt = now(),
  holdsLease = () => true,
  factsWaitMs = FACTS_WAIT_MS,
  onLearned,
}: AccountRefresherOptions): AccountRefresher {
  const running = new Set<Promise<void>>();
  let lastRefresh = startedAt;
  let lastDay = utcDay(startedAt);
  const lastCreditCheck = new Map<string, number>();
  let ticking: Promise<void> | undefined;

  const track = (work: Promise<void>) => {
    running.add(work);
    void work.finally(() => running.delete(work));
    return work;
  };
  const lookUp = (keyIds: string[]) =>
    track(
      (async () => {
        // key.added is announced while the pool swaps its list in: look once the swap is done.
        await Promise.resolve();
        await discoverAccounts({ pool, checkKey, keyIds, now, ...(onLearned ? { onLearned } : {}) });
      })().catch(() => {}),
    );

  // Not the holder: the holder's facts usually arrive within a second; if they do not (it died
  // before asking), the key is looked up here, so it is never kept from free models for long.
  const waiting = new Set<ReturnType<typeof setTimeout>>();
  const lookUpUnlessLearned = (keyId: string) => {
    const timer = setTimeout(() => {
      waiting.delete(timer);
      if (pool.pendingLookups().includes(keyId)) void lookUp([keyId]);
    }, factsWaitMs);
    timer.unref?.();
    waiting.add(timer);
  };
  const unsubscribe = events.on("key.added", ({ keyId }) => (holdsLease() ? void lookUp([keyId]) : lookUpUnlessLearned(keyId)));

  async function creditChecks(at: number): Promise<void> {
    for (const view of pool.accountViews()) {
      const unpaid = view.rests.filter((rest) => rest.untilCleared);
      if (unpaid.length === 0) continue;
      // Counted from the later of the last check and the rest itself: a rest is never lifted sooner.
      const restedAt = Math.max(...unpaid.map((rest) => Date.parse(rest.until) - UNTIL_CLEARED_HORIZON_MS));
      if (at - Math.max(lastCreditCheck.get(view.id) ?? 0, restedAt) < CREDITS_CHECK_EVERY_MS) continue;
      lastCreditCheck.set(view.id, at);
      const keyId = view.keyIds[0];
      const record = pool.records().find((candidate) => candidate.id === keyId);
      if (!record) continue;
      const check = await checkKey(record.secret).catch(() => undefined);
      if (check?.kind !== "valid") continue;
      pool.learn(record.id, factsOf(check.info, now()));
      onLearned?.(record.id);
      if (mayPay(check.info)) pool.paidAgain(record.id);
    }
  }

  async function due(): Promise<void> {
    const at = now();
    if (utcDay(at) !== lastDay || at - lastRefresh >= REFRESH_EVERY_MS) {
      lastDay = utcDay(at);
      lastRefresh = at;
      // The holder refreshes for every instance; the others hear what it learns.
      if (holdsLease()) await lookUp(pool.records().map((record) => record.id));
    }
    // Every instance checks its own accounts resting until credits return: such a rest is not
    // shared (shared-pool.ts), so only this instance's own check can end it here.
    await creditChecks(at);
  }

  const timer = tickEveryMs > 0 ? setInterval(() => void refresher.tick(), tickEveryMs) : undefined;
  timer?.unref?.();

  const refresher: AccountRefresher = {
    tick() {
      // One tick at a time: a slow GET /key must not pile up checks of the same account.
      ticking ??= track(due().finally(() => (ticking = undefined)));
      return ticking;
    },
    async idle() {
      while (running.size > 0) await Promise.all([...running]);
    },
    stop() {
      unsubscribe();
      if (timer) clearInterval(timer);
      for (const pending of waiting) clearTimeout(pending);
      waiting.clear();
    },
  };
  return refresher;
}
