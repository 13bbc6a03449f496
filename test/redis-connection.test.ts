import { describe, expect, test } from "bun:test";
import { createCircuitBreaker } from "../src/store/redis/redis-client.ts";
import { createRedisConnection, type DegradedChange, type RedisConnection, type RedisConnectionOptions } from "../src/store/redis/connection.ts";
import { useRedisServer } from "./helpers/redis-suite.ts";

const { redis, cleanups } = useRedisServer();

function connect(options: Partial<RedisConnectionOptions> = {}): { connection: RedisConnection; changes: DegradedChange[] } {
  const connection = createRedisConnection({ url: redis.url, timeoutMs: 250, watchMs: 100, breaker: { threshold: 3, backoffMs: 50, maxBackoffMs: 200 }, ...options });
  const changes: DegradedChange[] = [];
  connection.onChange((change) => changes.push(change));
  cleanups.push(() => connection.close());
  return { connection, changes };
}

/** Resolves on the next degraded change that matches; no polling. */
function nextChange(connection: RedisConnection, degraded: boolean): Promise<DegradedChange> {
  return new Promise((resolve) => {
    const stop = connection.onChange((change) => {
      if (change.degraded !== degraded) return;
      stop();
      resolve(change);
    });
  });
}

/** Resolves with the next `count` messages on `channel` handed to `onMessage`. */
function collector(): { messages: string[]; next: () => Promise<string>; onMessage: (message: string) => void } {
  const messages: string[] = [];
  const waiting: Array<(message: string) => void> = [];
  return {
    messages,
    onMessage(message) {
      messages.push(message);
      waiting.shift()?.(message);
    },
    next: () => new Promise((resolve) => waiting.push(resolve)),
  };
}

describe("the circuit breaker", () => {
  test("opens after the threshold of consecutive failures, not before, and a success resets the count", () => {
    const breaker = createCircuitBreaker({ threshold: 3, backoffMs: 100, maxBackoffMs: 350 });
    expect([breaker.failure(), breaker.failure()]).toEqual([false, false]);
    breaker.success();
    expect([breaker.failure(), breaker.failure(), breaker.failure()]).toEqual([false, false, true]);
    expect(breaker.state).toBe("open");
    expect(breaker.failure()).toBe(false); // already open: it opened once
  });

  test("waits longer after each failed probe, up to its limit, and closes on a success", () => {
    const breaker = createCircuitBreaker({ threshold: 1, backoffMs: 100, maxBackoffMs: 350 });
    breaker.trip();
    const waits = [breaker.backoffMs];
    for (let i = 0; i < 3; i++) {
      breaker.probeFailed();
      waits.push(breaker.backoffMs);
    }
    expect(waits).toEqual([100, 200, 350, 350]);
    expect(breaker.success()).toBe(true);
    expect([breaker.state, breaker.backoffMs]).toEqual(["closed", 100]);
  });
});

