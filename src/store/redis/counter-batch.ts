/**
 * Counter deltas are summed in memory and written as one batch at a time, not one write per
 * request: per key (requests, successes, failures, tokens, cost; lastUsedAt by max) and, for free
 * models served while Redis could not reserve (it was away: the instance served from memory), per
 * account and UTC day. Each batch carries an id (`<prefix>batch:<instance>:<n>`); the script
 * applies it only if that id is new, so a batch whose answer was lost (Redis paused past the
 * timeout) is replayed safely and counts once.
 *
 * The marker lives `markerTtlMs` (24 h by default): longer than any replay can come late, at one
 * small key per batch (one a second per instance: ~86,400 a day).
 */
import type { CounterDelta, CounterTotals } from "../../keys/pool-state.ts";
import type { RedisWrite } from "./connection.ts";
import { freeDayExpiry, type RedisKeys } from "./redis-keys.ts";
import { evalWrite, luaScript } from "./scripts.ts";

// KEYS: the batch marker, then the hashes to change. ARGV: marker TTL (ms), then per hash: the
// number of operations, then (field, op, value) for each: 'i' HINCRBY, 'f' HINCRBYFLOAT, 'm' raise
// to value (max), 'x' EXPIREAT value NX (the field is ignored). Returns 1 if applied, 0 if the
// batch had been applied before.
export const APPLY_BATCH = luaScript(`
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
  /** Keys and account-days with deltas not yet taken. */
  readonly pending: number;
  /** The deltas so far as one idempotent write (and a fresh start), or undefined when there are none. */
  take(): RedisWrite | undefined;
}

export interface CounterBatcherOptions {
  keys: RedisKeys;
  /**
   * Unique per process run (a random id): batch numbers start again at 1 in a new process, and
   * a reused id would make its first batches look like replays.
   */
  instanceId: string;
  markerTtlMs?: number;
}

export function createCounterBatcher({ keys, instanceId, markerTtlMs = 86_400_000 }: CounterBatcherOptions): CounterBatcher {
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
    get pending() {
      let days = 0;
      for (const accounts of free.values()) days += accounts.size;
      return sums.size + days;
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
