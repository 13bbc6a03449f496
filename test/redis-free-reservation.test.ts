/**
 * Free-model reservation with REDIS_URL, seen from one real proxy in this process: the account's
 * day in Redis is used up by others (this test takes the slots itself, as other instances would),
 * while this proxy's own count is still behind. The reservation is part of choosing a key: a
 * refusal rests the account and another key is chosen; nothing is sent upstream for the refused
 * key, and nothing shaped like an upstream answer is made up for it.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { keyIdOf } from "../src/domain/key-identity.ts";
import type { ProxyEventMap } from "../src/domain/events.ts";
import type { RequestRecord } from "../src/domain/request-record.ts";
import { nextUtcMidnight } from "../src/domain/time-text.ts";
import { utcDayOf } from "../src/keys/account-state.ts";
import { redisKeys } from "../src/store/redis/redis-keys.ts";
import { sharedStateScripts } from "../src/store/redis/scripts.ts";
import { startFakeAccounts, type FakeAccounts } from "./helpers/fake-accounts.ts";
import { useRedisServer } from "./helpers/redis-suite.ts";
import { startTestProxy, type TestProxy } from "./helpers/test-proxy.ts";

const PREFIX = "orp-reserve:";
const FREE = "meta-llama/llama-3.3-70b-instruct:free";
const a1 = `sk-or-v1-${"x".repeat(50)}-a1`;
const b1 = `sk-or-v1-${"x".repeat(50)}-b1`;

const { redis, connection, cleanups } = useRedisServer({ connection: true });
const scripts = sharedStateScripts(connection, redisKeys(PREFIX));

let upstream: FakeAccounts | undefined;
let proxy: TestProxy | undefined;
afterEach(async () => {
  await proxy?.close();
  await upstream?.stop();
  proxy = undefined;
  upstream = undefined;
});

interface Started {
  proxy: TestProxy;
  /** The key (and its account) the pool hands out first for a free model, and the other one. */
  first: { keyId: string; account: string };
  other: { keyId: string; account: string };
}

/**
 * A proxy on Redis whose pool knows the accounts (from the keys file); Redis knows each account's
 * daily free `limit`. The pool reads Redis's counts at a resync (the first subscribe, then every
 * 5 s) and otherwise counts only what it sends itself: what others use after it started, it does
 * not know of until the next resync, and each test here is over long before that.
 */
async function start(limit: number): Promise<Started> {
  for (const account of ["user_A", "user_B"]) for (const write of scripts.learnFreeLimit(account, today(), limit)) await connection.write(write);
  upstream = startFakeAccounts({ accounts: [{ id: "user_A", keys: [a1] }, { id: "user_B", keys: [b1] }] });
  proxy = await startTestProxy({
    upstream: upstream.url,
    keysFileText: JSON.stringify({ keys: [{ key: a1, label: "a1", account: "user_A" }, { key: b1, label: "b1", account: "user_B" }] }),
    // sticky: the same key first whenever it may serve (which one depends on the list's order in Redis).
    config: { REDIS_URL: redis.url, REDIS_PREFIX: PREFIX, ROTATION: "sticky" },
  });
  const chosen = proxy.pool.outlook({ model: FREE });
  if (!chosen.ok) throw new Error(`no key for ${FREE}: ${chosen.reason}`);
  const a = { keyId: keyIdOf(a1), account: "user_A" };
  const b = { keyId: keyIdOf(b1), account: "user_B" };
  return chosen.keyId === a.keyId ? { proxy, first: a, other: b } : { proxy, first: b, other: a };
}

const today = () => utcDayOf(Date.now());

/** Other instances take `count` of the account's slots for today. */
async function usedElsewhere(account: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const slot = await scripts.reserveFreeSlot({ account, day: today() });
    expect(slot.ok && slot.value.granted).toBe(true);
  }
}

function watch(started: TestProxy): { rests: Array<ProxyEventMap["account.rest"]>; records: RequestRecord[] } {
  const rests: Array<ProxyEventMap["account.rest"]> = [];
  const records: RequestRecord[] = [];
  cleanups.push(async () => {
    offRest();
    offDone();
  });
  const offRest = started.events.on("account.rest", (rest) => void rests.push(rest));
  const offDone = started.events.on("request.done", (record) => void records.push(structuredClone(record)));
  return { rests, records };
}

const ask = (started: TestProxy, model: string): Promise<Response> =>
  fetch(`${started.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] }),
  });

describe("free-model reservation with REDIS_URL", () => {
  test("a free-model refusal from reserve is an outcome (no fake upstream answer): the account rests and another account's key serves", async () => {
    const { proxy, first, other } = await start(2);
    await usedElsewhere(first.account, 2);
    const { rests, records } = watch(proxy);
    const response = await ask(proxy, FREE);
    expect(response.status).toBe(200);
    await response.text();
    expect(response.headers.get("x-proxy-key-id")).toBe(other.keyId);
    // Only the key that was sent counts as an attempt: the refusal was part of choosing it.
    expect(response.headers.get("x-proxy-attempts")).toBe("1");
    expect(upstream?.chatCalls().map((call) => call.account)).toEqual([other.account]);
    expect(records).toHaveLength(1);
    expect(records[0]?.attempts.map(({ keyId, status, outcome }) => ({ keyId, status, outcome }))).toEqual([{ keyId: other.keyId, status: 200, outcome: "ok" }]);
    // The refusal is told as what it is: the account's free models rest until the day's reset, because the reservation said so.
    expect(rests).toEqual([
      expect.objectContaining({ account: first.account, modelClass: "free", cause: "free-per-day", until: nextUtcMidnight(Date.now()), reason: expect.stringContaining("free-model slot refused") }),
    ]);
    expect(proxy.pool.accounts().get(first.account)?.free).toMatchObject({ limit: 2, used: 2 });
    // The next free request goes straight to the other account: the first is not asked again today.
    const next = await ask(proxy, FREE);
    expect(next.status).toBe(200);
    expect(upstream?.chatCalls().map((call) => call.account)).toEqual([other.account, other.account]);
    expect(rests).toHaveLength(1);
  });

  test("when every account's day is used up elsewhere, the proxy's own 429 says so and the upstream is sent nothing", async () => {
    const { proxy } = await start(1);
    await usedElsewhere("user_A", 1);
    await usedElsewhere("user_B", 1);
    const { rests, records } = watch(proxy);
    const response = await ask(proxy, FREE);
    expect(response.status).toBe(429);
    const body = (await response.json()) as { error: { code: string } };
    expect(body.error.code).toBe("free_model_limit_used_up");
    expect(Number(response.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(upstream?.chatCalls()).toEqual([]);
    expect(records[0]?.attempts).toEqual([]);
    expect(rests.map((rest) => rest.account).sort()).toEqual(["user_A", "user_B"]);
  });

  test("a paid request is not reserved: with the first account's free day used up it is served on the first key", async () => {
    const { proxy, first } = await start(1);
    await usedElsewhere(first.account, 1);
    const { rests } = watch(proxy);
    const response = await ask(proxy, "openai/gpt-4o-mini");
    expect(response.status).toBe(200);
    expect(response.headers.get("x-proxy-key-id")).toBe(first.keyId);
    expect(rests).toEqual([]);
  });
});
