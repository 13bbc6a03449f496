/**
 * The pool and the shared state in Redis, wired both ways:
 *
 * - out: the pool's stream of decisions (`pool.onChange`) goes to the change writer, which never
 *   waits: the hot path only hands changes over. The writer's table says where each kind lands.
 *   Two things the pool's decisions do not say are added here: the tokens and cost of a finished
 *   request (usage arrives after the answer was relayed, long after `report`), and the end of a
 *   failure streak that another instance counted;
 * - in: changes other instances publish, and Redis's verdict when this instance's failure reached
 *   FAILURE_THRESHOLD across instances, go to `pool.apply`; a full resync (every (re)subscribe,
 *   and every `resyncMs` as the backstop for anything the channel missed) applies every instant
 *   Redis holds and takes the day's free-model counts as a floor. What the pool applies is never
 *   handed back out, so nothing heard is published again;
 * - before: a free-model request reserves its slot in Redis before it is sent (`freeSlotReserve`).
 */
import { classOfModel } from "../../domain/model-class.ts";
import type { Outcome } from "../../domain/outcome.ts";
import { nextUtcMidnight } from "../../domain/time-text.ts";
import type { KeyLease, KeyPool } from "../../keys/key-pool.ts";
import { utcDayOf } from "../../keys/account-state.ts";
import type { Reserve } from "../../upstream/forward-types.ts";
import { freeDayUsedUp } from "../../upstream/policy.ts";
import type { StateChange } from "../../keys/state-change.ts";
import type { EventBus } from "../../domain/events.ts";
import { readSharedSnapshot } from "./shared-snapshot.ts";
import type { SharedState } from "./shared-state.ts";

export interface SharedPoolOptions {
  pool: KeyPool;
  shared: SharedState;
  events: EventBus;
  now: () => number;
  /** The backstop resync's period. */
  resyncMs?: number;
}

export interface SharedPool {
  /**
   * The first resync, started with the wiring: Redis was subscribed to before the pool was wired,
   * so the resync that subscribing runs found no pool, and what Redis holds (account rests, the
   * day's free counts and limits) would otherwise wait for the backstop.
   */
  synced: Promise<boolean>;
  /** The discovery lease holder's GET /key taught the pool about a key: tell the other instances. */
  publishLearned(keyId: string): void;
  stop(): Promise<void>;
}