describe("a supervised Redis connection", () => {
  test("answers commands through Bun's client over TCP and a unix socket", async () => {
    for (const url of [redis.url, redis.unixUrl]) {
      const { connection } = connect({ url });
      await connection.ready;
      expect(await connection.send("SET", ["k", "v"])).toEqual({ ok: true, value: "OK" });
      expect(await connection.send("GET", ["k"])).toEqual({ ok: true, value: "v" });
      expect(connection.degraded).toBe(false);
    }
  });

  test("an error answered by Redis is refused, not an outage: the breaker stays closed", async () => {
    const { connection } = connect();
    await connection.ready;
    await connection.send("SET", ["s", "text"]);
    for (let i = 0; i < 5; i++) expect(await connection.send("INCR", ["s"])).toMatchObject({ ok: false, failure: "refused" });
    expect(connection.degraded).toBe(false);
  });

  test("Redis paused for 5 s: every call fails within the timeout, none hangs, and it is degraded once", async () => {
    const { connection, changes } = connect();
    await connection.ready;
    redis.pause();
    const pausedAt = performance.now();
    const latencies: number[] = [];
    const results: string[] = [];
    while (performance.now() - pausedAt < 5_000) {
      const started = performance.now();
      // Several at once, as requests would: each one is bounded on its own.
      const batch = await Promise.all([connection.send("GET", ["k"]), connection.send("INCR", ["n"]), connection.send("PING", [])]);
      latencies.push(performance.now() - started);
      for (const result of batch) results.push(result.ok ? "ok" : result.failure);
      await Bun.sleep(100); // pacing of the callers, not waiting for an event
    }
    expect(results).not.toContain("ok");
    expect(Math.max(...latencies)).toBeLessThan(250 + 150); // the timeout plus scheduling slack
    expect(results.filter((failure) => failure === "timeout").length).toBeLessThanOrEqual(3); // then the breaker answers at once
    expect(connection.degraded).toBe(true);
    const recovered = nextChange(connection, false);
    redis.resume();
    await recovered;
    expect(await connection.send("PING", [])).toEqual({ ok: true, value: "PONG" });
    expect(changes.map((change) => change.degraded)).toEqual([true, false]);
  }, 15_000);

  test("Redis killed then restarted on the same port: the connection recovers, resubscribes (one delivery per publish) and replays queued writes", async () => {
    const { connection, changes } = connect();
    const publisher = connect().connection;
    const received = collector();
    let resyncs = 0;
    let resynced: () => void = () => {};
    connection.subscribe("orp:test:changes", {
      onMessage: received.onMessage,
      onResync: () => {
        resyncs += 1;
        resynced();
      },
    });
    await Promise.all([connection.ready, publisher.ready]);
    if (resyncs === 0) await new Promise<void>((resolve) => (resynced = resolve));
    const first = received.next();
    await publisher.send("PUBLISH", ["orp:test:changes", "before"]);
    expect(await first).toBe("before");

    const down = nextChange(connection, true);
    await redis.kill();
    await down;
    // Writes while Redis is away: an extend-only instant and a counter delta wait in the queue.
    await connection.write({ command: "ZADD", args: ["orp:test:until", "GT", "5000", "key-a"], idempotent: true });
    await connection.write({ command: "HINCRBY", args: ["orp:test:counts", "key-a", "3"] });
    expect(connection.queued).toBe(2);
    expect(connection.degraded).toBe(true);

    const resubscribed = new Promise<void>((resolve) => (resynced = resolve));
    const up = nextChange(connection, false);
    await redis.restart();
    await Promise.all([up, resubscribed]);
    expect(resyncs).toBe(2);
    expect(connection.queued).toBe(0);
    expect(await redis.cli("ZSCORE", "orp:test:until", "key-a")).toBe("5000");
    expect(await redis.cli("HGET", "orp:test:counts", "key-a")).toBe("3");

    const after = received.next();
    await publisher.write({ command: "PUBLISH", args: ["orp:test:changes", "after"] }); // the publisher recovers too
    expect(await after).toBe("after");
    // One more round trip on the subscriber's server before counting: a duplicate would be here by now.
    const marker = received.next();
    await redis.cli("PUBLISH", "orp:test:changes", "marker");
    await marker;
    expect(received.messages).toEqual(["before", "after", "marker"]);
    expect(changes.map((change) => change.degraded)).toEqual([true, false]);
  }, 20_000);

  test("after an outage every reply goes to its own command, and EVAL does not stay pending (oven-sh/bun#27861, #34374)", async () => {
    const { connection } = connect();
    await connection.ready;
    const down = nextChange(connection, true);
    await redis.kill();
    await down;
    const up = nextChange(connection, false);
    await redis.restart();
    await up;
    // A burst of different commands at once on the fresh connection: each answer must match its own.
    const sets = await Promise.all(Array.from({ length: 200 }, (_, i) => connection.send("SET", [`orp:test:k${i}`, `v${i}`])));
    expect(sets.every((result) => result.ok)).toBe(true);
    const replies = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        i % 2 === 0 ? connection.send("GET", [`orp:test:k${i}`]) : connection.send("EVAL", ["return ARGV[1]", "0", `lua${i}`]),
      ),
    );
    expect(replies).toEqual(Array.from({ length: 200 }, (_, i) => ({ ok: true, value: i % 2 === 0 ? `v${i}` : `lua${i}` })));
  }, 15_000);

  test("the queue is bounded: past its limit the oldest writes go and are counted", async () => {
    const { connection } = connect({ queueLimit: 5 });
    await connection.ready;
    const down = nextChange(connection, true);
    await redis.kill();
    await down;
    for (let i = 0; i < 8; i++) await connection.write({ command: "RPUSH", args: ["orp:test:list", String(i)], idempotent: true });
    expect([connection.queued, connection.dropped]).toEqual([5, 3]);
    const up = nextChange(connection, false);
    await redis.restart();
    await up;
    expect((await redis.cli("LRANGE", "orp:test:list", "0", "-1")).split("\n")).toEqual(["3", "4", "5", "6", "7"]);
  }, 15_000);

  test("a counter delta whose outcome is unknown (timed out) is dropped, never replayed twice", async () => {
    const { connection } = connect();
    await connection.ready;
    redis.pause();
    await connection.write({ command: "INCRBY", args: ["orp:test:n", "1"] });
    await connection.write({ command: "SET", args: ["orp:test:flag", "1"], idempotent: true });
    expect(connection.dropped).toBe(1);
    expect(connection.queued).toBe(1);
    await connection.send("PING", []); // the third timeout in a row opens the breaker
    expect(connection.degraded).toBe(true);
    const up = nextChange(connection, false);
    redis.resume();
    await up;
    // Redis applied the paused INCRBY when it resumed: it counts once, not twice.
    expect(await redis.cli("GET", "orp:test:n")).toBe("1");
    expect(await redis.cli("GET", "orp:test:flag")).toBe("1");
  }, 15_000);

  test("no Redis at startup: degraded from the start, calls fail at once, and it connects when Redis comes", async () => {
    await redis.kill();
    const { connection, changes } = connect();
    await connection.ready;
    expect(connection.degraded).toBe(true);
    const started = performance.now();
    expect(await connection.send("PING", [])).toMatchObject({ ok: false, failure: "open" });
    expect(performance.now() - started).toBeLessThan(50);
    const up = nextChange(connection, false);
    await redis.restart();
    await up;
    expect(await connection.send("PING", [])).toEqual({ ok: true, value: "PONG" });
    expect(changes.map((change) => change.degraded)).toEqual([true, false]);
  }, 15_000);

  test("a password in REDIS_URL never appears in what the connection reports", async () => {
    const password = "s3cret-redis-password-xyz";
    await redis.cli("CONFIG", "SET", "requirepass", "another-password");
    cleanups.push(async () => void (await redis.cli("-a", "another-password", "--no-auth-warning", "CONFIG", "SET", "requirepass", "")));
    const { connection, changes } = connect({ url: `redis://default:${password}@127.0.0.1:${redis.port}` });
    await connection.ready;
    const results = [await connection.send("PING", []), await connection.send("GET", ["k"])];
    expect(connection.degraded).toBe(true); // the wrong password: no connection
    expect(changes.length).toBeGreaterThan(0);
    expect(JSON.stringify({ results, changes })).not.toContain(password);
  });
});
