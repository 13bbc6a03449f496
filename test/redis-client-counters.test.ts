/**
 * The client gate on shared counters (store/redis/client-counters.ts) against a real
 * redis-server, in process: several gates, each with its own connection and directory, stand for
 * several instances. An injected clock puts every request in a known window.
 */
import { describe, expect, test } from "bun:test";
import { addClient } from "../src/clients/client-admin.ts";
import { createClientDirectory, type LiveClient } from "../src/clients/client-directory.ts";
import { createClientGate, type Admission, type ClientGate } from "../src/clients/client-gate.ts";
import type { ClientRecord } from "../src/clients/client-schema.ts";
import { parseClientSettings } from "../src/clients/client-settings.ts";
import type { SharedClientCounters } from "../src/clients/shared-counters.ts";
import { ProxyError } from "../src/domain/errors.ts";
import { redisKeys } from "../src/store/redis/redis-keys.ts";
import { createRedisClientCounters } from "../src/store/redis/client-counters.ts";
import { createRedisConnection, type RedisConnection } from "../src/store/redis/connection.ts";
import { hasRedis, useRedisServer } from "./helpers/redis-suite.ts";
import { eventually } from "./helpers/test-proxy.ts";

// A minute a few minutes ahead (10 s into it): its counters must not have expired in Redis yet.
const MINUTE_START = Math.floor(Date.now() / 60_000) * 60_000 + 5 * 60_000;
const T = MINUTE_START + 10_000;
const nextDay = (at: number) => Math.floor(at / 86_400_000) * 86_400_000 + 86_400_000;
const nextMonth = (at: number) => Date.UTC(new Date(at).getUTCFullYear(), new Date(at).getUTCMonth() + 1, 1);
const keys = redisKeys("orp:");
const { redis, cleanups } = useRedisServer({ optional: true });

function clientRecord(name: string, settings: Record<string, unknown>): ClientRecord {
  const parsed = parseClientSettings(settings);
  if (!parsed.ok) throw new Error(parsed.message);
  const edit = addClient(new Map(), name, parsed.settings, `sk-orp-${name}-0123456789abcdef0123456789abcdef`, Date.parse("2026-12-01T00:00:00.000Z"));
  if (!edit.ok) throw new Error(edit.message);
  return edit.client;
}

interface Instance {
  gate: ClientGate;
  connection: RedisConnection;
  counters: SharedClientCounters;
  client(name: string): LiveClient;
}

/** One "instance": its own connection, directory (a copy of the records) and gate. */
async function instance(records: ClientRecord[], now = () => T): Promise<Instance> {
  const connection = createRedisConnection({ url: redis.url, timeoutMs: 250, watchMs: 100, breaker: { threshold: 1, backoffMs: 50, maxBackoffMs: 200 } });
  await connection.ready;
  const directory = createClientDirectory(new Map(records.map((record) => [record.name, structuredClone(record)])));
  const counters = createRedisClientCounters({ connection, keys, directory, now, refreshMs: 60_000 });
  cleanups.push(async () => {
    await counters.stop();
    await connection.close();
  });
  return {
    gate: createClientGate({ directory, now, shared: counters }),
    connection,
    counters,
    client: (name) => directory.byName(name) as LiveClient,
  };
}

const request = { method: "POST", model: "openai/gpt-4o-mini", maxTokens: 100 };
const windowKey = (record: ClientRecord, kind: "minute" | "day" | "month") => keys.clientWindow(record.name, record.createdAt, kind, T);

async function outcome(admitted: Admission | Promise<Admission>): Promise<string> {
  try {
    return (await admitted).name;
  } catch (error) {
    return error instanceof ProxyError ? `${error.status} ${error.code}` : String(error);
  }
}

