/**
 * Counter deltas (requests, successes, failures, tokens, cost; lastUsedAt by max) are summed in
 * memory per key and written as one batch at a time, not one write per request: fewer commands on
 * the hot path's side, and a batch can be made idempotent cheaply. Each batch carries an id
 * (`<prefix>batch:<instance>:<n>`); the script applies it only if that id is new, so a batch whose
 * answer was lost (Redis paused past the timeout) is replayed safely and counts once.
 *
 * The marker lives `markerTtlMs` (24 h by default): longer than any replay can come late, at one
 * small key per batch (one a second per instance: ~86,400 a day).
 */
import type { KeyRuntime, CounterDelta } from "../../keys/pool-state.ts";
import type { RedisWrite } from "./connection.ts";
import type { RedisKeys } from "./redis-keys.ts";
import { evalWrite, luaScript } from "./scripts.ts";

// KEYS: the batch marker, then one stats hash per key. ARGV: marker TTL (ms), then six values per
// key: requests, successes, failures, tokens, cost, lastUsedAt. Returns 1 if applied, 0 if the
// batch had been applied before.
export const ADD_COUNTERS = luaScript(`
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
local fields = {'requests', 'successes', 'failures', 'tokens'}
for i = 2, #KEYS do
  local base = (i - 2) * 6 + 1
  for f = 1, 4 do
    local delta = tonumber(ARGV[base + f])
    if delta ~= 0 then redis.call('HINCRBY', KEYS[i], fields[f], delta) end
  end
  if tonumber(ARGV[base + 5]) ~= 0 then redis.call('HINCRBYFLOAT', KEYS[i], 'cost', ARGV[base + 5]) end
  local used = tonumber(ARGV[base + 6])
  if used > tonumber(redis.call('HGET', KEYS[i], 'lastUsedAt') or '0') then redis.call('HSET', KEYS[i], 'lastUsedAt', ARGV[base + 6]) end
end
return 1
`);

type Sums = Pick<KeyRuntime, "requests" | "successes" | "failures" | "tokens" | "cost" | "lastUsedAt">;

export interface CounterBatcher {
  add(keyId: string, delta: CounterDelta, lastUsedAt?: number): void;
  /** Keys with deltas not yet taken. */
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
  let sums = new Map<string, Sums>();
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
    get pending() {
      return sums.size;
    },
    take() {
      if (sums.size === 0) return undefined;
      const taken = sums;
      sums = new Map();
      sequence += 1;
      const hashes: string[] = [];
      const values: string[] = [String(markerTtlMs)];
      for (const [keyId, s] of taken) {
        hashes.push(keys.keyStats(keyId));
        values.push(String(s.requests), String(s.successes), String(s.failures), String(s.tokens), String(s.cost), String(s.lastUsedAt));
      }
      return evalWrite(ADD_COUNTERS, [keys.counterBatch(instanceId, sequence), ...hashes], values, true);
    },
  };
}
