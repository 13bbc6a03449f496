/**
 * Bun's Redis client as the supervised connection uses it: a dumb pipe. No auto-reconnect (a
 * client that reconnects on its own would come back without its subscriptions and with commands
 * of the past still queued, oven-sh/bun#27861 and #34374) and no offline queue (a call while
 * disconnected fails at once instead of waiting): connection.ts decides when to try again, with a
 * fresh client each time.
 *
 * The client has no per-command timeout either: with Redis paused (SIGSTOP) a command stays
 * pending until Redis resumes (docs/state-model.md, "Redis"). Every call goes through
 * `withTimeout`, so a caller waits at most `ms`; the abandoned promise's late answer is swallowed.
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
