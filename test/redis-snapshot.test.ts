import { describe, expect, test } from "bun:test";
import { apply, type PoolMemory } from "../src/keys/changes.ts";
import { keyStatus } from "../src/keys/key-status.ts";
import { newKeyRecord } from "../src/keys/schema.ts";
import { createRedisConnection } from "../src/store/redis/connection.ts";
import { createCounterBatcher } from "../src/store/redis/change-writer.ts";
import { redisKeys } from "../src/store/redis/redis-keys.ts";
import { sharedStateScripts } from "../src/store/redis/scripts.ts";
import { readSharedSnapshot } from "../src/store/redis/shared-snapshot.ts";
import { createRedisKeyList } from "../src/store/redis/key-list.ts";
import { createSecretBox, type SecretBox } from "../src/store/secret-box.ts";
import { useRedisServer } from "./helpers/redis-suite.ts";
import { utcDayOf } from "../src/keys/account-state.ts";

const keys = redisKeys("orp:");
/** The real clock: the code under test dates Redis keys by today, so the tests must too. */
const T = Date.now();
const DAY = utcDayOf(T);
const { redis, connection } = useRedisServer({ connection: true });
const scripts = sharedStateScripts(connection, keys);

async function keylessBox(): Promise<SecretBox> {
  const box = await createSecretBox(undefined);
  if (!box.ok) throw new Error(box.message);
  return box.value;
}

describe("the resync snapshot", () => {
  test("reads back every instant the scripts wrote, and applying it gives another instance the same picture", async () => {
    const list = createRedisKeyList({ connection, keys, scripts, box: await keylessBox() });
    for (const id of ["k1", "k2", "k3"]) await list.edit(id, { edit: "add", secret: `sk-or-v1-snapshot-${id}`, addedAt: T }); // versions 1, 2, 3
    await connection.write(scripts.extendCooldown({ keyId: "k1", basis: 1, until: T + 60_000, cause: { source: "header", reason: "429" } }));
    await connection.write(scripts.extendRest({ account: "acct", restId: "class:free", until: T + 3_600_000, cause: { source: "body", reason: "free limit" } }));
    await connection.write(scripts.extendRest({ account: "acct", restId: "model:vendor/m:free", until: T + 120_000, cause: { source: "body", reason: "model" } }));
    for (let i = 0; i < 2; i++) await scripts.recordFailure({ keyId: "k2", basis: 2, threshold: 2, now: T, reason: "401 invalid key" });
    await connection.write(scripts.extendCooldown({ keyId: "k3", basis: 3, until: T + 90_000, cause: { source: "default", reason: "before the enable" } }));
    await list.edit("k3", { edit: "enable" }); // version 4: the cooldown before it is void
    await connection.write(scripts.extendCooldown({ keyId: "k3", basis: 4, until: T + 5_000, cause: { source: "default", reason: "429" } }));

    const result = await readSharedSnapshot(connection, keys, { keyIds: ["k1", "k2", "k3"], day: DAY });
    if (!result.ok) throw new Error(result.message);
    const snapshot = result.value;
    expect(snapshot.switches).toEqual(new Map([["k1", 1], ["k2", 2], ["k3", 4]]));
    expect(snapshot.streaks).toEqual(new Map([["k2", 2]]));

    const loaded = await list.load();
    if (!loaded.ok) throw new Error(loaded.message);
    // Another instance's pool, holding the list as loaded (each key's switch version is its basis).
    const records = loaded.value.map((entry) => ({ ...newKeyRecord(entry.secret, T), id: entry.id, resetAt: entry.switchVersion, account: "acct" }));
    const state: PoolMemory = { byId: new Map(records.map((record) => [record.id, record])), accounts: new Map() };
    for (const change of snapshot.instants) apply(state, change);
    const status = (id: string) => keyStatus(state.byId.get(id) as (typeof records)[number], state.accounts, T);
    expect(status("k1")).toMatchObject({ state: "cooling", until: T + 60_000, reason: "429" });
    expect(state.byId.get("k1")).toMatchObject({ cooldownUntil: T + 60_000, cooldownSource: "header", cooldownReason: "429" });
    expect(status("k2")).toMatchObject({ state: "disabled", reason: "401 invalid key", at: T });
    expect(status("k3")).toMatchObject({ state: "cooling", until: T + 5_000 });
    expect(state.accounts.get("acct")?.rests).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ scope: "account", modelClass: "free", until: T + 3_600_000, reason: "free limit" }),
        expect.objectContaining({ scope: "model", model: "vendor/m:free", until: T + 120_000 }),
      ]),
    );
  });

  test("counters and the day's free count come back as totals of every instance's deltas", async () => {
    for (const instance of ["a", "b"]) {
      const batcher = createCounterBatcher({ keys, instanceId: `${instance}-${crypto.randomUUID()}` });
      batcher.add("k1", { requests: 3, successes: 2, failures: 1, tokens: 30, cost: 0.5 }, instance === "a" ? T + 1 : T + 2);
      await connection.write(batcher.take() as NonNullable<ReturnType<typeof batcher.take>>);
    }
    for (const write of scripts.learnFreeLimit("acct", DAY, 50)) await connection.write(write);
    for (let i = 0; i < 7; i++) await scripts.reserveFreeSlot({ account: "acct", day: DAY });
    await scripts.reserveFreeSlot({ account: "other", day: DAY });

    const result = await readSharedSnapshot(connection, keys, { keyIds: ["k1", "never-used"], day: DAY });
    if (!result.ok) throw new Error(result.message);
    expect(result.value.totals.get("k1")).toEqual({ requests: 6, successes: 4, failures: 2, tokens: 60, cost: 1, lastUsedAt: T + 2 });
    expect(result.value.totals.get("never-used")).toEqual({ requests: 0, successes: 0, failures: 0, tokens: 0, cost: 0, lastUsedAt: 0 });
    expect(result.value.free).toEqual(new Map([["acct", { used: 7, limit: 50 }], ["other", { used: 1 }]]));
  });

  test("with Redis paused, the resync fails within the timeout instead of hanging", async () => {
    const quick = createRedisConnection({ url: redis.url, timeoutMs: 200 });
    await quick.ready;
    redis.pause();
    try {
      const started = performance.now();
      const result = await readSharedSnapshot(quick, keys, { keyIds: ["k1"], day: DAY });
      expect(result).toMatchObject({ ok: false, failure: "timeout" });
      expect(performance.now() - started).toBeLessThan(200 + 150);
    } finally {
      redis.resume();
      await quick.close();
    }
  });
});
