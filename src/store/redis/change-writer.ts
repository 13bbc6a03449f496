/**
 * Where each change the pool makes goes in Redis, by its merge rule, so the pool only hands its
 * changes over (`record`, synchronous, never waits) and carries on:
 *
 * | change                       | in Redis                                         | published |
 * | ---------------------------- | ------------------------------------------------ | --------- |
 * | key-cooldown, key-disabled   | extend-only instant (void before a person's switch) | yes    |
 * | account-rest, model-rest     | extend-only instant                              | yes       |
 * | key-failure                  | the failure script; at the threshold Redis disables the key once, and that verdict is published and handed to `onVerdict` | verdict |
 * | key-success                  | the streak reset                                 | no        |
 * | key-counters, free-requests  | summed into the next counter batch (every `flushMs`) | no    |
 * | free-limit                   | the day's known limit                            | yes       |
 * | key-account                  | (the key list keeps accounts)                    | yes       |
 * | key-edit                     | not here: people's edits go through key-list.ts  | —         |
 * | local kinds and rests (state-change.ts): a key's own rest, one until credits, a privacy rest, `free-used`, `key-limit`, `rests-cleared` | nowhere | no |
 *
 * `free-requests` is only for requests sent without a reservation (Redis was away): a granted
 * reservation has already counted its request. Writes go through the connection's queue, so an
 * outage delays them and never loses an instant.
 *
 * Counter deltas are summed in memory and written as one batch at a time, not one write per
 * request: per key (requests, successes, failures, tokens, cost; lastUsedAt by max) and per
 * account and UTC day for free requests sent without a reservation. Each batch carries an id
 * (`<prefix>batch:<instance>:<n>`); the script applies it only if that id is new, so a batch whose
 * answer was lost (Redis paused past the timeout) is replayed safely and counts once. The marker
 * lives `markerTtlMs` (24 h by default): longer than any replay can come late, at one small key per
 * batch (one a second per instance: ~86,400 a day).
 */
import type { CounterDelta, CounterTotals, StateChange } from "../../keys/state-change.ts";
import type { RedisConnection, RedisWrite } from "./connection.ts";
import { freeDayExpiry, type RedisKeys } from "./redis-keys.ts";
import { evalWrite, luaScript, type SharedStateScripts } from "./scripts.ts";

export interface ChangeWriterOptions {
  connection: RedisConnection;
  scripts: SharedStateScripts;
  batcher: CounterBatcher;
  /** Tells the other instances (best effort, never queued: shared-state.ts). */
  publish(change: StateChange): Promise<unknown>;
  /** FAILURE_THRESHOLD: consecutive failures (counted across instances) that disable a key. */
  failureThreshold: number;
  /** How often counter deltas are written (one batch each time). */
  flushMs?: number;
  /** Redis disabled a key (this instance's failure reached the threshold): apply it locally too. */
  onVerdict?(change: Extract<StateChange, { kind: "key-disabled" }>): void;
}

