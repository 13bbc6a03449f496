import { describe, expect, test } from "bun:test";
import type { Rotation } from "../src/config.ts";
import { createEventBus } from "../src/observe/event-bus.ts";
import { createKeyPool, type KeyPool } from "../src/keys/key-pool.ts";
import { newKeyRecord } from "../src/keys/schema.ts";

function poolOf(count: number, rotation: Rotation, { failureThreshold = 5 } = {}) {
  const clock = { now: Date.parse("2026-11-25T12:00:00.000Z") };
  const events = createEventBus();
  const pool = createKeyPool({ rotation, failureThreshold, now: () => clock.now, events });
  const records = Array.from({ length: count }, (_, index) => newKeyRecord(`sk-or-v1-pool-test-key-number-${index}-xxxxxxxx`, clock.now, `k${index}`));
  pool.replaceKeys(records);
  const ids = records.map((record) => record.id);
  return { pool, clock, events, ids };
}

function takeIds(pool: KeyPool, count: number): string[] {
  return Array.from({ length: count }, () => {
    const acquired = pool.acquire();
    if (!acquired.ok) throw new Error(`no key: ${acquired.reason}`);
    return acquired.lease.keyId;
  });
}

describe("rotation order", () => {
  test("sticky keeps the key that served the last request while it is available", () => {
    const { pool, ids } = poolOf(3, "sticky");
    expect(takeIds(pool, 4)).toEqual([ids[0], ids[0], ids[0], ids[0]] as string[]);
  });

  test("sticky moves to the least recently used available key when its key cools down, and stays there", () => {
    const { pool, ids, clock } = poolOf(3, "sticky");
    takeIds(pool, 1); // k0
    pool.report(ids[0] as string, { kind: "rate-limited", scope: "key", modelClass: "all", until: clock.now + 60_000, source: "header" });
    expect(takeIds(pool, 3)).toEqual([ids[1], ids[1], ids[1]] as string[]);
  });

  test("round-robin takes each key in turn", () => {
    const { pool, ids } = poolOf(3, "round-robin");
    expect(takeIds(pool, 6)).toEqual([ids[0], ids[1], ids[2], ids[0], ids[1], ids[2]] as string[]);
  });

  test("round-robin skips a key that is cooling down", () => {
    const { pool, ids, clock } = poolOf(3, "round-robin");
    pool.report(ids[1] as string, { kind: "rate-limited", scope: "key", modelClass: "all", until: clock.now + 60_000, source: "default" });
    expect(takeIds(pool, 4)).toEqual([ids[0], ids[2], ids[0], ids[2]] as string[]);
  });

  test("least-recently-used takes the key idle the longest", () => {
    const { pool, ids } = poolOf(3, "least-recently-used");
    expect(takeIds(pool, 3)).toEqual([ids[0], ids[1], ids[2]] as string[]);
    expect(takeIds(pool, 3)).toEqual([ids[0], ids[1], ids[2]] as string[]);
  });
});

describe("cooldowns", () => {
  test("a cooling key is not handed out, and its cooldown ends by itself", () => {
    const { pool, ids, clock, events } = poolOf(1, "sticky");
    const recovered: string[] = [];
    events.on("key.recovered", ({ keyId }) => recovered.push(keyId));
    pool.report(ids[0] as string, { kind: "rate-limited", scope: "key", modelClass: "all", until: clock.now + 30_000, source: "header" });
    const refused = pool.acquire();
    expect(refused).toEqual({ ok: false, reason: "all-cooling", cooling: 1, nextAvailableAt: clock.now + 30_000, resetKnown: true, total: 1 });
    clock.now += 30_001;
    expect(takeIds(pool, 1)).toEqual([ids[0] as string]);
    expect(recovered).toEqual([ids[0] as string]);
  });

  test("a new cooldown never shortens one already running", () => {
    const { pool, ids, clock } = poolOf(1, "sticky");
    const id = ids[0] as string;
    pool.report(id, { kind: "rate-limited", scope: "key", modelClass: "all", until: clock.now + 120_000, source: "header" });
    pool.report(id, { kind: "rate-limited", scope: "key", modelClass: "all", until: clock.now + 10_000, source: "default" });
    const [record] = pool.records();
    expect(record?.cooldownUntil).toBe(clock.now + 120_000);
    pool.report(id, { kind: "rate-limited", scope: "key", modelClass: "all", until: clock.now + 180_000, source: "header" });
    expect(pool.records()[0]?.cooldownUntil).toBe(clock.now + 180_000);
  });

  test("a success that says nothing remains cools the key down right away", () => {
    const { pool, ids, clock } = poolOf(2, "sticky");
    takeIds(pool, 1);
    pool.report(ids[0] as string, { kind: "ok", exhausted: { until: clock.now + 45_000, source: "header" } });
    expect(takeIds(pool, 1)).toEqual([ids[1] as string]);
  });

  test("many requests in flight do not keep sending to a key that has just gone into cooldown", () => {
    const { pool, ids, clock } = poolOf(2, "sticky");
    const leases = takeIds(pool, 5); // five requests in flight on k0
    expect(new Set(leases)).toEqual(new Set([ids[0] as string]));
    pool.report(ids[0] as string, { kind: "rate-limited", scope: "key", modelClass: "all", until: clock.now + 60_000, source: "header" });
    // The other four now report their own outcomes; the next requests never get k0.
    for (let i = 0; i < 4; i++) pool.report(ids[0] as string, { kind: "ok" });
    expect(takeIds(pool, 5)).toEqual(Array(5).fill(ids[1]));
  });
});

