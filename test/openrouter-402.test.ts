/**
 * 402 and 403 by cause: what a 402 (or a 403 on a spending cap) rests is decided from `reason`,
 * then `limit_source`, `Retry-After` and, only when those say nothing, the message; never from the
 * status alone. No single request can rest more than the key or account its answer names; a 402
 * or a spending cap never counts toward disabling a key; `error.availability` is read before the
 * message. The real
 * proxy runs against the multi-account upstream double (helpers/fake-accounts.ts) on an injected clock.
 */
import { describe, expect, test } from "bun:test";
import type { Config } from "../src/config.ts";
import { FREE, MIDNIGHT, PAID, START, id, orKey, recordOf, restsOf, trail, useAccountsSuite } from "./helpers/accounts-suite.ts";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { budgetReply, inFlightReply, type FakeAccounts } from "./helpers/fake-accounts.ts";
import { tempDir, type TestProxy } from "./helpers/test-proxy.ts";

const [a1, a2, b1, c1] = [orKey("a1"), orKey("a2"), orKey("b1"), orKey("c1")];
const { clock, cleanups, closed, startFake, startProxy } = useAccountsSuite({ config: { ROTATION: "round-robin" }, overrides: { discoverAccounts: true, refreshTickMs: 0 } });

/** The proxy's waits (Retry-After, backoff) pass at once on the injected clock; `waits` notes each. */
function start(upstream: FakeAccounts, keys: string[], config: Partial<Config> = {}, waits?: number[]): Promise<TestProxy> {
  return startProxy(upstream, {
    keys,
    config,
    overrides: {
      sleep: async (ms) => {
        waits?.push(ms);
        clock.now += ms;
      },
    },
  });
}

function ask(proxy: TestProxy, model: string, extra: Record<string, unknown> = {}): Promise<Response> {
  return fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer client" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }], ...extra }),
  });
}

const rawRests = (proxy: TestProxy, account: string) => proxy.pool.accounts().get(account)?.rests ?? [];
const allRests = (proxy: TestProxy) => proxy.pool.accountViews().flatMap((view) => view.rests);

