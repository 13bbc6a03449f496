/**
 * The pool and the shared state in Redis, wired both ways (issue 14), without touching the pool's
 * decisions:
 *
 * - out: the pool's decision events (key.cooldown, key.failure, key.disabled, account.rest) and
 *   each finished request (success: the failure streak ends; counters) become `StateChange`s for
 *   the change writer, which never waits: the hot path only hands them over;
 * - in: changes other instances publish, and Redis's verdict when this instance's failure reached
 *   FAILURE_THRESHOLD across instances, go to `pool.apply`; a full resync (every (re)subscribe,
 *   and every `resyncMs` as the backstop for anything the channel missed) applies every instant
 *   Redis holds and takes the day's free-model counts as a floor.
 *
 * A change being applied here makes the pool emit nothing it would publish, but the account
 * book does announce rests it adds: `applying` keeps those from being sent back out.
 */
import type { KeyPool } from "../../keys/key-pool.ts";
import { utcDayOf } from "../../keys/account-state.ts";
import type { StateChange } from "../../keys/pool-state.ts";
import type { EventBus } from "../../domain/events.ts";
import type { RedisKeyStore } from "./redis-key-store.ts";
import { readSharedSnapshot } from "./shared-snapshot.ts";
import type { SharedState } from "./shared-state.ts";

export interface SharedPoolOptions {
  pool: KeyPool;
  shared: SharedState;
  store: RedisKeyStore;
  events: EventBus;
  now: () => number;
  /** The backstop resync's period. */
  resyncMs?: number;
}

export interface SharedPool {
  /** Reads everything Redis holds and applies it (also run by the timer and on every subscribe). */
  resync(): Promise<boolean>;
  /** The discovery lease holder's GET /key taught the pool about a key: tell the other instances. */
  publishLearned(keyId: string): void;
  stop(): Promise<void>;
}

export function startSharedPool({ pool, shared, store, events, now, resyncMs = 5_000 }: SharedPoolOptions): SharedPool {
  let applying = false;
  const apply = (change: StateChange): void => {
    applying = true;
    try {
      pool.apply(change);
    } finally {
      applying = false;
    }
  };
  const record = (change: StateChange): void => {
    if (!applying) shared.writer.record(change);
  };
  const basis = (keyId: string): number => store.switchVersion(keyId);
  /**
   * Keys with a failure streak in Redis, as far as this instance knows (its own failures, and what
   * each resync reads): only their successes are written, so a healthy pool's paid requests cost
   * Redis nothing but their share of the counter batch.
   */
  const streaking = new Set<string>();

  const offs = [
    events.on("key.cooldown", ({ keyId, until, source, reason }) => record({ kind: "key-cooldown", keyId, basis: basis(keyId), until, source, reason })),
    events.on("key.failure", ({ keyId }) => {
      streaking.add(keyId);
      record({ kind: "key-failure", keyId, basis: basis(keyId), at: now() });
    }),
    events.on("key.disabled", ({ keyId, reason }) => {
      // A person's disable is a key-list edit (the store's); this is the pool's own verdict.
      if (!store.personDisabled(keyId)) record({ kind: "key-disabled", keyId, basis: basis(keyId), since: now(), reason });
    }),
    events.on("account.rest", (rest) => {
      // A rest until credits come back has no end an instant can carry (only a later GET /key
      // ends it, and an extend-only instant would outlive that): each instance learns it itself.
      if (applying || rest.scope === "key" || rest.source === "until-credits") return;
      const cause = { until: rest.until, source: rest.source, reason: rest.reason };
      if (rest.scope === "model" && rest.model !== undefined) record({ kind: "model-rest", account: rest.account, model: rest.model, ...cause });
      else if (rest.modelClass === "all" || rest.modelClass === "free" || rest.modelClass === "paid") record({ kind: "account-rest", account: rest.account, modelClass: rest.modelClass, ...cause });
      // A daily free limit is learned right after its rest (outcome-rests.ts): publish it too,
      // so every instance's reservations check it.
      if (rest.modelClass !== "paid") queueMicrotask(() => publishFreeLimit(rest.account));
    }),
    events.on("request.done", (done) => {
      if (done.keyId === undefined) return;
      const ok = done.status >= 200 && done.status < 400;
      if (ok && streaking.delete(done.keyId)) record({ kind: "key-success", keyId: done.keyId, basis: basis(done.keyId), at: now() });
      record({
        kind: "key-counters",
        keyId: done.keyId,
        delta: { requests: 1, successes: ok ? 1 : 0, failures: ok ? 0 : 1, tokens: done.usage?.totalTokens ?? 0, cost: done.usage?.cost ?? 0 },
        lastUsedAt: done.startedAt,
      });
    }),
    shared.onRemoteChange((change) => (change.kind === "key-account" ? learnAccount(change.keyId, change.account) : apply(change))),
    shared.onVerdict(apply),
    shared.onResync(async () => {
      await resync();
    }),
  ];

  /**
   * Another instance's GET /key named a key's account: learned as if asked here (which also ends
   * the wait of a key just added). The key list may bring the key a moment after the news: kept
   * until it does.
   */
  const heardAccounts = new Map<string, string>();
  const learnAccount = (keyId: string, account: string): void => {
    if (!pool.records().some((record) => record.id === keyId)) {
      heardAccounts.set(keyId, account);
      return;
    }
    applying = true;
    try {
      pool.learn(keyId, { account });
    } finally {
      applying = false;
    }
  };
  offs.push(
    events.on("key.added", ({ keyId }) => {
      const account = heardAccounts.get(keyId);
      if (account === undefined) return;
      heardAccounts.delete(keyId);
      // key.added is announced while the pool swaps its list in: learn once the swap is done.
      queueMicrotask(() => learnAccount(keyId, account));
    }),
  );

  const publishLearned = (keyId: string): void => {
    const account = pool.records().find((record) => record.id === keyId)?.account;
    if (account === undefined) return;
    record({ kind: "key-account", keyId, account });
    publishFreeLimit(account);
  };

  const publishFreeLimit = (account: string): void => {
    const free = pool.accounts().get(account)?.free;
    if (free?.limit === undefined) return;
    record({ kind: "free-limit", account, day: free.day, limit: free.limit, learnedAt: now() });
  };

  const resync = async (): Promise<boolean> => {
    const day = utcDayOf(now());
    const snapshot = await readSharedSnapshot(shared.connection, shared.keys, { keyIds: [], day });
    if (!snapshot.ok) return false;
    for (const change of snapshot.value.instants) apply(change);
    for (const [keyId, count] of snapshot.value.streaks) if (count > 0) streaking.add(keyId);
    const local = pool.accounts();
    for (const [account, { used, limit }] of snapshot.value.free) {
      const mine = local.get(account)?.free;
      const counted = mine?.day === day ? mine.used : 0;
      if (limit !== undefined && mine?.limit !== limit) apply({ kind: "free-limit", account, day, limit, learnedAt: now() });
      // Redis holds every instance's count (reservations included): it is the floor of ours.
      if (used > counted) apply({ kind: "free-requests", account, day, delta: used - counted });
    }
    return true;
  };

  const timer = setInterval(() => void resync(), resyncMs);
  timer.unref?.();

  return {
    resync,
    publishLearned,
    async stop() {
      clearInterval(timer);
      for (const off of offs) off();
      await shared.writer.flush();
      await shared.writer.idle();
    },
  };
}