describe("failures", () => {
  test("a key is disabled at FAILURE_THRESHOLD consecutive failures, with the reason kept", () => {
    const { pool, ids, events } = poolOf(2, "sticky", { failureThreshold: 3 });
    const disabled: string[] = [];
    events.on("key.disabled", ({ keyId }) => disabled.push(keyId));
    const id = ids[0] as string;
    pool.report(id, { kind: "key-failure", reason: "upstream answered 401: User not found." });
    pool.report(id, { kind: "key-failure", reason: "upstream answered 401: User not found." });
    expect(pool.statusOf(pool.records()[0]!).state).toBe("active");
    pool.report(id, { kind: "key-failure", reason: "upstream answered 401: User not found." });
    const status = pool.statusOf(pool.records()[0]!);
    expect(status.state).toBe("disabled");
    expect(status.state === "disabled" && status.reason).toContain("401: User not found.");
    expect(disabled).toEqual([id]);
    expect(takeIds(pool, 2)).toEqual([ids[1], ids[1]] as string[]);
  });

  test("a success resets the consecutive failure count", () => {
    const { pool, ids } = poolOf(1, "sticky", { failureThreshold: 3 });
    const id = ids[0] as string;
    pool.report(id, { kind: "key-failure", reason: "402" });
    pool.report(id, { kind: "key-failure", reason: "402" });
    pool.report(id, { kind: "ok" });
    expect(pool.records()[0]?.consecutiveFailures).toBe(0);
    pool.report(id, { kind: "key-failure", reason: "402" });
    pool.report(id, { kind: "key-failure", reason: "402" });
    expect(pool.statusOf(pool.records()[0]!).state).toBe("active");
  });

  test("upstream faults and the request's own errors leave no mark on the key", () => {
    const { pool, ids } = poolOf(1, "sticky", { failureThreshold: 1 });
    const id = ids[0] as string;
    pool.report(id, { kind: "upstream-error", reason: "upstream answered 502" });
    pool.report(id, { kind: "request-error" });
    const [record] = pool.records();
    expect(record?.consecutiveFailures).toBe(0);
    expect(pool.statusOf(record!).state).toBe("active");
  });

  test("with every key disabled, acquire says so", () => {
    const { pool, ids } = poolOf(1, "sticky", { failureThreshold: 1 });
    pool.report(ids[0] as string, { kind: "key-failure", reason: "401" });
    expect(pool.acquire()).toEqual({ ok: false, reason: "all-disabled", total: 1 });
  });

  test("with no keys, acquire says so", () => {
    const { pool } = poolOf(0, "sticky");
    expect(pool.acquire()).toEqual({ ok: false, reason: "no-keys", total: 0 });
  });
});

describe("the pool's decisions as changes", () => {
  test("each decision reaches the change listeners as the changes it made: counters for an acquire and a plain success, instants for a 429", () => {
    const { pool, ids, clock } = poolOf(2, "least-recently-used");
    const heard: string[][] = [];
    pool.onChange((changes) => heard.push(changes.map((change) => change.kind)));
    takeIds(pool, 1);
    pool.report(ids[0] as string, { kind: "ok" });
    pool.report(ids[0] as string, { kind: "rate-limited", scope: "key", modelClass: "all", until: clock.now + 60_000, source: "header" });
    // A shorter cooldown changes nothing: nothing to hand out.
    pool.report(ids[0] as string, { kind: "rate-limited", scope: "key", modelClass: "all", until: clock.now + 1_000, source: "header" });
    expect(heard).toEqual([["key-counters"], ["key-counters"], ["key-cooldown"]]);
  });

  test("a failure streak reaching FAILURE_THRESHOLD is one more decision: the key disabled; a success after a streak ends it", () => {
    const { pool, ids } = poolOf(2, "least-recently-used", { failureThreshold: 2 });
    const heard: string[][] = [];
    pool.onChange((changes) => heard.push(changes.map((change) => change.kind)));
    pool.report(ids[0] as string, { kind: "key-failure", reason: "401" });
    pool.report(ids[1] as string, { kind: "key-failure", reason: "401" });
    pool.report(ids[1] as string, { kind: "ok" });
    pool.report(ids[0] as string, { kind: "key-failure", reason: "401" });
    expect(heard).toEqual([["key-counters", "key-failure"], ["key-counters", "key-failure"], ["key-counters", "key-success"], ["key-counters", "key-failure"], ["key-disabled"]]);
  });

  test("a change heard from elsewhere is applied by the same rules, announces no event and is not handed out again", () => {
    const { pool, ids, clock, events } = poolOf(2, "least-recently-used");
    const heard: unknown[] = [];
    const announced: unknown[] = [];
    pool.onChange((changes) => heard.push(changes));
    events.on("key.cooldown", (cooled) => announced.push(cooled));
    const keyId = ids[0] as string;
    pool.apply({ kind: "key-cooldown", keyId, basis: 0, until: clock.now + 60_000, source: "header", reason: "429 elsewhere" });
    pool.apply({ kind: "key-cooldown", keyId, basis: 0, until: clock.now + 1_000, source: "header", reason: "shorter" });
    expect(pool.statusOf(pool.records().find((record) => record.id === keyId) as ReturnType<KeyPool["records"]>[number])).toMatchObject({ state: "cooling", until: clock.now + 60_000, reason: "429 elsewhere" });
    expect(heard).toEqual([]);
    expect(announced).toEqual([]);
  });
});
