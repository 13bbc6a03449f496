import { afterEach, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { causeFromText } from "../src/keys/changes.ts";
import type { Cause } from "../src/keys/state-change.ts";
import { createRedisConnection } from "../src/store/redis/connection.ts";
import { freeDayExpiry, redisKeys } from "../src/store/redis/redis-keys.ts";
import { sharedStateScripts } from "../src/store/redis/scripts.ts";
import { useRedisServer } from "./helpers/redis-suite.ts";
import { utcDayOf } from "../src/keys/account-state.ts";

const PREFIX = "orp-test:";
const keys = redisKeys(PREFIX);
/** The real clock: the code under test dates Redis keys by today, so the tests must too. */
const T = Date.now();
const DAY = utcDayOf(T);

const { redis, connection } = useRedisServer({ connection: true });
const scripts = sharedStateScripts(connection, keys);

afterEach(() => {
  expect(connection.refused).toBe(0); // no write was refused by Redis (a broken script would be)
});

const causeOf = async (keyId: string): Promise<Cause | undefined> => {
  const result = await connection.send("HGET", [keys.cooldownCause, keyId]);
  return result.ok && typeof result.value === "string" ? causeFromText(result.value) : undefined;
};
const score = async (set: string, member: string): Promise<number> => Number(await redis.cli("ZSCORE", set, member));

describe("extend-only instants", () => {
  test("a cooldown in Redis is never shortened by a later, shorter one", async () => {
    await connection.write(scripts.extendCooldown({ keyId: "k1", basis: 0, until: T + 60_000, cause: { source: "header", reason: "429" } }));
    await connection.write(scripts.extendCooldown({ keyId: "k1", basis: 0, until: T + 5_000, cause: { source: "default", reason: "429" } }));
    expect(await score(keys.cooldown, "k1")).toBe(T + 60_000);
    expect(await causeOf("k1")).toEqual({ source: "header", reason: "429" });
    await connection.write(scripts.extendCooldown({ keyId: "k1", basis: 0, until: T + 90_000, cause: { source: "body", reason: "429" } }));
    expect(await score(keys.cooldown, "k1")).toBe(T + 90_000);
    expect(await causeOf("k1")).toEqual({ source: "body", reason: "429" });
  });

  test("equal instants keep the greater cause, whichever was written first, as the pure model does", async () => {
    await connection.write(scripts.extendCooldown({ keyId: "k1", basis: 0, until: T, cause: { source: "test", reason: "b" } }));
    await connection.write(scripts.extendCooldown({ keyId: "k1", basis: 0, until: T, cause: { source: "test", reason: "a" } }));
    await connection.write(scripts.extendCooldown({ keyId: "k2", basis: 0, until: T, cause: { source: "test", reason: "a" } }));
    await connection.write(scripts.extendCooldown({ keyId: "k2", basis: 0, until: T, cause: { source: "test", reason: "b" } }));
    expect([await causeOf("k1"), await causeOf("k2")]).toEqual([{ source: "test", reason: "b" }, { source: "test", reason: "b" }]);
  });

  test("an account's rest is never shortened, and a model rest is kept apart from the class rest", async () => {
    await connection.write(scripts.extendRest({ account: "acct", restId: "class:free", until: T + 60_000, cause: { source: "test", reason: "limit" } }));
    await connection.write(scripts.extendRest({ account: "acct", restId: "class:free", until: T + 1_000, cause: { source: "test", reason: "limit" } }));
    await connection.write(scripts.extendRest({ account: "acct", restId: "model:m:free", until: T + 2_000, cause: { source: "test", reason: "model" } }));
    expect(await score(keys.accountRest, "acct|class:free")).toBe(T + 60_000);
    expect(await score(keys.accountRest, "acct|model:m:free")).toBe(T + 2_000);
  });

  test("a person's enable clears the cooldown, and a cooldown learned before it (older basis) stays void", async () => {
    await connection.write(scripts.extendCooldown({ keyId: "k1", basis: 0, until: T + 60_000, cause: { source: "test", reason: "429" } }));
    await connection.write(scripts.enableKey("k1", 3));
    expect(await redis.cli("ZSCORE", keys.cooldown, "k1")).toBe("");
    await connection.write(scripts.extendCooldown({ keyId: "k1", basis: 2, until: T + 90_000, cause: { source: "test", reason: "late" } }));
    expect(await redis.cli("ZSCORE", keys.cooldown, "k1")).toBe("");
    await connection.write(scripts.extendCooldown({ keyId: "k1", basis: 3, until: T + 30_000, cause: { source: "test", reason: "new" } }));
    expect(await score(keys.cooldown, "k1")).toBe(T + 30_000);
  });
});

describe("failure counting and disabling in one script", () => {
  test("failures recorded at once by many clients disable the key exactly once, at the threshold", async () => {
    const clients = Array.from({ length: 5 }, () => createRedisConnection({ url: redis.url, timeoutMs: 2_000 }));
    try {
      await Promise.all(clients.map((client) => client.ready));
      const results = await Promise.all(
        clients.flatMap((client) =>
          Array.from({ length: 4 }, () => sharedStateScripts(client, keys).recordFailure({ keyId: "k1", basis: 0, threshold: 5, now: T, reason: "401" })),
        ),
      );
      const values = results.map((result) => (result.ok ? result.value : "failed"));
      expect(values.filter((value) => typeof value === "object" && value.disabled)).toEqual([{ count: 5, disabled: true }]);
      expect(await redis.cli("HGET", keys.streak, "k1")).toBe("20");
      expect(await score(keys.disabled, "k1")).toBe(T);
      expect(await redis.cli("HGET", keys.disabledCause, "k1")).toBe("401");
    } finally {
      await Promise.all(clients.map((client) => client.close()));
    }
  });

  test("a success resets the streak, so the threshold counts consecutive failures only", async () => {
    const fail = () => scripts.recordFailure({ keyId: "k1", basis: 0, threshold: 3, now: T, reason: "401" });
    await fail();
    await fail();
    await connection.write(scripts.recordSuccess("k1", 0));
    expect(await fail()).toEqual({ ok: true, value: { count: 1, disabled: false } });
  });

  test("a failure learned before a person's enable is void, and the enable ends the disabled state", async () => {
    for (let i = 0; i < 3; i++) await scripts.recordFailure({ keyId: "k1", basis: 0, threshold: 3, now: T, reason: "401" });
    expect(await score(keys.disabled, "k1")).toBe(T);
    await connection.write(scripts.enableKey("k1", 1));
    expect(await redis.cli("ZSCORE", keys.disabled, "k1")).toBe("");
    expect(await scripts.recordFailure({ keyId: "k1", basis: 0, threshold: 3, now: T, reason: "401" })).toEqual({ ok: true, value: "void" });
    expect(await scripts.recordFailure({ keyId: "k1", basis: 1, threshold: 3, now: T, reason: "401" })).toEqual({ ok: true, value: { count: 1, disabled: false } });
  });
});

describe("free-model slot reservation", () => {
  test("3 separate processes reserving against a limit of 10 get exactly 10 yeses", async () => {
    for (const write of scripts.learnFreeLimit("acct", DAY, 10)) await connection.write(write);
    const helper = join(import.meta.dir, "helpers", "free-slot-reserver.ts");
    const children = Array.from({ length: 3 }, () =>
      Bun.spawn([process.execPath, helper, redis.url, PREFIX, "acct", DAY, "15"], { stdin: "pipe", stdout: "pipe", stderr: "inherit" }),
    );
    const readers = children.map((child) => child.stdout.getReader());
    const decoder = new TextDecoder();
    const readLine = async (reader: (typeof readers)[number]): Promise<string> => {
      let text = "";
      while (!text.includes("\n")) {
        const { done, value } = await reader.read();
        if (done) break;
        text += decoder.decode(value);
      }
      return text.trim();
    };
    expect(await Promise.all(readers.map(readLine))).toEqual(["ready", "ready", "ready"]);
    for (const child of children) {
      child.stdin.write("go\n");
      await child.stdin.flush();
    }
    const answers = (await Promise.all(readers.map(readLine))).map((line) => JSON.parse(line) as { granted: number; failed: number });
    await Promise.all(children.map((child) => child.exited));
    expect(answers.reduce((sum, answer) => sum + answer.failed, 0)).toBe(0);
    expect(answers.reduce((sum, answer) => sum + answer.granted, 0)).toBe(10);
    expect(await redis.cli("HGET", keys.freeDay(DAY), "used:acct")).toBe("10");
  }, 30_000);

  test("an unknown limit grants; once the limit is learned, reservations stop at it", async () => {
    const reserve = () => scripts.reserveFreeSlot({ account: "acct", day: DAY });
    expect(await reserve()).toEqual({ ok: true, value: { granted: true, used: 1 } });
    expect(await reserve()).toEqual({ ok: true, value: { granted: true, used: 2 } });
    for (const write of scripts.learnFreeLimit("acct", DAY, 3)) await connection.write(write);
    expect(await reserve()).toEqual({ ok: true, value: { granted: true, used: 3, limit: 3 } });
    expect(await reserve()).toEqual({ ok: true, value: { granted: false, used: 3, limit: 3 } });
  });

  test("the instance's own known limit applies when Redis has none for the day", async () => {
    const reserve = () => scripts.reserveFreeSlot({ account: "acct", day: DAY, knownLimit: 1 });
    expect((await reserve()).ok && (await reserve())).toEqual({ ok: true, value: { granted: false, used: 1, limit: 1 } });
  });

  test("accounts and UTC days are counted apart, and a day's counter expires after the day", async () => {
    await scripts.reserveFreeSlot({ account: "a", day: DAY });
    await scripts.reserveFreeSlot({ account: "b", day: DAY });
    await scripts.reserveFreeSlot({ account: "a", day: utcDayOf(T + 86_400_000) });
    expect(await redis.cli("HGETALL", keys.freeDay(DAY))).toBe("used:a\n1\nused:b\n1");
    expect(Number(await redis.cli("EXPIRETIME", keys.freeDay(DAY)))).toBe(freeDayExpiry(DAY));
    expect(freeDayExpiry(DAY)).toBe(Date.parse(`${utcDayOf(T + 2 * 86_400_000)}T00:00:00.000Z`) / 1000);
  });
});

describe("EVALSHA with EVAL as the fallback", () => {
  test("scripts keep working after Redis lost its script cache (SCRIPT FLUSH), for calls and queued writes alike", async () => {
    expect((await scripts.reserveFreeSlot({ account: "acct", day: DAY })).ok).toBe(true);
    await redis.cli("SCRIPT", "FLUSH");
    expect(await scripts.reserveFreeSlot({ account: "acct", day: DAY })).toEqual({ ok: true, value: { granted: true, used: 2 } });
    await redis.cli("SCRIPT", "FLUSH");
    await connection.write(scripts.extendCooldown({ keyId: "k1", basis: 0, until: T, cause: { source: "test", reason: "c" } }));
    expect(await connection.send("ZSCORE", [keys.cooldown, "k1"])).toEqual({ ok: true, value: T }); // RESP3: a double
  });
});