export interface ChangeWriter {
  /** Hands a change over; never waits, never throws. */
  record(change: StateChange): void;
  /** Writes the pending counter batch now (at shutdown); resolves once sent or queued. */
  flush(): Promise<void>;
  /** Resolves when every write handed over so far is sent or queued (shutdown, tests). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export function createChangeWriter({
  connection,
  scripts,
  batcher,
  publish: send,
  failureThreshold,
  flushMs = 1_000,
  onVerdict,
}: ChangeWriterOptions): ChangeWriter {
  let inFlight = 0;
  const waiters: Array<() => void> = [];
  const track = (work: Promise<unknown>): void => {
    inFlight += 1;
    void work.finally(() => {
      inFlight -= 1;
      if (inFlight === 0) for (const wake of waiters.splice(0)) wake();
    });
  };
  const publish = (change: StateChange): void => track(send(change));
  const write = (...writes: RedisWrite[]): void => {
    for (const each of writes) track(connection.write(each));
  };

  const recordFailure = async (change: Extract<StateChange, { kind: "key-failure" }>): Promise<void> => {
    const reason = "consecutive failures reached FAILURE_THRESHOLD";
    const result = await scripts.recordFailure({ keyId: change.keyId, basis: change.basis, threshold: failureThreshold, now: change.at, reason });
    if (!result.ok || result.value === "void" || !result.value.disabled) return;
    const verdict: Extract<StateChange, { kind: "key-disabled" }> = { kind: "key-disabled", keyId: change.keyId, basis: change.basis, since: change.at, reason };
    publish(verdict);
    onVerdict?.(verdict);
  };

  const flush = async (): Promise<void> => {
    const batch = batcher.take();
    if (batch) await connection.write(batch);
  };
  const timer = setInterval(() => void flush(), flushMs);
  timer.unref?.();

  return {
    record(change) {
      switch (change.kind) {
        case "key-cooldown":
          write(scripts.extendCooldown({ keyId: change.keyId, basis: change.basis, until: change.until, cause: change }));
          return publish(change);
        case "key-disabled":
          write(scripts.extendDisabled(change));
          return publish(change);
        case "account-rest":
        case "model-rest": {
          // No instant carries these: a key's own cap, a rest until credits are seen again (only a
          // later GET /key ends it, and an extend-only instant would outlive that), a privacy
          // setting (a soft rest, which the shared cause text cannot say). Each instance learns them.
          if (change.cause === "privacy" || (change.kind === "account-rest" && (change.keyId !== undefined || change.untilCleared))) return;
          const restId = change.kind === "account-rest" ? `class:${change.modelClass}` : `model:${change.model}`;
          write(scripts.extendRest({ account: change.account, restId, until: change.until, cause: change }));
          return publish(change);
        }
        case "key-failure":
          // Redis decides the threshold across instances; without Redis the pool's own count does.
          track(recordFailure(change));
          return;
        case "key-success":
          return write(scripts.recordSuccess(change.keyId, change.basis));
        case "key-counters":
          return batcher.add(change.keyId, change.delta, change.lastUsedAt);
        case "free-requests":
          return batcher.addFree(change.account, change.day, change.delta);
        case "free-limit":
          write(...scripts.learnFreeLimit(change.account, change.day, change.limit));
          return publish(change);
        case "key-account":
          return publish(change);
        case "key-edit":
          return; // people's edits: key-list.ts
        case "free-used":
        case "key-limit":
        case "rests-cleared":
          return; // local (state-change.ts)
      }
    },
    flush,
    idle: () => (inFlight === 0 ? Promise.resolve() : new Promise((resolve) => waiters.push(resolve))),
    async close() {
      clearInterval(timer);
      await flush();
    },
  };
}

// KEYS: the batch marker, then the hashes to change. ARGV: marker TTL (ms), then per hash: the
// number of operations, then (field, op, value) for each: 'i' HINCRBY, 'f' HINCRBYFLOAT, 'm' raise
// to value (max), 'x' EXPIREAT value NX (the field is ignored). Returns 1 if applied, 0 if the
// batch had been applied before.
const APPLY_BATCH = luaScript(`
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local at = 2
for i = 2, #KEYS do
  local count = tonumber(ARGV[at])
  at = at + 1
  for _ = 1, count do
    local field, op, value = ARGV[at], ARGV[at + 1], ARGV[at + 2]
    at = at + 3
    if op == 'i' then redis.call('HINCRBY', KEYS[i], field, value)
    elseif op == 'f' then redis.call('HINCRBYFLOAT', KEYS[i], field, value)
    elseif op == 'm' then
      if tonumber(value) > tonumber(redis.call('HGET', KEYS[i], field) or '0') then redis.call('HSET', KEYS[i], field, value) end
    elseif op == 'x' then redis.call('EXPIREAT', KEYS[i], value, 'NX')
    end
  end
end
return 1
`);

export interface CounterBatcher {
  add(keyId: string, delta: CounterDelta, lastUsedAt?: number): void;
  /** Free-model requests an account was sent without a reservation in Redis (it was away). */
  addFree(account: string, day: string, delta: number): void;
  /** The deltas so far as one idempotent write (and a fresh start), or undefined when there are none. */
  take(): RedisWrite | undefined;
}

/**
 * `instanceId` is unique per process run (a random id): batch numbers start again at 1 in a new
 * process, and a reused id would make its first batches look like replays.
 */
export function createCounterBatcher({ keys, instanceId, markerTtlMs = 86_400_000 }: { keys: RedisKeys; instanceId: string; markerTtlMs?: number }): CounterBatcher {
  let sums = new Map<string, CounterTotals>();
  /** day → account → free requests */
  let free = new Map<string, Map<string, number>>();
  let sequence = 0;
  return {
    add(keyId, delta, lastUsedAt = 0) {
      const current = sums.get(keyId) ?? { requests: 0, successes: 0, failures: 0, tokens: 0, cost: 0, lastUsedAt: 0 };
      current.requests += delta.requests ?? 0;
      current.successes += delta.successes ?? 0;
      current.failures += delta.failures ?? 0;
      current.tokens += delta.tokens ?? 0;
      current.cost += delta.cost ?? 0;
      current.lastUsedAt = Math.max(current.lastUsedAt, lastUsedAt);
      sums.set(keyId, current);
    },
    addFree(account, day, delta) {
      const accounts = free.get(day) ?? new Map<string, number>();
      accounts.set(account, (accounts.get(account) ?? 0) + delta);
      free.set(day, accounts);
    },
    take() {
      if (sums.size === 0 && free.size === 0) return undefined;
      const [takenCounterTotals, takenFree] = [sums, free];
      sums = new Map();
      free = new Map();
      sequence += 1;
      const hashes: string[] = [];
      const args: string[] = [String(markerTtlMs)];
      const operations = (list: Array<[string, "i" | "f" | "m" | "x", number]>): void => {
        const kept = list.filter(([, op, value]) => op === "x" || value !== 0);
        args.push(String(kept.length));
        for (const [field, op, value] of kept) args.push(field, op, String(value));
      };
      for (const [keyId, s] of takenCounterTotals) {
        hashes.push(keys.keyStats(keyId));
        operations([
          ["requests", "i", s.requests],
          ["successes", "i", s.successes],
          ["failures", "i", s.failures],
          ["tokens", "i", s.tokens],
          ["cost", "f", s.cost],
          ["lastUsedAt", "m", s.lastUsedAt],
        ]);
      }
      for (const [day, accounts] of takenFree) {
        hashes.push(keys.freeDay(day));
        operations([...[...accounts].map(([account, delta]): [string, "i", number] => [`used:${account}`, "i", delta]), ["", "x", freeDayExpiry(day)]]);
      }
      return evalWrite(APPLY_BATCH, [keys.counterBatch(instanceId, sequence), ...hashes], args, true);
    },
  };
}
