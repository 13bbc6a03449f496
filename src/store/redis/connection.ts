/**
 * A supervised Redis connection ("Redis down never stops serving"). Bun's client is
 * used as a dumb pipe (no auto-reconnect, no offline queue) and this module does the rest:
 *
 * - every call has a timeout (`timeoutMs`, 250 ms by default): a paused Redis never hangs a caller;
 * - a circuit breaker (redis-client.ts) opens after consecutive failures, or at once when the
 *   connection closes; while open, calls fail without touching the network and a probe (a fresh
 *   client when the old one is gone — Bun's gives up after its retries — then PING) runs after a
 *   backoff;
 * - writes that could not be delivered wait in a bounded queue and are replayed when the probe
 *   succeeds; the shared state's writes merge by max or by sum, so replay order does not matter;
 * - `degraded` is true from the moment the breaker opens until Redis answers again and the queue
 *   is empty; `onChange` hears each start and each end once;
 * - subscriptions (subscription.ts) get a connection each and are re-established, with a resync,
 *   whenever theirs is lost.
 *
 * A write whose outcome is unknown (it timed out: Redis may still apply it) is queued again only if
 * it is `idempotent` (an extend-only instant); a counter delta is then dropped rather than risk
 * counting it twice. Both are counted (`dropped`).
 */
import type { RedisClient } from "bun";
import { urlCredentialsRedactor } from "../../domain/redact.ts";
import { closeQuietly, createCircuitBreaker, errorText, newRedisClient, withTimeout, type CircuitBreakerOptions } from "./redis-client.ts";
import { createSubscription, type Subscription, type SubscriptionHandlers } from "./subscription.ts";

export interface RedisConnectionOptions {
  url: string;
  /** Longest wait for any one call. */
  timeoutMs?: number;
  /** Longest wait for a (re)connection. */
  connectTimeoutMs?: number;
  breaker?: CircuitBreakerOptions;
  /** Most writes kept while Redis is away; the oldest go first when it is full. */
  queueLimit?: number;
  /** How often a lost subscription or a closed idle connection is noticed, at the latest. */
  watchMs?: number;
}

/**
 * `open`: not sent (breaker open, or no connection); `timeout`: sent, no answer in time (Redis may
 * still apply it); `error`: the connection failed; `refused`: Redis answered with an error (it is
 * up: the command or script was wrong).
 */
export type CallFailure = "timeout" | "open" | "error" | "refused";
export type CallResult<T> = { ok: true; value: T } | { ok: false; failure: CallFailure; message: string };

export interface DegradedChange {
  degraded: boolean;
  /** Why it started (the last error), or "recovered". Never carries credentials. */
  reason: string;
}

export interface RedisWrite {
  command: string;
  args: string[];
  /** Applying it twice is harmless (ZADD GT, SET … GT): replayed even after a timeout. */
  idempotent?: boolean;
  /** Sent instead when Redis answers NOSCRIPT (an EVALSHA after Redis lost its script cache). */
  noScriptFallback?: RedisWrite;
}

export interface RedisConnection {
  readonly degraded: boolean;
  /** Writes waiting for Redis. */
  readonly queued: number;
  /** Writes given up (queue full, or a non-idempotent write with an unknown outcome). */
  readonly dropped: number;
  /** Writes Redis answered with an error (a bug in a command or script, not an outage). */
  readonly refused: number;
  /** One command with the timeout and the breaker; never throws. */
  send(command: string, args: string[]): Promise<CallResult<unknown>>;
  /** Delivers a write now, or queues it for replay; resolves once it is sent or queued. */
  write(write: RedisWrite): Promise<void>;
  /** A channel on a connection of its own; `onResync` runs after every (re)subscribe. */
  subscribe(channel: string, handlers: SubscriptionHandlers): Subscription;
  onChange(listener: (change: DegradedChange) => void): () => void;
  /** Resolves when the first connection attempt has finished (either way). */
  readonly ready: Promise<void>;
  close(): Promise<void>;
}

