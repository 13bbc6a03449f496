/**
 * A lease in Redis: work that one instance should do for all (account discovery, `GET /key` in
 * the background; importing KEYS_FILE into an empty Redis once) is done by whoever holds it.
 * The holder renews it well within `ttlMs`; if it dies, the lease expires and another instance
 * takes it. Only the holder can renew or release it (compare-and-act in one script), so an
 * instance that was paused past the TTL cannot cut short its successor's lease.
 */
import type { CallResult, RedisConnection } from "./connection.ts";
import { luaScript, runScript } from "./scripts.ts";

// KEYS: the lease. ARGV: holder, ttl (ms). 1 when held by ARGV[1] afterwards (taken or renewed).
export const TAKE_LEASE = luaScript(`
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`);

// KEYS: the lease. ARGV: holder. 1 when it was ours and is now free.
export const RELEASE_LEASE = luaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

export interface Lease {
  /** Takes the lease if free, renews it if ours; ok(true) when we hold it afterwards. */
  take(): Promise<CallResult<boolean>>;
  /** Frees it if we hold it (on shutdown), so another instance takes over without waiting. */
  release(): Promise<CallResult<boolean>>;
}

export interface LeaseOptions {
  connection: RedisConnection;
  /** The Redis key, e.g. `<prefix>lease:discovery`. */
  key: string;
  /** This instance's id (random per process). */
  holder: string;
  ttlMs: number;
}

export function createLease({ connection, key, holder, ttlMs }: LeaseOptions): Lease {
  const held = (result: CallResult<unknown>): CallResult<boolean> => (result.ok ? { ok: true, value: result.value === 1 } : result);
  return {
    take: async () => held(await runScript(connection, TAKE_LEASE, [key], [holder, String(ttlMs)])),
    release: async () => held(await runScript(connection, RELEASE_LEASE, [key], [holder])),
  };
}
