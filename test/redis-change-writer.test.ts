import { describe, expect, test } from "bun:test";
import type { StateChange } from "../src/keys/state-change.ts";
import { openChangeChannel } from "../src/store/redis/shared-state.ts";
import { createChangeWriter, createCounterBatcher, type ChangeWriter } from "../src/store/redis/change-writer.ts";
import { createRedisConnection, type RedisConnection } from "../src/store/redis/connection.ts";
import { redisKeys } from "../src/store/redis/redis-keys.ts";
import { sharedStateScripts } from "../src/store/redis/scripts.ts";
import { readSharedSnapshot } from "../src/store/redis/shared-snapshot.ts";
import { useRedisServer } from "./helpers/redis-suite.ts";
import { utcDayOf } from "../src/keys/account-state.ts";

const keys = redisKeys("orp:");
/** The real clock: the code under test dates Redis keys by today, so the tests must too. */
const T = Date.now();
const DAY = utcDayOf(T);
const { redis, cleanups } = useRedisServer();

interface Instance {
  connection: RedisConnection;
  writer: ChangeWriter;
  heard: StateChange[];
  verdicts: StateChange[];
  /** Resolves once this instance has heard `count` changes from others. */
  heardCount(count: number): Promise<void>;
}

async function startInstance(failureThreshold = 5): Promise<Instance> {
  const connection = createRedisConnection({ url: redis.url, timeoutMs: 2_000 });
  await connection.ready;
  const instanceId = crypto.randomUUID();
  const waiting: Array<() => void> = [];
  let resynced: () => void = () => {};
  const subscribed = new Promise<void>((resolve) => (resynced = resolve));
  const heard: StateChange[] = [];
  const verdicts: StateChange[] = [];
  const channel = openChangeChannel({
    connection,
    keys,
    instanceId,
    onChange(change) {
      heard.push(change);
      for (const wake of waiting.splice(0)) wake();
    },
    onResync: () => resynced(),
  });
  await subscribed;
  const scripts = sharedStateScripts(connection, keys);
  const writer = createChangeWriter({
    connection,
    scripts,
    batcher: createCounterBatcher({ keys, instanceId }),
    publish: channel.publish,
    failureThreshold,
    flushMs: 60_000, // flushed by the tests themselves
    onVerdict: (change) => verdicts.push(change),
  });
  cleanups.push(async () => {
    await writer.close();
    await channel.close();
    await connection.close();
  });
  const heardCount = (count: number): Promise<void> =>
    new Promise((resolve) => {
      const check = (): void => (heard.length >= count ? resolve() : void waiting.push(check));
      check();
    });
  return { connection, writer, heard, verdicts, heardCount };
}

describe("the pool's changes in Redis", () => {
  test("every kind of change lands by its merge rule, and another instance reads it back on resync", async () => {
    const a = await startInstance();
    const b = await startInstance();
    const changes: StateChange[] = [
      { kind: "key-cooldown", keyId: "k1", basis: 0, until: T + 60_000, source: "header", reason: "429" },
      { kind: "key-cooldown", keyId: "k1", basis: 0, until: T + 1_000, source: "default", reason: "shorter" },
      { kind: "key-disabled", keyId: "k2", basis: 0, since: T, reason: "402" },
      { kind: "account-rest", account: "acct", modelClass: "free", until: T + 3_600_000, source: "body", reason: "free limit" },
      { kind: "model-rest", account: "acct", model: "m:free", until: T + 30_000, source: "body", reason: "model" },
      { kind: "key-counters", keyId: "k1", delta: { requests: 2, successes: 1, failures: 1, tokens: 50, cost: 0.25 }, lastUsedAt: T + 5 },
      { kind: "key-counters", keyId: "k1", delta: { requests: 1, successes: 1 }, lastUsedAt: T + 9 },
      { kind: "free-requests", account: "acct", day: DAY, delta: 2 },
      { kind: "free-limit", account: "acct", day: DAY, limit: 50, learnedAt: T },
      { kind: "key-account", keyId: "k1", account: "acct" },
    ];
    for (const change of changes) a.writer.record(change);
    await a.writer.flush();
    await a.writer.idle();

    const snapshot = await readSharedSnapshot(b.connection, keys, { keyIds: ["k1"], day: DAY });
    if (!snapshot.ok) throw new Error(snapshot.message);
    expect(snapshot.value.instants).toContainEqual({ kind: "key-cooldown", keyId: "k1", basis: 0, until: T + 60_000, source: "header", reason: "429" });
    expect(snapshot.value.instants).toContainEqual({ kind: "key-disabled", keyId: "k2", basis: 0, since: T, reason: "402" });
    expect(snapshot.value.instants).toContainEqual({ kind: "account-rest", account: "acct", modelClass: "free", until: T + 3_600_000, source: "body", reason: "free limit" });
    expect(snapshot.value.instants).toContainEqual({ kind: "model-rest", account: "acct", model: "m:free", until: T + 30_000, source: "body", reason: "model" });
    expect(snapshot.value.instants.length).toBe(4);
    expect(snapshot.value.totals.get("k1")).toEqual({ requests: 3, successes: 2, failures: 1, tokens: 50, cost: 0.25, lastUsedAt: T + 9 });
    expect(snapshot.value.free.get("acct")).toEqual({ used: 2, limit: 50 });

    // Published: instants, the limit and the account; not counters (they travel by resync).
    await b.heardCount(7);
    expect(b.heard.map((change) => change.kind)).toEqual(["key-cooldown", "key-cooldown", "key-disabled", "account-rest", "model-rest", "free-limit", "key-account"]);
  });

  test("failures recorded by three instances disable the key once at the threshold, and the verdict reaches the others", async () => {
    const instances = [await startInstance(5), await startInstance(5), await startInstance(5)];
    for (let round = 0; round < 2; round++) {
      for (const [index, instance] of instances.entries()) instance.writer.record({ kind: "key-failure", keyId: "k1", basis: 0, at: T + round * 10 + index });
    }
    await Promise.all(instances.map((instance) => instance.writer.idle()));
    const verdicts = instances.flatMap((instance) => instance.verdicts);
    expect(verdicts).toEqual([{ kind: "key-disabled", keyId: "k1", basis: 0, since: expect.any(Number), reason: "consecutive failures reached FAILURE_THRESHOLD" }]);
    const decider = instances.findIndex((instance) => instance.verdicts.length === 1);
    const others = instances.filter((_, index) => index !== decider);
    await Promise.all(others.map((instance) => instance.heardCount(1)));
    for (const instance of others) expect(instance.heard).toEqual(verdicts);
    expect(await redis.cli("HGET", keys.streak, "k1")).toBe("6");
  });

  test("a success resets the shared streak, so failures on either side of it never add up to the threshold", async () => {
    const [a, b] = [await startInstance(3), await startInstance(3)];
    a.writer.record({ kind: "key-failure", keyId: "k1", basis: 0, at: T });
    b.writer.record({ kind: "key-failure", keyId: "k1", basis: 0, at: T + 1 });
    await Promise.all([a.writer.idle(), b.writer.idle()]);
    b.writer.record({ kind: "key-success", keyId: "k1", basis: 0, at: T + 2 });
    await b.writer.idle();
    a.writer.record({ kind: "key-failure", keyId: "k1", basis: 0, at: T + 3 });
    b.writer.record({ kind: "key-failure", keyId: "k1", basis: 0, at: T + 4 });
    await Promise.all([a.writer.idle(), b.writer.idle()]);
    expect([...a.verdicts, ...b.verdicts]).toEqual([]);
    expect(await redis.cli("HGET", keys.streak, "k1")).toBe("2");
  });
});