describe("402 by cause", () => {
  test("a 402 in flight with a short Retry-After is retried as it is after the wait; nothing rests beyond the announced time and no failure is counted", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1] },
      { id: "user_B", keys: [b1] },
    ]);
    upstream.scriptOnce({ match: (call) => call.key === a1, reply: () => inFlightReply({ retryAfter: 2 }) });
    const waits: number[] = [];
    const proxy = await start(upstream, [a1, b1], {}, waits);
    const response = await ask(proxy, PAID);
    expect(response.status).toBe(200);
    expect(waits).toEqual([2000]);
    expect(trail(upstream)[0]).toBe("a1 scripted");
    expect(trail(upstream)).toHaveLength(2);
    expect(rawRests(proxy, "user_A")).toEqual([expect.objectContaining({ scope: "account", modelClass: "paid", cause: "in-flight", until: START + 2000 })]);
    expect(restsOf(proxy, "user_A")).toEqual([]); // over: the wait was the whole rest
    expect(recordOf(proxy, a1)).toMatchObject({ failures: 0, consecutiveFailures: 0 });
  });

  test.each([
    ["labelled in_flight_budget_exhausted", true],
    ["labelled only by its Retry-After", false],
  ])("a 402 in flight with a long Retry-After (%s) goes to another account, which rests only until the announced time", async (_name, labelled) => {
    const upstream = startFake([
      { id: "user_A", keys: [a1] },
      { id: "user_B", keys: [b1] },
    ]);
    upstream.scriptOnce({ match: (call) => call.key === a1, reply: () => inFlightReply({ retryAfter: 30, labelled }) });
    const waits: number[] = [];
    const proxy = await start(upstream, [a1, b1], {}, waits);
    expect((await ask(proxy, PAID)).status).toBe(200);
    expect(waits).toEqual([]);
    expect(trail(upstream)).toEqual(["a1 scripted", "b1 served"]);
    expect(restsOf(proxy, "user_A")).toEqual([expect.objectContaining({ modelClass: "paid", cause: "in-flight", until: new Date(START + 30_000).toISOString(), untilCleared: false })]);
    // Free models still use the account; after the announced time paid ones do too.
    expect((await ask(proxy, FREE)).status).toBe(200);
    expect(upstream.chatCalls().at(-1)?.key).toBe(a1);
    clock.now = START + 30_000;
    for (let i = 0; i < 2; i++) expect((await ask(proxy, PAID)).status).toBe(200);
    expect(upstream.chatCalls().slice(-2).map((call) => call.key)).toContain(a1);
    expect(recordOf(proxy, a1)?.consecutiveFailures).toBe(0);
  });

  test.each([
    ["labelled weight_exceeds_budget", "labelled", "weight_exceeds_budget"],
    ["with no reason or limit_source, only the message that it requires more credits, or fewer max_tokens", "bare", undefined],
  ] as const)("a 402 for a request too big for the budget (%s) tries one other account, then the upstream's 402 goes back unchanged, and nothing rests", async (_name, tooBigAnswer, reason) => {
    const upstream = startFake([
      { id: "user_A", keys: [a1, a2], tooBigAnswer },
      { id: "user_B", keys: [b1], tooBigAnswer },
      { id: "user_C", keys: [c1], tooBigAnswer },
    ]);
    const proxy = await start(upstream, [a1, a2, b1, c1]);
    const response = await ask(proxy, PAID, { max_tokens: 100_000_000 });
    expect(response.status).toBe(402);
    const last = upstream.chatCalls().at(-1);
    const body = (await response.json()) as { error: { message: string; metadata?: { reason: string } } };
    expect(body.error.metadata?.reason).toBe(reason);
    expect(body.error.message).toContain("You requested up to 100000000 tokens");
    expect(trail(upstream)).toEqual(["a1 too-big", "b1 too-big"]);
    expect(last?.account).toBe("user_B");
    expect(allRests(proxy)).toEqual([]);
    for (const key of [a1, b1]) expect(recordOf(proxy, key)).toMatchObject({ failures: 0, consecutiveFailures: 0, cooldownUntil: 0 });
  });

  test("a 402 for a request too big on the only account goes back unchanged after that one attempt", async () => {
    const upstream = startFake([{ id: "user_A", keys: [a1, a2] }]);
    const proxy = await start(upstream, [a1, a2]);
    const response = await ask(proxy, PAID, { max_tokens: 100_000_000 });
    expect(response.status).toBe(402);
    expect(trail(upstream)).toEqual(["a1 too-big"]); // the account's other key would say the same
    expect(response.headers.get("retry-after")).toBeNull();
  });

  const monday = (() => {
    const day = Math.floor(START / 86_400_000);
    return (day + (7 - ((day + 3) % 7))) * 86_400_000;
  })();
  test.each([
    [402, "daily", MIDNIGHT],
    [402, "weekly", monday],
    [402, "monthly", Date.UTC(2026, 3, 1)],
    [402, null, START + 3_600_000],
    [403, "daily", MIDNIGHT],
    [403, "weekly", monday],
    [403, null, START + 3_600_000],
  ] as const)("a %d on a key's own limit without resets_at (limit_reset %p) rests that key for paid models until its next reset; the account's other keys keep serving", async (status, reset, until) => {
    const upstream = startFake([
      { id: "user_A", keys: [a1, a2], keyLimits: { [a1]: { limit: 1, reset, used: 1, status } } },
      { id: "user_B", keys: [b1] },
    ]);
    const proxy = await start(upstream, [a1, a2, b1]);
    expect(recordOf(proxy, a1)?.keyLimit).toMatchObject({ limit: 1, remaining: 0, reset });
    expect((await ask(proxy, PAID)).status).toBe(200);
    expect(trail(upstream)).toEqual(["a1 key-limit", "a2 served"]);
    expect(restsOf(proxy, "user_A")).toEqual([expect.objectContaining({ scope: "key", keyId: id(a1), modelClass: "paid", cause: "key-limit", until: new Date(until).toISOString() })]);
    for (let i = 0; i < 4; i++) expect((await ask(proxy, PAID)).status).toBe(200);
    expect(upstream.chatCalls().slice(2).map((call) => call.key.slice(-2))).toEqual(["b1", "a2", "b1", "a2"]);
    // Free models are not spent against the key's cap: the key still takes them.
    expect(proxy.pool.outlook({ model: FREE, exclude: new Set([id(a2), id(b1)]) })).toMatchObject({ ok: true, keyId: id(a1) });
    expect(recordOf(proxy, a1)?.consecutiveFailures).toBe(0);
  });

  test("a 402 on credits rests the account for paid models until a background GET /key (asked every 5 minutes while it rests) shows it can pay again", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1], credits: 0 },
      { id: "user_B", keys: [b1] },
    ]);
    const proxy = await start(upstream, [a1, b1]);
    expect((await ask(proxy, PAID)).status).toBe(200);
    expect(trail(upstream)).toEqual(["a1 credits", "b1 served"]);
    expect(restsOf(proxy, "user_A")).toEqual([expect.objectContaining({ scope: "account", modelClass: "paid", cause: "credits", untilCleared: true })]);
    expect((await ask(proxy, FREE)).status).toBe(200); // free models do not need credits
    expect(upstream.chatCalls().at(-1)?.key).toBe(a1);
    const keyInfoCalls = () => upstream.calls.filter((call) => call.path === "/key" && call.key === a1).length;
    const before = keyInfoCalls();

    clock.now += 4 * 60_000;
    await proxy.refresher?.tick();
    expect(keyInfoCalls()).toBe(before); // 4 minutes after the 402: not yet
    expect(restsOf(proxy, "user_A")).toHaveLength(1);
    upstream.setCredits("user_A", 5);
    clock.now += 60_000;
    await proxy.refresher?.tick();
    expect(keyInfoCalls()).toBe(before + 1);
    expect(restsOf(proxy, "user_A")).toEqual([]);
    for (let i = 0; i < 2; i++) expect((await ask(proxy, PAID)).status).toBe(200);
    expect(upstream.chatCalls().slice(-2)).toContainEqual(expect.objectContaining({ key: a1, kind: "served" }));
  });

  test("a 402 on a free model (a negative balance) rests the account for every model", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1], credits: -1 },
      { id: "user_B", keys: [b1] },
    ]);
    const proxy = await start(upstream, [a1, b1]);
    expect((await ask(proxy, FREE)).status).toBe(200);
    expect(trail(upstream)).toEqual(["a1 negative-balance", "b1 served"]);
    expect(restsOf(proxy, "user_A")).toEqual([expect.objectContaining({ scope: "account", modelClass: "all", cause: "negative-balance", untilCleared: true })]);
    for (const model of [FREE, PAID, FREE]) expect((await ask(proxy, model)).status).toBe(200);
    expect(upstream.chatCalls().slice(2).every((call) => call.key === b1)).toBe(true);
  });

  test("a 402 never counts toward disabling a key; with every account out of credits the proxy answers 402 all_accounts_out_of_credits without a Retry-After", async () => {
    const upstream = startFake([{ id: "user_A", keys: [a1], credits: 1 }]);
    upstream.scriptOnce({ reply: () => inFlightReply({ retryAfter: 1 }) });
    const proxy = await start(upstream, [a1], { FAILURE_THRESHOLD: 1 });
    expect((await ask(proxy, PAID)).status).toBe(200); // in flight, waited 1 s, then served
    expect((await ask(proxy, PAID, { max_tokens: 100_000_000 })).status).toBe(402);
    upstream.scriptOnce({ reply: () => inFlightReply({ retryAfter: 60 }) });
    expect((await ask(proxy, PAID)).status).toBe(402); // in flight for 60 s: nothing else to try
    clock.now += 61_000;
    upstream.setCredits("user_A", 0);
    const last = await ask(proxy, PAID);
    expect(last.status).toBe(402);
    expect(trail(upstream)).toEqual(["a1 scripted", "a1 served", "a1 too-big", "a1 scripted", "a1 credits"]);
    expect(recordOf(proxy, a1)).toMatchObject({ failures: 0, consecutiveFailures: 0 });
    expect(recordOf(proxy, a1)?.disabled).toBeUndefined();
    const refused = await ask(proxy, PAID);
    expect(refused.status).toBe(402);
    expect(refused.headers.get("retry-after")).toBeNull();
    expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("all_accounts_out_of_credits");
    expect(upstream.chatCalls()).toHaveLength(5);
  });

  test.each([
    ["labelled weight_exceeds_budget", "labelled"],
    ["with no reason, as OpenRouter often sends it", "bare"],
  ] as const)("no single request rests more than the key or account its answer names: the 100,000,000 max_tokens request (%s) against several accounts, then ordinary paid requests that all succeed on every account, also after a restart", async (_name, tooBigAnswer) => {
    const folder = await tempDir();
    cleanups.push(folder.cleanup);
    const upstream = startFake([
      { id: "user_A", keys: [a1, a2], tooBigAnswer },
      { id: "user_B", keys: [b1], tooBigAnswer },
      { id: "user_C", keys: [c1], tooBigAnswer },
    ]);
    const first = await startProxy(upstream, { keys: [a1, a2, b1, c1], dir: folder.dir, config: { FAILURE_THRESHOLD: 2 } });
    for (let round = 0; round < 5; round++) {
      for (const stream of [false, true]) expect((await ask(first, PAID, { max_tokens: 100_000_000, stream })).status).toBe(402);
    }
    expect(allRests(first)).toEqual([]);
    const servedAccounts = async (proxy: TestProxy) => {
      const before = upstream.chatCalls().length;
      const ordinary = await Promise.all(Array.from({ length: 30 }, () => ask(proxy, PAID)));
      expect(ordinary.map((response) => response.status)).toEqual(Array(30).fill(200));
      return new Set(upstream.chatCalls().slice(before).filter((call) => call.kind === "served").map((call) => call.account));
    };
    // Every account served some of them: none was put aside by the big request.
    expect(await servedAccounts(first)).toEqual(new Set(["user_A", "user_B", "user_C"]));
    expect(first.pool.records().every((record) => record.consecutiveFailures === 0 && !record.disabled && record.cooldownUntil === 0)).toBe(true);
    await first.stop(0);
    closed.add(first);

    // Nothing was written that a restart would bring back.
    const saved = JSON.parse(await readFile(join(folder.dir, "keys.json"), "utf8")) as { accounts?: Record<string, { rests: unknown[] }> };
    expect(Object.values(saved.accounts ?? {}).flatMap((account) => account.rests)).toEqual([]);
    const second = await startProxy(upstream, { keys: null, dir: folder.dir });
    expect(allRests(second)).toEqual([]);
    expect(await servedAccounts(second)).toEqual(new Set(["user_A", "user_B", "user_C"]));
  });
});