export function createRedisConnection({
  url,
  timeoutMs = 250,
  connectTimeoutMs = 1_000,
  breaker: breakerOptions,
  queueLimit = 10_000,
  watchMs = 1_000,
}: RedisConnectionOptions): RedisConnection {
  const redact = urlCredentialsRedactor(url);
  const breaker = createCircuitBreaker(breakerOptions);
  const listeners = new Set<(change: DegradedChange) => void>();
  const subscriptions = new Set<Subscription>();
  let queue: RedisWrite[] = [];
  let dropped = 0;
  let refused = 0;
  let degraded = false;
  let closed = false;
  let client: RedisClient | undefined;
  let probeTimer: ReturnType<typeof setTimeout> | undefined;
  let probing = false;

  const newClient = (): RedisClient => newRedisClient(url, connectTimeoutMs);

  const setDegraded = (next: boolean, reason: string): void => {
    if (next === degraded) return;
    degraded = next;
    for (const listener of listeners) listener({ degraded: next, reason: redact(reason) });
  };

  const goneDown = (reason: string): void => {
    setDegraded(true, reason);
    scheduleProbe();
  };

  /** A fresh client, connected, or undefined. The old one is closed so it cannot come back. */
  const connect = async (): Promise<RedisClient | undefined> => {
    const previous = client;
    client = undefined;
    if (previous) closeQuietly(previous);
    const fresh = newClient();
    const opened = await withTimeout(() => fresh.connect(), connectTimeoutMs);
    if (!opened.ok || closed) {
      closeQuietly(fresh);
      return undefined;
    }
    // onclose is not always called (oven-sh/bun#22812); the watchdog below covers what it misses.
    fresh.onclose = () => {
      if (client === fresh && !closed && breaker.trip()) goneDown("the connection to Redis closed");
    };
    client = fresh;
    return fresh;
  };

  const scheduleProbe = (): void => {
    if (closed || probeTimer !== undefined || probing) return;
    probeTimer = setTimeout(() => {
      probeTimer = undefined;
      void probe();
    }, breaker.backoffMs);
  };

  const probe = async (): Promise<void> => {
    if (closed || probing) return;
    probing = true;
    try {
      const live = client?.connected ? client : await connect();
      const pong = live ? await withTimeout(() => live.send("PING", []), timeoutMs) : undefined;
      if (!pong?.ok) {
        breaker.probeFailed();
        return;
      }
      breaker.success();
      await flush();
      for (const subscription of subscriptions) subscription.check();
      if (breaker.state === "closed" && queue.length === 0) setDegraded(false, "recovered");
    } finally {
      probing = false;
      if (breaker.state === "open" || queue.length > 0) scheduleProbe();
    }
  };

  const call = async (command: string, args: string[]): Promise<CallResult<unknown>> => {
    if (closed) return { ok: false, failure: "error", message: "the Redis connection is closed" };
    const live = client;
    if (breaker.state === "open" || live === undefined) return { ok: false, failure: "open", message: "Redis is unavailable (circuit open)" };
    const result = await withTimeout(() => live.send(command, args), timeoutMs);
    if (result.ok) {
      breaker.success();
      return result;
    }
    if (!result.timedOut && isServerError(result.error)) {
      // Redis answered (a script error, a wrong type): it is up; the caller's command was wrong.
      breaker.success();
      return { ok: false, failure: "refused", message: redact(errorText(result.error)) };
    }
    const message = result.timedOut ? `Redis did not answer ${command} within ${timeoutMs} ms` : redact(errorText(result.error));
    const opened = !result.timedOut && !live.connected ? breaker.trip() : breaker.failure();
    if (opened) goneDown(message);
    return { ok: false, failure: result.timedOut ? "timeout" : "error", message };
  };

  const enqueue = (write: RedisWrite): void => {
    queue.push(write);
    if (queue.length > queueLimit) {
      queue.splice(0, queue.length - queueLimit);
      dropped += 1;
    }
  };

  /** After a write's attempt: done (delivered or refused by Redis), queued again, or dropped. */
  const settle = async (write: RedisWrite, result: CallResult<unknown>): Promise<void> => {
    if (!result.ok && result.failure === "refused" && write.noScriptFallback && result.message.startsWith("NOSCRIPT")) {
      await deliver(write.noScriptFallback);
      return;
    }
    if (result.ok) return;
    if (result.failure === "refused") {
      refused += 1;
      return;
    }
    if (result.failure === "timeout" && !write.idempotent) {
      dropped += 1;
      return;
    }
    enqueue(write);
    scheduleProbe(); // the probe replays the queue once Redis answers
  };

  /** Sends a write now (queued behind others that wait, to keep a burst together) or queues it. */
  const deliver = async (write: RedisWrite): Promise<void> => {
    if (queue.length > 0 || breaker.state === "open" || client === undefined) {
      enqueue(write);
      if (breaker.state === "closed" && client !== undefined) void flush();
      return;
    }
    await settle(write, await call(write.command, write.args));
  };

  /** Replays queued writes, all in flight at once (auto-pipelined); what fails waits again. */
  const flush = async (): Promise<void> => {
    while (queue.length > 0 && breaker.state === "closed" && !closed) {
      const batch = queue.splice(0, 500);
      const results = await Promise.all(batch.map((write) => call(write.command, write.args)));
      await Promise.all(results.map((result, index) => settle(batch[index] as RedisWrite, result)));
    }
  };

  const watchdog = setInterval(() => {
    if (closed) return;
    if (breaker.state === "closed" && client !== undefined && !client.connected && breaker.trip()) goneDown("the connection to Redis closed");
    for (const subscription of subscriptions) subscription.check();
  }, watchMs);
  watchdog.unref?.();

  const ready = (async () => {
    const first = await connect();
    if (!first) {
      breaker.trip();
      goneDown("could not connect to Redis");
    }
  })();

  return {
    get degraded() {
      return degraded;
    },
    get queued() {
      return queue.length;
    },
    get dropped() {
      return dropped;
    },
    get refused() {
      return refused;
    },
    ready,
    send: call,
    write: deliver,
    subscribe(channel, handlers) {
      const subscription = createSubscription({ channel, handlers, newClient, timeoutMs: connectTimeoutMs, onClose: () => subscriptions.delete(subscription) });
      subscriptions.add(subscription);
      return subscription;
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    async close() {
      closed = true;
      clearInterval(watchdog);
      if (probeTimer !== undefined) clearTimeout(probeTimer);
      await Promise.all([...subscriptions].map((subscription) => subscription.close()));
      if (client) closeQuietly(client);
      client = undefined;
      queue = [];
    },
  };
}

/** An error reply from Redis itself (the server is up), as opposed to a connection problem. */
function isServerError(error: unknown): boolean {
  return typeof error === "object" && error !== null && "code" in error && (error as { code: unknown }).code === "ERR_REDIS_SERVER_ERROR";
}
