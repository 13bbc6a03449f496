import { describe, expect, test } from "bun:test";
import { apply, type PoolMemory } from "../src/keys/changes.ts";
import type { StateChange } from "../src/keys/state-change.ts";
import { newKeyRecord } from "../src/keys/schema.ts";
import { openChangeChannel, type ChangeChannel } from "../src/store/redis/shared-state.ts";
import { createRedisConnection, type DegradedChange, type RedisConnection } from "../src/store/redis/connection.ts";
import { redisKeys } from "../src/store/redis/redis-keys.ts";
import { useRedisServer } from "./helpers/redis-suite.ts";

const T = Date.parse("2026-12-04T12:00:00.000Z");
const { redis, cleanups } = useRedisServer();

/** An instance as the pool will be: its own state, changes from others applied as they come. */
interface Instance {
  id: string;
  connection: RedisConnection;
  channel: ChangeChannel;
  state: PoolMemory;
  received: StateChange[];
  resyncs: number;
  malformed: number;
  /** Resolves when this instance has received `count` changes in all. */
  receivedCount(count: number): Promise<void>;
  /** Resolves when this instance has resynced `count` times in all. */
  resyncCount(count: number): Promise<void>;
}

async function startInstance(id: string, prefix = "orp:"): Promise<Instance> {
  const connection = createRedisConnection({ url: redis.url, timeoutMs: 500, watchMs: 100, breaker: { threshold: 1, backoffMs: 50, maxBackoffMs: 200 } });
  const waiters: Array<() => void> = [];
  const wake = (): void => {
    for (const waiter of waiters.splice(0)) waiter();
  };
  const until = (done: () => boolean): Promise<void> =>
    new Promise((resolve) => {
      const check = (): void => (done() ? resolve() : void waiters.push(check));
      check();
    });
  const instance: Instance = {
    id,
    connection,
    state: { byId: new Map([["k1", { ...newKeyRecord("sk-or-v1-channel-test-k1", T), id: "k1" }]]), accounts: new Map() },
    received: [],
    resyncs: 0,
    malformed: 0,
    channel: undefined as unknown as ChangeChannel,
    receivedCount: (count) => until(() => instance.received.length >= count),
    resyncCount: (count) => until(() => instance.resyncs >= count),
  };
  instance.channel = openChangeChannel({
    connection,
    keys: redisKeys(prefix),
    instanceId: id,
    onChange(change) {
      instance.received.push(change);
      apply(instance.state, change);
      wake();
    },
    onResync() {
      instance.resyncs += 1;
      wake();
    },
    onMalformed() {
      instance.malformed += 1;
      wake();
    },
  });
  cleanups.push(async () => {
    await instance.channel.close();
    await connection.close();
  });
  await connection.ready;
  await instance.resyncCount(1);
  return instance;
}

const cooldown = (until: number): StateChange => ({ kind: "key-cooldown", keyId: "k1", basis: 0, until, source: "header", reason: "429" });

describe("changes between instances", () => {
  test("a change made by one instance reaches every other instance exactly once, and not its maker", async () => {
    const [a, b, c] = await Promise.all([startInstance("a"), startInstance("b"), startInstance("c")]);
    if (!a || !b || !c) throw new Error("instances did not start");
    expect((await a.channel.publish(cooldown(T + 60_000))).ok).toBe(true);
    // A marker from b afterwards: once a and c have it, a's change had its chance to arrive twice.
    await b.channel.publish({ kind: "key-counters", keyId: "k1", delta: { requests: 1 } });
    await Promise.all([b.receivedCount(1), c.receivedCount(2), a.receivedCount(1)]);
    expect(b.received).toEqual([cooldown(T + 60_000)]);
    expect(c.received.length).toBe(2);
    expect(a.received).toEqual([{ kind: "key-counters", keyId: "k1", delta: { requests: 1 } }]);
    expect(c.state.byId.get("k1")?.cooldownUntil).toBe(T + 60_000);
  });

  test("a malformed or foreign message on the channel is counted and never applied", async () => {
    const [a, b] = await Promise.all([startInstance("a"), startInstance("b")]);
    if (!a || !b) throw new Error("instances did not start");
    for (const message of ["not json", "{}", '{"from":"x","change":{"kind":"drop"}}', '{"change":{"kind":"key-counters","keyId":"k","delta":{}}}']) {
      await redis.cli("PUBLISH", "orp:changes", message);
    }
    await a.channel.publish(cooldown(T));
    await b.receivedCount(1);
    expect(b.malformed).toBe(4);
    expect(b.received).toEqual([cooldown(T)]);
  });

  test("after Redis restarts, each instance resubscribes and resyncs, and the next change arrives exactly once", async () => {
    const [a, b] = await Promise.all([startInstance("a"), startInstance("b")]);
    if (!a || !b) throw new Error("instances did not start");
    const recovered = (instance: Instance): Promise<void> =>
      new Promise((resolve) => {
        const stop = instance.connection.onChange((change: DegradedChange) => {
          if (change.degraded) return;
          stop();
          resolve();
        });
      });
    const up = [recovered(a), recovered(b)];
    await redis.kill();
    expect((await a.channel.publish(cooldown(T))).ok).toBe(false); // best effort: not queued
    await redis.restart();
    await Promise.all([...up, a.resyncCount(2), b.resyncCount(2)]);
    await a.channel.publish(cooldown(T + 1));
    await b.channel.publish(cooldown(T + 2));
    await Promise.all([a.receivedCount(1), b.receivedCount(1)]);
    // One more round trip each: a duplicate delivery would be here by now.
    await a.channel.publish(cooldown(T + 3));
    await b.channel.publish(cooldown(T + 4));
    await Promise.all([a.receivedCount(2), b.receivedCount(2)]);
    expect(b.received).toEqual([cooldown(T + 1), cooldown(T + 3)]);
    expect(a.received).toEqual([cooldown(T + 2), cooldown(T + 4)]);
  }, 20_000);

  test("pools with different REDIS_PREFIX on one Redis do not hear each other", async () => {
    const [a, b, other] = await Promise.all([startInstance("a", "team-a:"), startInstance("b", "team-a:"), startInstance("c", "team-b:")]);
    if (!a || !b || !other) throw new Error("instances did not start");
    await a.channel.publish(cooldown(T));
    await other.channel.publish(cooldown(T + 5));
    await b.receivedCount(1);
    await a.channel.publish(cooldown(T + 9));
    await b.receivedCount(2);
    expect(b.received).toEqual([cooldown(T), cooldown(T + 9)]);
    expect(other.received).toEqual([]);
  });
});