test("a credit rest stays while GET /key says the key's own cap is spent", async () => {
  const upstream = startFake([
    { id: "user_A", keys: [a1], credits: 0, keyLimits: { [a1]: { limit: 1, reset: null, used: 1 } } },
    { id: "user_B", keys: [b1] },
  ]);
  const proxy = await start(upstream, [a1, b1]);
  expect((await ask(proxy, PAID)).status).toBe(200);
  expect(trail(upstream)).toEqual(["a1 credits", "b1 served"]);
  clock.now += 5 * 60_000;
  await proxy.refresher?.tick();
  expect(restsOf(proxy, "user_A")).toEqual([expect.objectContaining({ cause: "credits" })]);
});

describe("spending caps answer 402 or 403: the key rests until resets_at, never counted as a failure", () => {
  const HOUR = 3_600_000;

  test("a 403 \"Budget limit exceeded\" on a key's own cap rests that key only, for paid models, until resets_at; it never disables the key and the account's other keys keep serving", async () => {
    const resetsAt = START + 2 * HOUR;
    const upstream = startFake([
      { id: "user_A", keys: [a1, a2], keyLimits: { [a1]: { limit: 1, reset: "monthly", used: 1, status: 403, resetsAt } } },
      { id: "user_B", keys: [b1] },
    ]);
    const proxy = await start(upstream, [a1, a2, b1], { FAILURE_THRESHOLD: 1 });
    expect((await ask(proxy, PAID)).status).toBe(200);
    expect(trail(upstream)).toEqual(["a1 key-limit", "a2 served"]);
    expect(restsOf(proxy, "user_A")).toEqual([expect.objectContaining({ scope: "key", keyId: id(a1), modelClass: "paid", cause: "key-limit", source: "resets_at", until: new Date(resetsAt).toISOString() })]);
    for (let i = 0; i < 4; i++) expect((await ask(proxy, PAID)).status).toBe(200);
    expect(upstream.chatCalls().slice(2).every((call) => call.key !== a1)).toBe(true);
    expect(recordOf(proxy, a1)).toMatchObject({ failures: 0, consecutiveFailures: 0, cooldownUntil: 0 });
    expect(recordOf(proxy, a1)?.disabled).toBeUndefined();
    // Free models are not spent against the cap.
    expect(proxy.pool.outlook({ model: FREE, exclude: new Set([id(a2), id(b1)]) })).toMatchObject({ ok: true, keyId: id(a1) });
  });

  test.each([
    [403, "openrouter_key_limit", "key-limit"],
    [402, "openrouter_key_limit", "key-limit"],
    [403, "openrouter_workspace_budget", "workspace-budget"],
    [402, "openrouter_workspace_budget", "workspace-budget"],
    [403, "openrouter_guardrail_budget", "guardrail-budget"],
    [402, "openrouter_guardrail_budget", "guardrail-budget"],
  ] as const)("a %d with limit_source %s rests only the key that met it (the proxy does not know which keys share a workspace) until resets_at; the client gets another key's answer", async (status, limitSource, cause) => {
    const resetsAt = START + 5 * HOUR;
    const upstream = startFake([
      { id: "user_A", keys: [a1, a2] },
      { id: "user_B", keys: [b1] },
    ]);
    upstream.scriptOnce({ match: (call) => call.key === a1, reply: () => budgetReply({ limitSource, resetsAt, status }) });
    const proxy = await start(upstream, [a1, a2, b1], { FAILURE_THRESHOLD: 1 });
    const response = await ask(proxy, PAID);
    expect(response.status).toBe(200);
    expect(trail(upstream)).toEqual(["a1 scripted", "a2 served"]);
    expect(allRests(proxy)).toEqual([expect.objectContaining({ scope: "key", keyId: id(a1), modelClass: "paid", cause, until: new Date(resetsAt).toISOString() })]);
    expect(recordOf(proxy, a1)).toMatchObject({ failures: 0, consecutiveFailures: 0 });
    expect(recordOf(proxy, a1)?.disabled).toBeUndefined();
  });

  test("when every key rests on a spending cap the client gets 402 all_keys_over_budget (insufficient_quota) naming the earliest resets_at, with a Retry-After to it; at that time the key serves again", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1], keyLimits: { [a1]: { limit: 1, reset: "monthly", used: 1, status: 403, resetsAt: START + 2 * HOUR } } },
      { id: "user_B", keys: [b1] },
    ]);
    upstream.scriptOnce({ match: (call) => call.key === b1, reply: () => budgetReply({ limitSource: "openrouter_workspace_budget", resetsAt: START + HOUR }) });
    const proxy = await start(upstream, [a1, b1]);
    for (const attempt of [1, 2]) {
      const refused = await ask(proxy, PAID);
      expect(refused.status).toBe(402);
      expect(refused.headers.get("retry-after")).toBe("3600");
      const body = (await refused.json()) as { error: { code: string; type: string; message: string } };
      expect(body.error).toMatchObject({ code: "all_keys_over_budget", type: "insufficient_quota" });
      expect(body.error.message).toContain(new Date(START + HOUR).toISOString());
      // The second request is answered from what the pool knows: nothing goes upstream.
      expect(upstream.chatCalls()).toHaveLength(2);
      expect(attempt).toBeGreaterThan(0);
    }
    expect(trail(upstream)).toEqual(["a1 key-limit", "b1 scripted"]);
    expect((await ask(proxy, FREE)).status).toBe(200); // free models are not held by a spending cap
    clock.now = START + HOUR;
    expect((await ask(proxy, PAID)).status).toBe(200);
    expect(upstream.chatCalls().at(-1)).toMatchObject({ key: b1, kind: "served" });
    expect(proxy.pool.records().every((record) => record.consecutiveFailures === 0 && !record.disabled)).toBe(true);
  });
});