export function startSharedPool({ pool, shared, events, now, resyncMs = 5_000 }: SharedPoolOptions): SharedPool {
  const record = (change: StateChange): void => shared.writer.record(change);
  /**
   * Keys with a failure streak in Redis, as far as this instance knows (its own failures, and what
   * each resync reads): only their successes are written, so a healthy pool's paid requests cost
   * Redis nothing but their share of the counter batch.
   */
  const streaking = new Set<string>();

  const publish = (changes: readonly StateChange[]): void => {
    for (const change of changes) {
      switch (change.kind) {
        case "free-requests":
          continue; // the free-model reservation counted the request in Redis before it was sent
        case "key-failure":
          streaking.add(change.keyId);
          break;
        case "key-success":
          streaking.delete(change.keyId);
          break;
        case "key-counters":
          // This pool saw no streak, another instance did: this success ends it in Redis too.
          if (change.delta.successes && streaking.delete(change.keyId)) record({ kind: "key-success", keyId: change.keyId, basis: basisOf(change.keyId), at: now() });
          break;
      }
      record(change);
    }
  };
  const basisOf = (keyId: string): number => pool.records().find((key) => key.id === keyId)?.resetAt ?? 0;

  const offs = [
    pool.onChange(publish),
    events.on("request.done", ({ keyId, usage }) => {
      const tokens = usage?.totalTokens ?? 0;
      const cost = usage?.cost ?? 0;
      if (keyId !== undefined && (tokens !== 0 || cost !== 0)) record({ kind: "key-counters", keyId, delta: { tokens, cost } });
    }),
    shared.onRemoteChange((change) => (change.kind === "key-account" ? learnAccount(change) : pool.apply(change))),
    shared.onVerdict((change) => pool.apply(change)),
    shared.onResync(async () => {
      await resync();
    }),
  ];

  /**
   * Another instance's GET /key named a key's account (which also ends the wait of a key just
   * added here). The key list may bring the key a moment after the news: kept until it does.
   */
  const heardAccounts = new Map<string, Extract<StateChange, { kind: "key-account" }>>();
  const learnAccount = (change: Extract<StateChange, { kind: "key-account" }>): void => {
    if (pool.records().some((record) => record.id === change.keyId)) pool.apply(change);
    else heardAccounts.set(change.keyId, change);
  };
  offs.push(
    events.on("key.added", ({ keyId }) => {
      const change = heardAccounts.get(keyId);
      if (change === undefined) return;
      heardAccounts.delete(keyId);
      // key.added is announced while the pool swaps its list in: apply once the swap is done.
      queueMicrotask(() => learnAccount(change));
    }),
  );

  const publishLearned = (keyId: string): void => {
    const account = pool.records().find((record) => record.id === keyId)?.account;
    if (account === undefined) return;
    record({ kind: "key-account", keyId, account });
    publishFreeLimit(account);
  };

  const publishFreeLimit = (account: string): void => {
    const free = pool.freeBudget(account);
    if (free?.limit === undefined) return;
    record({ kind: "free-limit", account, day: free.day, limit: free.limit, learnedAt: now() });
  };

  const resync = async (): Promise<boolean> => {
    const day = utcDayOf(now());
    const snapshot = await readSharedSnapshot(shared.connection, shared.keys, { keyIds: [], day });
    if (!snapshot.ok) return false;
    for (const change of snapshot.value.instants) pool.apply(change);
    for (const [keyId, count] of snapshot.value.streaks) if (count > 0) streaking.add(keyId);
    const local = pool.accounts();
    for (const [account, { used, limit }] of snapshot.value.free) {
      const mine = local.get(account)?.free;
      const counted = mine?.day === day ? mine.used : 0;
      if (limit !== undefined && mine?.limit !== limit) pool.apply({ kind: "free-limit", account, day, limit, learnedAt: now() });
      // Redis holds every instance's count (reservations included): it is the floor of ours.
      if (used > counted) pool.apply({ kind: "free-requests", account, day, delta: used - counted });
    }
    return true;
  };

  const timer = setInterval(() => void resync(), resyncMs);
  timer.unref?.();

  return {
    synced: resync(),
    publishLearned,
    async stop() {
      clearInterval(timer);
      for (const off of offs) off();
      await shared.writer.flush();
      await shared.writer.idle();
    },
  };
}

/**
 * Free-model requests reserve their slot in Redis before they are sent: one script checks the
 * account's daily count against its known limit and counts the request, so N instances never
 * send an account more free requests than its limit. The request run asks for every key the pool
 * hands it (`Reserve`, upstream/forward-types.ts): a paid request is answered at once and never
 * waits on Redis; a free one waits for one script call at most (the connection's timeout).
 *
 * - granted: the request goes upstream on that key;
 * - refused: the account's day is used up (elsewhere: this pool's count is behind). The answer is
 *   the outcome OpenRouter's own free-models-per-day 429 has (policy.ts), with the limit Redis
 *   holds and the reset at 00:00 UTC: the run reports it (the account's free class rests) and
 *   tries another key. Nothing is sent upstream for it;
 * - Redis away (timeout, breaker open): granted, as without Redis, and the request is counted for
 *   the day once Redis is back (the change writer's counter batch).
 */
export function freeSlotReserve({ pool, shared, now }: { pool: KeyPool; shared: SharedState; now: () => number }): Reserve {
  const reserve = async ({ account }: KeyLease, at: number): Promise<Outcome | undefined> => {
    const day = utcDayOf(at);
    const free = pool.freeBudget(account);
    const slot = await shared.scripts.reserveFreeSlot({ account, day, knownLimit: free?.day === day ? free.limit : undefined });
    if (!slot.ok) {
      shared.writer.record({ kind: "free-requests", account, day, delta: 1 });
      return undefined;
    }
    if (slot.value.granted) return undefined;
    const limit = slot.value.limit ?? slot.value.used;
    // The reset is the one OpenRouter documents for this limit (00:00 UTC), as its 429 announces it.
    return freeDayUsedUp({ until: nextUtcMidnight(at), source: "header" }, `free-model slot refused: the account's ${limit} free requests for ${day} are used up (counted in Redis across the instances)`, limit);
  };
  return (lease, model) => (classOfModel(model) === "free" ? reserve(lease, now()) : undefined);
}
