import { describe, expect, test } from "bun:test";
import type { KeyListEntry } from "../src/keys/state-change.ts";
import { createRedisConnection, type RedisConnection } from "../src/store/redis/connection.ts";
import { createRedisKeyList, type RedisKeyList } from "../src/store/redis/key-list.ts";
import { redisKeys } from "../src/store/redis/redis-keys.ts";
import { sharedStateScripts } from "../src/store/redis/scripts.ts";
import { createSecretBox, type SecretBox } from "../src/store/secret-box.ts";
import { useRedisServer } from "./helpers/redis-suite.ts";

const keys = redisKeys("orp:");
const T = Date.parse("2026-12-04T12:00:00.000Z");
const SECRET = "sk-or-v1-key-list-test-0123456789abcdef0123456789abcdef01234567";
const ENCRYPTION_KEY = Buffer.alloc(32, 11).toString("base64");
const { redis, connection } = useRedisServer({ connection: true });

async function boxOf(raw: string | undefined): Promise<SecretBox> {
  const box = await createSecretBox(raw);
  if (!box.ok) throw new Error(box.message);
  return box.value;
}

async function listWith(raw: string | undefined, on: RedisConnection = connection): Promise<RedisKeyList> {
  return createRedisKeyList({ connection: on, keys, scripts: sharedStateScripts(on, keys), box: await boxOf(raw) });
}

function entries(result: Awaited<ReturnType<RedisKeyList["load"]>>): KeyListEntry[] {
  if (!result.ok) throw new Error(result.message);
  return result.value;
}

describe("the key list in Redis", () => {
  test("a key added through one instance is in the list another loads, its secret sealed in Redis with KEYS_ENCRYPTION_KEY", async () => {
    const a = await listWith(ENCRYPTION_KEY);
    const added = await a.edit("k1", { edit: "add", secret: SECRET, label: "main", addedAt: T });
    expect(added).toMatchObject({ ok: true, value: { applied: true, change: { kind: "key-edit", keyId: "k1", version: 1, edit: "add" } } });
    if (added.ok && added.value.applied) expect(added.value.change).not.toMatchObject({ secret: SECRET }); // the change to publish is sealed too
    const stored = await redis.cli("HGET", keys.keyList, "k1");
    expect(stored).toContain('"secret":"enc:v1:');
    expect(stored).not.toContain(SECRET);
    const b = await listWith(ENCRYPTION_KEY);
    expect(entries(await b.load())).toEqual([{ id: "k1", secret: SECRET, label: "main", addedAt: T, removed: false, version: 1, addVersion: 1, removeVersion: 0, switchVersion: 1, labelVersion: 1 }]);
  });

  test("without KEYS_ENCRYPTION_KEY the secret is stored as given, as a keys file holds it", async () => {
    const list = await listWith(undefined);
    await list.edit("k1", { edit: "add", secret: SECRET, addedAt: T });
    expect(await redis.cli("HGET", keys.keyList, "k1")).toContain(SECRET);
  });

  test("a wrong or missing KEYS_ENCRYPTION_KEY makes loading one line naming the variable, not a crash or a skip", async () => {
    await (await listWith(ENCRYPTION_KEY)).edit("k1", { edit: "add", secret: SECRET, addedAt: T });
    for (const raw of [Buffer.alloc(32, 12).toString("base64"), undefined]) {
      const result = await (await listWith(raw)).load();
      if (result.ok) throw new Error("a sealed secret was opened with the wrong key");
      expect([result.failure, result.message.includes("KEYS_ENCRYPTION_KEY"), result.message.includes("\n")]).toEqual(["secret", true, false]);
    }
  });

  test("edits take increasing versions; enable and label apply by their own rules; a removal leaves a tombstone without its secret", async () => {
    const list = await listWith(undefined);
    await list.edit("k1", { edit: "add", secret: SECRET, addedAt: T });
    expect(await list.edit("k1", { edit: "add", secret: SECRET, addedAt: T + 1 })).toMatchObject({ ok: true, value: { applied: false } });
    await list.edit("k1", { edit: "label", label: "renamed" });
    await list.edit("k1", { edit: "disable", at: T, reason: "by hand" });
    expect(entries(await list.load())[0]).toMatchObject({ label: "renamed", personDisabled: { at: T, reason: "by hand" }, version: 4, switchVersion: 4, labelVersion: 3 });
    await list.edit("k1", { edit: "enable" });
    expect(entries(await list.load())[0]).not.toHaveProperty("personDisabled");
    expect(await list.edit("unknown", { edit: "enable" })).toMatchObject({ ok: true, value: { applied: false } });
    await list.edit("k1", { edit: "remove" });
    expect(entries(await list.load())).toEqual([
      { id: "k1", secret: "", label: "renamed", addedAt: 0, removed: true, version: 7, addVersion: 1, removeVersion: 7, switchVersion: 7, labelVersion: 3 },
    ]);
    expect(await list.edit("k1", { edit: "enable" })).toMatchObject({ ok: true, value: { applied: false } });
    expect(await redis.cli("HGET", keys.keyList, "k1")).not.toContain(SECRET);
  });

  test("a person's enable through the list clears what the pool learned in Redis (cooldown, disabled, failure streak)", async () => {
    const list = await listWith(undefined);
    const scripts = sharedStateScripts(connection, keys);
    await list.edit("k1", { edit: "add", secret: SECRET, addedAt: T });
    await connection.write(scripts.extendCooldown({ keyId: "k1", basis: 1, until: T + 60_000, cause: { source: "header", reason: "429" } }));
    for (let i = 0; i < 2; i++) await scripts.recordFailure({ keyId: "k1", basis: 1, threshold: 2, now: T, reason: "401" });
    await list.edit("k1", { edit: "enable" });
    expect([await redis.cli("ZSCORE", keys.cooldown, "k1"), await redis.cli("ZSCORE", keys.disabled, "k1"), await redis.cli("HGET", keys.streak, "k1")]).toEqual(["", "", ""]);
    expect(await redis.cli("HGET", keys.switchVersion, "k1")).toBe("2");
  });

  test("edits of one key from many clients at once all land, in version order (compare-and-set retries)", async () => {
    const clients = await Promise.all(
      Array.from({ length: 4 }, async () => {
        const client = createRedisConnection({ url: redis.url, timeoutMs: 2_000 });
        await client.ready;
        return client;
      }),
    );
    try {
      await (await listWith(undefined)).edit("k1", { edit: "add", secret: SECRET, addedAt: T });
      const lists = await Promise.all(clients.map((client) => listWith(undefined, client)));
      const results = await Promise.all(lists.flatMap((list, i) => Array.from({ length: 5 }, (_, j) => list.edit("k1", { edit: "label", label: `label ${i}-${j}` }))));
      expect(results.every((result) => result.ok)).toBe(true);
      const labels = results.flatMap((result) => (result.ok && result.value.applied ? [result.value.change] : []));
      const newest = labels.reduce((best, change) => (change.version > best.version ? change : best));
      const [entry] = entries(await lists[0]!.load());
      expect(entry).toMatchObject({ version: 21, labelVersion: 21 });
      expect(newest.version).toBe(21);
      expect(entry?.label).toBe(newest.edit === "label" ? newest.label : "");
    } finally {
      await Promise.all(clients.map((client) => client.close()));
    }
  });
});
