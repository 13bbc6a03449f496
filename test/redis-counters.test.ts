import { describe, expect, test } from "bun:test";
import { createRedisConnection, type RedisConnection } from "../src/store/redis/connection.ts";
import { createCounterBatcher } from "../src/store/redis/change-writer.ts";
import { freeDayExpiry, redisKeys } from "../src/store/redis/redis-keys.ts";
import { sharedStateScripts } from "../src/store/redis/scripts.ts";
import { useRedisServer } from "./helpers/redis-suite.ts";
import { utcDayOf } from "../src/keys/account-state.ts";

const keys = redisKeys("orp:");
/** The real clock: the code under test dates Redis keys by today, so the tests must too. */
const T = Date.now();
const DAY = utcDayOf(T);
const { redis, cleanups } = useRedisServer();

async function connect(): Promise<RedisConnection> {
  const connection = createRedisConnection({ url: redis.url, timeoutMs: 250, watchMs: 100, breaker: { threshold: 3, backoffMs: 50, maxBackoffMs: 200 } });
  cleanups.push(() => connection.close());
  await connection.ready;
  return connection;
}

const stats = async (keyId: string): Promise<Record<string, string>> => {
  const lines = (await redis.cli("HGETALL", keys.keyStats(keyId))).split("\n");
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < lines.length; i += 2) out[lines[i] as string] = lines[i + 1] as string;
  return out;
};

describe("counter deltas in batches", () => {
  test("deltas of many requests are summed in memory and written as one batch that adds to Redis's totals", async () => {
    const connection = await connect();
    const batcher = createCounterBatcher({ keys, instanceId: crypto.randomUUID() });
    for (let i = 0; i < 100; i++) batcher.add("k1", { requests: 1, successes: 1, tokens: 10, cost: 0.001 }, T + i);
    batcher.add("k2", { requests: 1, failures: 1 }, T);
    const write = batcher.take();
    expect(batcher.take()).toBeUndefined();
    if (!write) throw new Error("no batch");
    await connection.write(write);
    const second = createCounterBatcher({ keys, instanceId: crypto.randomUUID() });
    second.add("k1", { requests: 2 }, T - 5);
    await connection.write(second.take() as NonNullable<ReturnType<typeof second.take>>);
    const k1 = await stats("k1");
    const rounded: Record<string, string> = { ...k1, cost: Number(k1.cost).toFixed(6) };
    expect(rounded).toEqual({ requests: "102", successes: "100", tokens: "1000", cost: "0.100000", lastUsedAt: String(T + 99) });
    expect(await stats("k2")).toEqual({ requests: "1", failures: "1", lastUsedAt: String(T) });
  });

  test("a batch replayed after its answer was lost (Redis paused past the timeout) counts once", async () => {
    const connection = await connect();
    const batcher = createCounterBatcher({ keys, instanceId: crypto.randomUUID() });
    batcher.add("k1", { requests: 5 }, T);
    const write = batcher.take();
    if (!write) throw new Error("no batch");
    await connection.write(write); // loads the script (EVAL on NOSCRIPT) and applies the batch
    await redis.cli("HDEL", keys.keyStats("k1"), "requests");
    batcher.add("k1", { requests: 3 }, T);
    const next = batcher.take();
    if (!next) throw new Error("no batch");
    redis.pause();
    await connection.write(next); // times out: its outcome is unknown, and it is queued again
    await connection.send("PING", []);
    await connection.send("PING", []); // three timeouts: the breaker opens
    expect([connection.queued, connection.dropped, connection.degraded]).toEqual([1, 0, true]);
    const recovered = new Promise<void>((resolve) => connection.onChange((change) => (change.degraded ? undefined : resolve())));
    redis.resume(); // Redis now runs the paused batch, then the replay arrives
    await recovered;
    expect((await stats("k1")).requests).toBe("3");
    expect(connection.refused).toBe(0);
  }, 15_000);

  test("free-model requests served from memory while Redis was away are added to the account's day once, and count against its limit", async () => {
    const connection = await connect();
    const scripts = sharedStateScripts(connection, keys);
    for (const write of scripts.learnFreeLimit("acct", DAY, 5)) await connection.write(write);
    const batcher = createCounterBatcher({ keys, instanceId: crypto.randomUUID() });
    batcher.addFree("acct", DAY, 3);
    batcher.addFree("acct", DAY, 1);
    batcher.addFree("other", DAY, 2);
    const write = batcher.take();
    if (!write) throw new Error("no batch");
    await connection.write(write);
    await connection.write(write); // a replay of the same batch
    expect(await redis.cli("HGET", keys.freeDay(DAY), "used:acct")).toBe("4");
    expect(await redis.cli("HGET", keys.freeDay(DAY), "used:other")).toBe("2");
    expect(Number(await redis.cli("EXPIRETIME", keys.freeDay(DAY)))).toBe(freeDayExpiry(DAY));
    expect(await scripts.reserveFreeSlot({ account: "acct", day: DAY })).toEqual({ ok: true, value: { granted: true, used: 5, limit: 5 } });
    expect(await scripts.reserveFreeSlot({ account: "acct", day: DAY })).toEqual({ ok: true, value: { granted: false, used: 5, limit: 5 } });
  });

  test("two instances' batches never collide, even with the same sequence numbers", async () => {
    const connection = await connect();
    const a = createCounterBatcher({ keys, instanceId: crypto.randomUUID() });
    const b = createCounterBatcher({ keys, instanceId: crypto.randomUUID() });
    a.add("k1", { requests: 1 });
    b.add("k1", { requests: 1 });
    await Promise.all([connection.write(a.take() as NonNullable<ReturnType<typeof a.take>>), connection.write(b.take() as NonNullable<ReturnType<typeof b.take>>)]);
    expect((await stats("k1")).requests).toBe("2");
  });
});