describe.skipIf(!hasRedis)("client counters shared through Redis", () => {
  test("a client without limits is admitted without waiting on Redis, and its count still reaches Redis", async () => {
    const free = clientRecord("free", {});
    const a = await instance([free]);
    const admitted = a.gate.admit(a.client("free"), request);
    // Not a promise: nothing was awaited, so no Redis round-trip stood before the request.
    expect(admitted).not.toBeInstanceOf(Promise);
    expect((admitted as Admission).name).toBe("free");
    const counted = async () => Number(await redis.cli("HGET", windowKey(free, "minute"), "requests"));
    await eventually(async () => (await counted()) === 1, { timeoutMs: 2_000, what: "the count in Redis" });
    expect(Number(await redis.cli("HGET", windowKey(free, "day"), "requests"))).toBe(1);
    expect(Number(await redis.cli("HGET", windowKey(free, "month"), "requests"))).toBe(1);
  });

  test("two instances sharing Redis enforce one --rpm together, under concurrent requests", async () => {
    const limited = clientRecord("limited", { rpm: 5 });
    const [a, b] = [await instance([limited]), await instance([limited])];
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => outcome((i % 2 === 0 ? a : b).gate.admit((i % 2 === 0 ? a : b).client("limited"), request))));
    expect(results.filter((result) => result === "limited")).toHaveLength(5);
    expect(results.filter((result) => result === "429 client_rate_limited")).toHaveLength(15);
    expect(Number(await redis.cli("HGET", windowKey(limited, "minute"), "requests"))).toBe(5);
  });

  test("the counters name their window and expire a minute after it ends", async () => {
    const limited = clientRecord("limited", { rpd: 10 });
    const a = await instance([limited]);
    expect(await outcome(a.gate.admit(a.client("limited"), request))).toBe("limited");
    expect(windowKey(limited, "minute")).toBe(`orp:client:limited:${limited.createdAt}:minute:${MINUTE_START}`);
    const expiresAt = Number(await redis.cli("EXPIRETIME", windowKey(limited, "minute")));
    expect(expiresAt).toBe((MINUTE_START + 60_000) / 1000 + 60);
    expect(Number(await redis.cli("EXPIRETIME", windowKey(limited, "day")))).toBe(nextDay(T) / 1000 + 60);
    expect(Number(await redis.cli("EXPIRETIME", windowKey(limited, "month")))).toBe(nextMonth(T) / 1000 + 60);
  });

  test("tokens and cost from one instance's answers count against the budget on another", async () => {
    const budgeted = clientRecord("budgeted", { usdPerDay: 0.05, tpm: 1000 });
    const [a, b] = [await instance([budgeted]), await instance([budgeted])];
    expect(await outcome(a.gate.admit(a.client("budgeted"), request))).toBe("budgeted");
    a.counters.settled(a.client("budgeted").record, { tokens: 100, cost: 0 }, T, { tokens: 40, cost: 0.06 }, T);
    const cost = async () => Number(await redis.cli("HGET", windowKey(budgeted, "day"), "cost"));
    await eventually(async () => (await cost()) > 0, { timeoutMs: 2_000, what: "the cost in Redis" });
    expect(await cost()).toBeCloseTo(0.06, 9);
    expect(await outcome(b.gate.admit(b.client("budgeted"), request))).toBe("429 client_budget_exceeded");
    // b's memory now holds the shared counts it was refused on.
    expect(b.client("budgeted").record.usage.day).toMatchObject({ requests: 1, tokens: 40 });
  });

  test("a request that ends in the next minute releases its reservation from the minute it was admitted in and is charged in the one it ended in", async () => {
    const tokens = clientRecord("tokens", { tpm: 1000, usdPerDay: 1 });
    const clock = { now: T };
    const a = await instance([tokens], () => clock.now);
    const admitted = await a.gate.admit(a.client("tokens"), { ...request, body: new ArrayBuffer(400) }); // 100 + 100 tokens held
    const field = (key: string, name: string) => redis.cli("HGET", key, name).then(Number);
    expect(await field(windowKey(tokens, "minute"), "reservedTokens")).toBe(200);
    clock.now = T + 60_000;
    admitted.done({ requestId: "r1", startedAt: T, method: "POST", path: "/chat/completions", model: request.model, stream: false, status: 200, attempts: [], keyId: "k_1", durationMs: 1, aborted: false, usage: { promptTokens: 30, completionTokens: 12, totalTokens: 42, cost: 0.001 } });
    const nextMinute = keys.clientWindow(tokens.name, tokens.createdAt, "minute", clock.now);
    await eventually(async () => (await field(nextMinute, "tokens")) === 42, { timeoutMs: 2_000, what: "the charge in the next minute" });
    expect(await field(windowKey(tokens, "minute"), "reservedTokens")).toBe(0);
    expect(await field(windowKey(tokens, "minute"), "tokens")).toBe(0);
    expect(await field(windowKey(tokens, "day"), "reservedTokens")).toBe(0);
    expect(await field(windowKey(tokens, "day"), "tokens")).toBe(42);
    expect(await field(windowKey(tokens, "day"), "cost")).toBeCloseTo(0.001, 9);
    // A release that finds less held than it releases (a count lost to a timeout) stops at zero.
    a.counters.settled(tokens, { tokens: 500, cost: 0.5 }, T, { tokens: 0, cost: 0 }, clock.now);
    await eventually(async () => (await field(windowKey(tokens, "day"), "reservedCost")) === 0, { timeoutMs: 2_000, what: "the release" });
    expect(await field(windowKey(tokens, "day"), "reservedTokens")).toBe(0);
  });

  test("Redis paused: a limited client is decided and counted from memory (fail open)", async () => {
    const limited = clientRecord("limited", { rpm: 2 });
    const a = await instance([limited]);
    redis.pause();
    try {
      expect(await outcome(a.gate.admit(a.client("limited"), request))).toBe("limited");
      expect(a.connection.degraded).toBe(true);
      expect(await outcome(a.gate.admit(a.client("limited"), request))).toBe("limited");
      expect(await outcome(a.gate.admit(a.client("limited"), request))).toBe("429 client_rate_limited");
    } finally {
      redis.resume();
    }
  });
});
