/**
 * Account discovery (`GET /key` in the background) under a lease in Redis (issue 14): with
 * REDIS_URL one instance at a time looks keys up for all, and publishes what it learns (key →
 * account, the day's free-model limit) as changes (shared-pool.ts `publishLearned`), so N
 * instances do not ask OpenRouter N times about every key.
 *
 * The lease is taken at start and renewed every third of its TTL; an instance that dies stops
 * renewing and another takes it once the TTL runs out; a clean stop releases it at once. While
 * Redis cannot be reached nobody can coordinate, so each instance does its own lookups then (as
 * without Redis): a duplicate GET /key is cheaper than a key nobody looks up.
 */
import type { RedisConnection } from "./connection.ts";
import { createLease } from "./lease.ts";

export const DISCOVERY_LEASE_TTL_MS = 60_000;

export interface DiscoveryLease {
  /** Whether this instance does the background GET /key work now. */
  holds(): boolean;
  /** Settles when the first attempt to take the lease has (startup discovery waits for it). */
  readonly ready: Promise<void>;
  /** Stops renewing and frees the lease if held, so another instance takes over at once. */
  stop(): Promise<void>;
}

export interface DiscoveryLeaseOptions {
  connection: RedisConnection;
  /** The Redis key (`<prefix>lease:discovery`). */
  key: string;
  holder: string;
  ttlMs?: number;
}

export function startDiscoveryLease({ connection, key, holder, ttlMs = DISCOVERY_LEASE_TTL_MS }: DiscoveryLeaseOptions): DiscoveryLease {
  const lease = createLease({ connection, key, holder, ttlMs });
  let held = false;
  let stopped = false;
  const attempt = async (): Promise<void> => {
    if (stopped) return;
    const taken = await lease.take();
    held = taken.ok ? taken.value : true;
  };
  const ready = attempt();
  // A third of the TTL: two renewals may fail (a slow Redis) before the lease lapses.
  const timer = setInterval(() => void attempt(), Math.max(1, Math.floor(ttlMs / 3)));
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
