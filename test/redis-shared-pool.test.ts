/**
 * Two pools in one process, each wired to a real redis-server as `serve` wires it
 * (openSharedState + startSharedPool): what one pool decides goes out on its change stream, lands
 * in Redis and reaches the other pool, which applies it and never sends it back out.
 */
import { describe, expect, test } from "bun:test";
import { RedisClient } from "bun";
import { createKeyPool, type KeyPool } from "../src/keys/key-pool.ts";
import { newKeyRecord } from "../src/keys/schema.ts";
import { createEventBus } from "../src/observe/event-bus.ts";
import { startSharedPool } from "../src/store/redis/shared-pool.ts";
import { openSharedState, type SharedState } from "../src/store/redis/shared-state.ts";
import { hasRedis, useRedisServer } from "./helpers/redis-suite.ts";
import { eventually } from "./helpers/test-proxy.ts";
import { utcDayOf } from "../src/keys/account-state.ts";

const { redis, cleanups } = useRedisServer({ optional: true });
const PREFIX = "sp:";
const records = [0, 1].map((index) => newKeyRecord(`sk-or-v1-shared-pool-test-key-${index}-xxxxxxxx`, Date.now()));
const keyId = (records[0] as (typeof records)[number]).id;

interface Instance {
  pool: KeyPool;
  shared: SharedState;
}

async function startInstance(keys = records): Promise<Instance & { synced: Promise<boolean> }> {
  const opened = await openSharedState({ url: redis.url, prefix: PREFIX, failureThreshold: 5, timeoutMs: 2_000 });
  if (!opened.ok) throw new Error(opened.message);
  const { shared } = opened;
  const events = createEventBus();
  const pool = createKeyPool({ rotation: "least-recently-used", failureThreshold: 5, events });
  pool.replaceKeys(keys);
  const sharedPool = startSharedPool({ pool, shared, events, now: Date.now, resyncMs: 600_000 });
  cleanups.push(async () => {
    await sharedPool.stop();
    await shared.close();
  });
  return { pool, shared, synced: sharedPool.synced };
}

const statusOf = (instance: Instance) => instance.pool.keyViews().find((view) => view.id === keyId)?.status;

describe.skipIf(!hasRedis)("the pool's change stream and Redis", () => {
  test("a cooldown one pool decides is in Redis and on the other pool once, and the pool that heard it does not send it back out", async () => {
    const heard: string[] = [];
    const listener = new RedisClient(redis.url);
    await listener.subscribe(`${PREFIX}changes`, (message) => heard.push(message));
    cleanups.push(async () => listener.close());
    const [a, b] = [await startInstance(), await startInstance()];
    const until = Date.now() + 120_000;

    a.pool.report(keyId, { kind: "rate-limited", scope: "key", modelClass: "all", until, source: "header", message: "429 on A" });
    await eventually(() => statusOf(b) === "cooling", { what: "the cooldown on B" });
    expect(await redis.cli("ZSCORE", `${PREFIX}key:cooldown`, keyId)).toBe(String(until));

    // A marker from B after it applied the cooldown: had B sent the cooldown back out, it would be before the marker.
    await b.shared.publish({ kind: "key-account", keyId: "marker", account: "marker" });
    await eventually(() => heard.some((message) => message.includes('"marker"')), { what: "B's marker on the channel" });
    expect(heard.filter((message) => message.includes('"kind":"key-cooldown"')).length).toBe(1);
  });

  test("an acquire and a success reach Redis as counter deltas, from the stream alone", async () => {
    const a = await startInstance();
    const acquired = a.pool.acquire();
    if (!acquired.ok) throw new Error(acquired.reason);
    a.pool.report(acquired.lease.keyId, { kind: "ok" });
    await a.shared.writer.flush();
    await a.shared.writer.idle();
    const stats = await redis.cli("HGET", `${PREFIX}key:stats:${acquired.lease.keyId}`, "requests");
    const successes = await redis.cli("HGET", `${PREFIX}key:stats:${acquired.lease.keyId}`, "successes");
    expect({ stats, successes }).toEqual({ stats: "1", successes: "1" });
  });

  test("a pool wired after Redis was subscribed to knows the day's free count and limit Redis holds at once, not at the next backstop resync", async () => {
    const account = "acct-late";
    const day = utcDayOf(Date.now());
    const early = await startInstance();
    for (const write of early.shared.scripts.learnFreeLimit(account, day, 10)) await early.shared.connection.write(write);
    for (let i = 0; i < 3; i++) await early.shared.scripts.reserveFreeSlot({ account, day });

    const late = await startInstance(records.map((record) => ({ ...record, account })));
    expect(await late.synced).toBe(true);
    expect(late.pool.accounts().get(account)?.free).toMatchObject({ day, used: 3, limit: 10 });
  });
});
