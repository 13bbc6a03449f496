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
const TAKE_LEASE = luaScript(`
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`);

// KEYS: the lease. ARGV: holder. 1 when it was ours and is now free.
const RELEASE_LEASE = luaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

interface LeaseOptions {
  connection: RedisConnection;
  /** The Redis key, e.g. `<prefix>lease:discovery`. */
  key: string;
  /** This instance's id (random per process). */
  holder: string;
  ttlMs: number;
}

export function createLease({ connection, key, holder, ttlMs }: LeaseOptions) {
  const held = (result: CallResult<unknown>): CallResult<boolean> => (result.ok ? { ok: true, value: result.value === 1 } : result);
  return {
    /** Takes the lease if free, renews it if ours; ok(true) when we hold it afterwards. */
    take: async () => held(await runScript(connection, TAKE_LEASE, [key], [holder, String(ttlMs)])),
    /** Frees it if we hold it (on shutdown), so another instance takes over without waiting. */
    release: async () => held(await runScript(connection, RELEASE_LEASE, [key], [holder])),
  };
}

/**
 * Account discovery under the lease: one instance at a time looks keys up for all and publishes
 * what it learns (shared-pool.ts `publishLearned`), so N instances do not ask OpenRouter N times
 * about every key. The lease is taken at start and renewed every third of its TTL (two renewals
 * may fail before it lapses); a clean stop releases it at once. While Redis cannot be reached
 * nobody can coordinate, so each instance does its own lookups (as without Redis): a duplicate
 * GET /key is cheaper than a key nobody looks up.
 */
export interface DiscoveryLease {
  /** Whether this instance does the background GET /key work now. */
  holds(): boolean;
  /** Settles when the first attempt to take the lease has (startup discovery waits for it). */
  readonly ready: Promise<void>;
  /** Stops renewing and frees the lease if held, so another instance takes over at once. */
  stop(): Promise<void>;
}

export function startDiscoveryLease(options: LeaseOptions): DiscoveryLease {
  const lease = createLease(options);
  let held = false;
  let stopped = false;
  const attempt = async (): Promise<void> => {
    if (stopped) return;
    const taken = await lease.take();
    held = taken.ok ? taken.value : true;
  };
  const ready = attempt();
  const timer = setInterval(() => void attempt(), Math.max(1, Math.floor(options.ttlMs / 3)));
  timer.unref?.();
  return {
    holds: () => held,
    ready,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await ready;
      if (held) await lease.release();
      held = false;
    },
  };
}
