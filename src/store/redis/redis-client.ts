/**
 * What one call to Redis is made of, for the supervised connection (connection.ts).
 *
 * Bun's Redis client is a dumb pipe. No auto-reconnect (a
 * client that reconnects on its own would come back without its subscriptions and with commands
 * of the past still queued, oven-sh/bun#27861 and #34374) and no offline queue (a call while
 * disconnected fails at once instead of waiting): connection.ts decides when to try again, with a
 * fresh client each time.
 *
 * The client has no per-command timeout either: with Redis paused (SIGSTOP) a command stays
 * pending until Redis resumes (docs/state-model.md, "Redis"). Every call goes through
 * `withTimeout`, so a caller waits at most `ms`; the abandoned promise's late answer is swallowed.
 *
 * When Redis stops answering, asking it again on every request only adds a timeout to each one
 * (LiteLLM's users saw ~8 s per counter update before theirs had a breaker). After `threshold`
 * consecutive failures the breaker opens: calls fail at once, without touching the network, and
 * one probe at a time tests Redis after a backoff that doubles up to `maxBackoffMs`. A successful
 * probe closes it.
 */
import { RedisClient } from "bun";

export function newRedisClient(url: string, connectTimeoutMs: number): RedisClient {
  return new RedisClient(url, { autoReconnect: false, enableOfflineQueue: false, connectionTimeout: connectTimeoutMs, enableAutoPipelining: true });
}

/** Closes a client for good, without hearing its close. */
export function closeQuietly(client: RedisClient): void {
  client.onclose = null;
  try {
    client.close();
  } catch {
    // already closed
  }
}

type Timed<T> = { ok: true; value: T } | { ok: false; timedOut: true } | { ok: false; timedOut: false; error: unknown };

export function withTimeout<T>(start: () => Promise<T>, ms: number): Promise<Timed<T>> {
  let promise: Promise<T>;
  try {
    promise = start();
  } catch (error) {
    // Some client methods throw synchronously (e.g. unsubscribe outside subscriber mode).
    return Promise.resolve({ ok: false, timedOut: false, error });
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, timedOut: true }), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve({ ok: true, value });
      },
      (error: unknown) => {
        clearTimeout(timer);
        resolve({ ok: false, timedOut: false, error });
      },
    );
  });
}

/** A one-line message from whatever a client threw. */
export function errorText(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0] ?? "";
}

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the breaker. */
  threshold?: number;
  /** First wait before a probe; doubled after each failed probe. */
  backoffMs?: number;
  maxBackoffMs?: number;
}

export function createCircuitBreaker({ threshold = 3, backoffMs = 200, maxBackoffMs = 5_000 }: CircuitBreakerOptions = {}) {
  let state: "closed" | "open" = "closed";
  let failures = 0;
  let wait = backoffMs;
  const open = (): boolean => {
    if (state === "open") return false;
    state = "open";
    wait = backoffMs;
    return true;
  };
  return {
    get state() {
      return state;
    },
    /** How long to wait before the next probe while open. */
    get backoffMs() {
      return wait;
    },
    /** A call (or probe) succeeded: closed, backoff back to its start. True if it was open. */
    success(): boolean {
      failures = 0;
      wait = backoffMs;
      if (state === "closed") return false;
      state = "closed";
      return true;
    },
    /** A call failed. True when this failure opened the breaker. */
    failure: (): boolean => (++failures >= threshold ? open() : false),
    /** Opens at once (a closed connection needs no more evidence). True if it was closed. */
    trip(): boolean {
      failures = threshold;
      return open();
    },
    /** A probe failed while open: the next one waits longer. */
    probeFailed(): void {
      wait = Math.min(maxBackoffMs, wait * 2);
    },
  };
}