test("a spending cap that announced no reset rests its key for an hour, and all_keys_over_budget then carries no Retry-After: the hour is the proxy's guess", async () => {
  const upstream = startFake([{ id: "user_A", keys: [a1] }]);
  upstream.scriptOnce({ reply: () => budgetReply({ limitSource: "openrouter_guardrail_budget" }) });
  const proxy = await start(upstream, [a1]);
  const refused = await ask(proxy, PAID);
  expect(refused.status).toBe(402);
  expect(refused.headers.get("retry-after")).toBeNull();
  const body = (await refused.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe("all_keys_over_budget");
  expect(body.error.message).toContain(new Date(START + 3_600_000).toISOString());
  expect(restsOf(proxy, "user_A")).toEqual([expect.objectContaining({ scope: "key", cause: "guardrail-budget", source: "default" })]);
});

describe("error.availability is read before the message", () => {
  const unavailable = (status: number, code: string, message: string) => () =>
    Response.json({ error: { code: status, message, availability: { code, fallback_models: [PAID] }, error_type: "provider_overloaded" } }, { status });

  test.each([
    [404, "no_endpoints"],
    [503, "no_endpoints"],
    [404, "free_variant_ended"],
    [404, "model_deprecated"],
    [403, "region_restricted"],
  ] as const)("a %d with availability %s goes back to the client as it came after one attempt; nothing rests and no key is marked", async (status, code) => {
    const upstream = startFake([
      { id: "user_A", keys: [a1] },
      { id: "user_B", keys: [b1] },
    ]);
    upstream.scriptOnce({ reply: unavailable(status, code, "No endpoints found matching your data policy") });
    const proxy = await start(upstream, [a1, b1]);
    const response = await ask(proxy, FREE);
    expect(response.status).toBe(status);
    expect(((await response.json()) as { error: { availability: { code: string } } }).error.availability.code).toBe(code);
    expect(trail(upstream)).toEqual(["a1 scripted"]);
    expect(allRests(proxy)).toEqual([]);
    expect(recordOf(proxy, a1)).toMatchObject({ failures: 0, consecutiveFailures: 0, cooldownUntil: 0 });
  });

  test("availability privacy_restricted rests that model on that account and another account serves, whatever the message says", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1] },
      { id: "user_B", keys: [b1] },
    ]);
    upstream.scriptOnce({ match: (call) => call.key === a1, reply: unavailable(404, "privacy_restricted", "Not available") });
    const proxy = await start(upstream, [a1, b1]);
    expect((await ask(proxy, FREE)).status).toBe(200);
    expect(trail(upstream)).toEqual(["a1 scripted", "b1 served"]);
    expect(restsOf(proxy, "user_A")).toEqual([expect.objectContaining({ scope: "model", model: FREE, cause: "privacy" })]);
  });

  test("availability capacity_exhausted is the shared-capacity wait: no key is blamed, one short wait, then OpenRouter's answer with a Retry-After from its retry_after", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1] },
      { id: "user_B", keys: [b1] },
    ]);
    const busy = () => Response.json({ error: { code: 429, message: "Model is busy", availability: { code: "capacity_exhausted", retry_after: 30 } } }, { status: 429 });
    upstream.scriptOnce({ reply: busy }, { reply: busy });
    const waits: number[] = [];
    const proxy = await start(upstream, [a1, b1], {}, waits);
    const response = await ask(proxy, FREE);
    expect(response.status).toBe(429);
    expect(waits).toEqual([1000]);
    expect(Number(response.headers.get("retry-after"))).toBeGreaterThanOrEqual(29);
    expect(upstream.chatCalls()).toHaveLength(2);
    expect(allRests(proxy)).toEqual([]);
    expect(proxy.pool.records().every((record) => record.cooldownUntil === 0 && record.failures === 0)).toBe(true);
  });
});
