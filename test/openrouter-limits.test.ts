/**
 * OpenRouter's limits as they really are: free-model limits belong to the account (several keys
 * share one quota), a daily free-model limit does not stop paid models, a shared-capacity 429
 * is nobody's fault, a provider's 429 is about one model, a 402 about credits; and errors can
 * hide inside a 200. Each test runs the real proxy against a mock upstream with accounts
 * (helpers/fake-accounts.ts) on an injected clock.
 */
import { describe, expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { listKeysCommand } from "../src/cli/key-commands.ts";
import { defaultConfig, type Config } from "../src/config.ts";
import { FREE, MIDNIGHT, OTHER_FREE, PAID, START, adminToken, id, orKey, recordOf, restsOf, trail, useAccountsSuite } from "./helpers/accounts-suite.ts";
import { contentChunk, errorChunk, eventStream, type FakeAccounts } from "./helpers/fake-accounts.ts";
import { controlledStream } from "./helpers/fake-openrouter.ts";
import { tempDir, type TestProxy } from "./helpers/test-proxy.ts";

const [a1, a2, b1] = [orKey("a1"), orKey("a2"), orKey("b1")];
// ROTATION stays the default (sticky); start returns before GET /key is answered (tests that need it await proxy.discovery).
const { clock, cleanups, closed, startFake, startProxy } = useAccountsSuite({ awaitDiscovery: false });

interface StartOptions {
  keys?: string[] | null;
  config?: Partial<Config>;
  discover?: boolean;
  dir?: string;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
}

function start(upstream: FakeAccounts, { keys = [a1, a2, b1], config = {}, discover = false, dir, sleep }: StartOptions = {}): Promise<TestProxy> {
  return startProxy(upstream, { keys, config, ...(dir ? { dir } : {}), overrides: { discoverAccounts: discover, ...(sleep ? { sleep } : {}) } });
}

function ask(proxy: TestProxy, model: string, { stream = false }: { stream?: boolean } = {}): Promise<Response> {
  return fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer client" },
    body: JSON.stringify({ model, ...(stream ? { stream: true } : {}), messages: [{ role: "user", content: "hi" }] }),
  });
}

interface ErrorBody {
  error: { message: string; type: string; code: string };
}

describe("which keys share an account", () => {
  test("accounts are learned from GET /key at startup in the background: the first request does not wait, and GET /admin/keys shows them", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1, a2] },
      { id: "user_B", keys: [b1] },
    ]);
    let open: () => void = () => {};
    upstream.holdKeyInfo(new Promise<void>((resolve) => (open = resolve)));
    const proxy = await start(upstream, { discover: true });
    let discovered = false;
    void proxy.discovery.then(() => (discovered = true));

    const first = await ask(proxy, FREE);
    expect(first.status).toBe(200);
    expect(discovered).toBe(false); // GET /key has not even been answered yet

    open();
    await proxy.discovery;
    expect(proxy.pool.records().map((record) => record.account)).toEqual(["user_A", "user_A", "user_B"]);
    const admin = await fetch(`${proxy.url}/admin/keys`, { headers: { authorization: `Bearer ${adminToken}` } });
    const body = (await admin.json()) as {
      keys: Array<{ id: string; account: string | null }>;
      accounts: Array<{ id: string; keyIds: string[]; freeRequestsToday: number; freeLimit: number | null }>;
    };
    expect(body.keys.map((key) => [key.id, key.account])).toEqual([
      [id(a1), "user_A"],
      [id(a2), "user_A"],
      [id(b1), "user_B"],
    ]);
    // The request served before GET /key answered counts once, not twice.
    expect(body.accounts).toEqual([
      expect.objectContaining({ id: "user_A", keyIds: [id(a1), id(a2)], freeRequestsToday: 1, freeLimit: 50 }),
      expect.objectContaining({ id: "user_B", keyIds: [id(b1)], freeRequestsToday: 0, freeLimit: 50 }),
    ]);
  });

  test("a key's account is learned from the user_id of a 429 body", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1, a2], freeUsedToday: 50 },
      { id: "user_B", keys: [b1] },
    ]);
    const proxy = await start(upstream);
    expect((await ask(proxy, FREE)).status).toBe(200);
    // Without GET /key nothing says a2 shares a1's account until its own 429 names it.
    expect(trail(upstream)).toEqual(["a1 free-per-day", "a2 free-per-day", "b1 served"]);
    expect([a1, a2, b1].map((key) => recordOf(proxy, key)?.account)).toEqual(["user_A", "user_A", undefined]); // a 200 names nobody
    expect(proxy.pool.accountViews().find((view) => view.id === "user_A")?.keyIds).toEqual([id(a1), id(a2)]);
    expect((await ask(proxy, FREE)).status).toBe(200);
    expect(trail(upstream).slice(3)).toEqual(["b1 served"]);
  });
});

describe("rests scoped to what the limit covers", () => {
  test("two keys of one account rest together: a per-minute 429 on one sends free requests past both until the announced reset", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1, a2], freePerMinute: 2 },
      { id: "user_B", keys: [b1] },
    ]);
    const proxy = await start(upstream, { discover: true });
    await proxy.discovery;
    for (let i = 0; i < 5; i++) expect((await ask(proxy, FREE)).status).toBe(200);
    expect(trail(upstream)).toEqual(["a1 served", "a1 served", "a1 free-per-min", "b1 served", "b1 served", "b1 served"]);
    const nextMinute = Math.floor(START / 60_000) * 60_000 + 60_000;
    expect(restsOf(proxy, "user_A")).toEqual([
      expect.objectContaining({ scope: "account", modelClass: "free", until: new Date(nextMinute).toISOString(), source: "header" }),
    ]);
    // Neither key is cooling on its own: the rest is the account's, for free models only.
    for (const key of [a1, a2]) expect(recordOf(proxy, key)?.cooldownUntil).toBe(0);
    expect(upstream.score()).toEqual({ firstLearned: 1, wasted: 0 });
  });

  test("a key resting for free models after the daily limit still serves paid models", async () => {
    const upstream = startFake([{ id: "user_A", keys: [a1, a2], freeUsedToday: 50 }]);
    const proxy = await start(upstream, { keys: [a1, a2] });
    const free = await ask(proxy, FREE);
    expect(free.status).toBe(429);
    const body = (await free.json()) as ErrorBody;
    expect(body.error.code).toBe("free_model_limit_used_up");
    expect(body.error.message).toContain("used up on all 1 account");
    expect(Number(free.headers.get("retry-after"))).toBe((MIDNIGHT - START) / 1000);
    // Without GET /key each key's 429 is what names its account.
    expect(trail(upstream)).toEqual(["a1 free-per-day", "a2 free-per-day"]);
    expect(restsOf(proxy, "user_A")).toEqual([expect.objectContaining({ scope: "account", modelClass: "free", until: new Date(MIDNIGHT).toISOString() })]);

    const paid = await ask(proxy, PAID);
    expect(paid.status).toBe(200);
    expect(upstream.chatCalls().at(-1)).toMatchObject({ account: "user_A", model: PAID, kind: "served" });
    // Free requests stay off the account until midnight: answered at once, the upstream not asked.
    expect((await ask(proxy, FREE)).status).toBe(429);
    expect(upstream.chatCalls()).toHaveLength(3);
  });

  test("a 402 rests the account for paid models only: paid requests go elsewhere, free ones may still use it", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1], credits: 0 },
      { id: "user_B", keys: [b1] },
    ]);
    const proxy = await start(upstream, { keys: [a1, b1], discover: true, config: { ROTATION: "least-recently-used" } });
    await proxy.discovery;
    expect((await ask(proxy, PAID)).status).toBe(200);
    // Least-recently-used would pick a1 next; its account rests for paid models, so b1 again.
    expect((await ask(proxy, PAID)).status).toBe(200);
    expect((await ask(proxy, FREE)).status).toBe(200);
    expect(trail(upstream)).toEqual(["a1 credits", "b1 served", "b1 served", "a1 served"]);
    expect(restsOf(proxy, "user_A")).toEqual([expect.objectContaining({ scope: "account", modelClass: "paid" })]);
    expect(recordOf(proxy, a1)?.consecutiveFailures).toBe(0); // the free success cleared it
  });

  test("a provider's 429 rests that model on the account, not the key: the key still serves other models", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1] },
      { id: "user_B", keys: [b1] },
    ]);
    upstream.providerLimit(FREE, START + 30_000, ["user_A"]);
    const proxy = await start(upstream, { keys: [a1, b1], discover: true, config: { ROTATION: "least-recently-used" } });
    await proxy.discovery;
    expect((await ask(proxy, FREE)).status).toBe(200);
    // Least-recently-used would pick a1 for each: for FREE it rests, for another model it serves.
    expect((await ask(proxy, FREE)).status).toBe(200);
    expect((await ask(proxy, OTHER_FREE)).status).toBe(200);
    expect(trail(upstream)).toEqual(["a1 provider", "b1 served", "b1 served", "a1 served"]);
    expect(restsOf(proxy, "user_A")).toEqual([
      expect.objectContaining({ scope: "model", model: FREE, until: new Date(START + 30_000).toISOString(), source: "retry-after" }),
    ]);
    expect(recordOf(proxy, a1)).toMatchObject({ cooldownUntil: 0, consecutiveFailures: 0 });
  });

  test("a shared-capacity 429 blames no key: one short wait, one retry, then the upstream's 429 with Retry-After", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1] },
      { id: "user_B", keys: [b1] },
    ]);
    const until = START + 20_000;
    upstream.sharedCapacity(FREE, until);
    const waits: number[] = [];
    const proxy = await start(upstream, {
      keys: [a1, b1],
      sleep: async (ms) => {
        waits.push(ms);
        clock.now += ms;
      },
    });
    const response = await ask(proxy, FREE);
    expect(response.status).toBe(429);
    expect(((await response.json()) as ErrorBody).error.message).toContain("High demand for meta-llama/llama-3.3-70b-instruct:free");
    expect(Number(response.headers.get("retry-after"))).toBe(Math.ceil((until - clock.now) / 1000));
    expect(trail(upstream)).toEqual(["a1 shared-capacity", "b1 shared-capacity"]);
    expect(waits).toHaveLength(1);
    expect(waits[0]).toBeLessThanOrEqual(1000);
    for (const record of proxy.pool.records()) expect(record).toMatchObject({ cooldownUntil: 0, consecutiveFailures: 0 });
    for (const view of proxy.pool.accountViews()) expect(view.rests).toEqual([]);
    // Nothing rests: another model goes straight through.
    expect((await ask(proxy, OTHER_FREE)).status).toBe(200);
    expect(trail(upstream).slice(2)).toEqual(["b1 served"]);
  });
});

describe("errors inside a 200", () => {
  const perMinuteChunk = errorChunk(429, "Rate limit exceeded: free-models-per-min.", {
    headers: { "X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": String(START + 60_000) },
    provider_name: null,
  });
  const providerFailureChunk = errorChunk(502, "Provider returned error", { provider_name: "Chutes", raw: "upstream connect error" });

  test.each([
    ["a per-minute 429", perMinuteChunk],
    ["a provider failure", providerFailureChunk],
  ])("an error event before the first token (%s) is retried on another key, invisibly", async (_name, chunk) => {
    const upstream = startFake([
      { id: "user_A", keys: [a1] },
      { id: "user_B", keys: [b1] },
    ]);
    upstream.scriptOnce({ match: (call) => call.key === a1, reply: () => eventStream(`: OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n${chunk}`) });
    const proxy = await start(upstream, { keys: [a1, b1] });
    const response = await ask(proxy, FREE, { stream: true });
    expect(response.status).toBe(200);
    expect(response.headers.get("x-proxy-key-id")).toBe(id(b1));
    expect(response.headers.get("x-proxy-attempts")).toBe("2");
    const text = await response.text();
    expect(text).toContain("hello from x-b1");
    expect(text).not.toContain('"error"');
    expect(text.endsWith("data: [DONE]\n\n")).toBe(true);
    expect(trail(upstream)).toEqual(["a1 scripted", "b1 served"]);
  });

  test("an error event after the first token passes through untouched and nothing is replayed", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1] },
      { id: "user_B", keys: [b1] },
    ]);
    const sent = `: OPENROUTER PROCESSING\n\n${contentChunk("Hel")}${errorChunk(502, "Provider returned error", { provider_name: "Chutes" })}`;
    upstream.scriptOnce({ match: (call) => call.key === a1, reply: () => eventStream(sent) });
    const proxy = await start(upstream, { keys: [a1, b1] });
    const response = await ask(proxy, FREE, { stream: true });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(sent);
    expect(trail(upstream)).toEqual(["a1 scripted"]);
  });

  test("a non-streamed 200 carrying an error is handled like that status: the account rests and another key answers", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1, a2] },
      { id: "user_B", keys: [b1] },
    ]);
    const reset = START + 45_000;
    upstream.scriptOnce({
      match: (call) => call.key === a1,
      reply: () =>
        Response.json({
          error: { code: 429, message: "Rate limit exceeded: free-models-per-min.", metadata: { headers: { "X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": String(reset) } } },
          user_id: "user_A",
        }),
    });
    const proxy = await start(upstream, { discover: true });
    await proxy.discovery;
    const response = await ask(proxy, FREE);
    expect(response.status).toBe(200);
    expect(((await response.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]?.message.content).toBe("hello from x-b1");
    expect(recordOf(proxy, a1)?.account).toBe("user_A");
    expect(restsOf(proxy, "user_A")).toEqual([expect.objectContaining({ modelClass: "free", until: new Date(reset).toISOString(), source: "body" })]);
  });

  test("when STREAM_COMMIT_SECONDS pass with only keep-alives, the stream commits: the keep-alives reach the client, then content flows", async () => {
    const upstream = startFake([{ id: "user_A", keys: [a1] }]);
    const controlled = controlledStream();
    upstream.scriptOnce({ reply: () => controlled.response });
    const proxy = await start(upstream, { keys: [a1], config: { STREAM_COMMIT_SECONDS: 0.2 } });
    controlled.send(": OPENROUTER PROCESSING\n\n");
    const sentAt = performance.now();
    const response = await ask(proxy, FREE, { stream: true });
    // The status arrived while the upstream had sent nothing but a keep-alive: the commit point passed.
    expect(performance.now() - sentAt).toBeGreaterThanOrEqual(150);
    expect(response.status).toBe(200);
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    const readUntil = async (marker: string) => {
      for (let reads = 0; !text.includes(marker); reads++) {
        if (reads > 100) throw new Error(`no ${marker} in ${text}`);
        const { done, value } = await reader.read();
        if (done) throw new Error(`stream ended before ${marker}`);
        text += decoder.decode(value, { stream: true });
      }
    };
    await readUntil(": OPENROUTER PROCESSING\n\n");
    controlled.send(": OPENROUTER PROCESSING\n\n");
    controlled.send(contentChunk("late"));
    await readUntil('"late"');
    controlled.send("data: [DONE]\n\n");
    controlled.end();
    await readUntil("[DONE]");
    expect((await reader.read()).done).toBe(true);
    expect(text).toBe(`: OPENROUTER PROCESSING\n\n: OPENROUTER PROCESSING\n\n${contentChunk("late")}data: [DONE]\n\n`);
    expect(trail(upstream)).toEqual(["a1 scripted"]);
  });
});

describe("the daily free-model budget", () => {
  test("once the limits are known, free requests go to accounts with quota left without a single 429, and then the proxy answers 429 at once", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1, a2], freeUsedToday: 48 },
      { id: "user_B", keys: [b1], freeUsedToday: 49 },
    ]);
    const proxy = await start(upstream, { discover: true });
    await proxy.discovery;
    for (let i = 0; i < 3; i++) expect((await ask(proxy, FREE)).status).toBe(200);
    expect(trail(upstream)).toEqual(["a1 served", "a1 served", "b1 served"]);

    const refused = await ask(proxy, FREE);
    expect(refused.status).toBe(429);
    const body = (await refused.json()) as ErrorBody;
    expect(body.error).toMatchObject({ type: "rate_limit_error", code: "free_model_limit_used_up" });
    expect(body.error.message).toContain("the daily free-model limit is used up on all 2 accounts");
    expect(body.error.message).toContain(new Date(MIDNIGHT).toISOString());
    expect(Number(refused.headers.get("retry-after"))).toBe((MIDNIGHT - START) / 1000);
    expect(upstream.chatCalls()).toHaveLength(3); // answered without asking the upstream
    expect(upstream.score()).toEqual({ firstLearned: 0, wasted: 0 });

    expect((await ask(proxy, PAID)).status).toBe(200);
    expect(proxy.pool.accountViews().map((view) => [view.id, view.freeRequestsToday, view.freeLimit])).toEqual([
      ["user_A", 50, 50],
      ["user_B", 50, 50],
    ]);

    // A new UTC day brings the budget back.
    clock.now = MIDNIGHT + 1000;
    expect((await ask(proxy, FREE)).status).toBe(200);
  });

  test("when the daily limits are learned from 429s, the answer says the free limit is used up on every account, and the next one is answered at once", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1], freeUsedToday: 50 },
      { id: "user_B", keys: [b1], freeUsedToday: 50 },
    ]);
    const proxy = await start(upstream, { keys: [a1, b1] });
    const first = await ask(proxy, FREE);
    expect(first.status).toBe(429);
    expect(((await first.json()) as ErrorBody).error.message).toContain("used up on all 2 accounts");
    expect(trail(upstream)).toEqual(["a1 free-per-day", "b1 free-per-day"]);
    const second = await ask(proxy, FREE);
    expect(second.status).toBe(429);
    expect(((await second.json()) as ErrorBody).error.code).toBe("free_model_limit_used_up");
    expect(upstream.chatCalls()).toHaveLength(2);
    expect(upstream.score()).toEqual({ firstLearned: 2, wasted: 0 });
  });
});

describe("state across a restart", () => {
  test("account rests and the free budget are kept under the keys file's top-level accounts and come back after a restart", async () => {
    const folder = await tempDir();
    cleanups.push(folder.cleanup);
    const upstream = startFake([
      { id: "user_A", keys: [a1, a2], freePerMinute: 1, freeUsedToday: 10 },
      { id: "user_B", keys: [b1] },
    ]);
    const first = await start(upstream, { dir: folder.dir, discover: true });
    await first.discovery;
    expect((await ask(first, FREE)).status).toBe(200);
    expect((await ask(first, FREE)).status).toBe(200); // a1's per-minute 429, then b1
    expect(trail(upstream)).toEqual(["a1 served", "a1 free-per-min", "b1 served"]);
    await first.stop(0);
    closed.add(first);

    const nextMinute = Math.floor(START / 60_000) * 60_000 + 60_000;
    const saved = JSON.parse(await readFile(join(folder.dir, "keys.json"), "utf8")) as {
      keys: Array<{ account?: string }>;
      accounts: Record<string, { rests: Array<{ modelClass: string; until: string }>; free?: { day: string; used: number; limit?: number } }>;
    };
    expect(saved.keys.map((entry) => entry.account)).toEqual(["user_A", "user_A", "user_B"]);
    expect(saved.accounts.user_A?.rests).toEqual([expect.objectContaining({ scope: "account", modelClass: "free", until: new Date(nextMinute).toISOString() })]);
    expect(saved.accounts.user_A?.free).toEqual({ day: "2026-03-01", used: 11, limit: 50 });
    expect(saved.accounts.user_B?.free).toEqual({ day: "2026-03-01", used: 1, limit: 50 });

    // Restarted from the file alone (no GET /key this time): A still rests, its budget still counts.
    const second = await start(upstream, { dir: folder.dir, keys: null });
    expect(second.pool.accountViews().map((view) => [view.id, view.freeRequestsToday, view.freeLimit, view.rests.length])).toEqual([
      ["user_A", 11, 50, 1],
      ["user_B", 1, 50, 0],
    ]);
    expect((await ask(second, FREE)).status).toBe(200);
    expect(upstream.chatCalls().at(-1)?.key).toBe(b1);

    // list-keys reads the same file and shows each key's account and the account's rest.
    const lines: string[] = [];
    await second.sync.flush();
    const code = await listKeysCommand(
      { config: defaultConfig({ KEYS_FILE: join(folder.dir, "keys.json") }), io: { out: (line) => void lines.push(line), err: (line) => void lines.push(line) }, now: () => clock.now },
      { json: false },
    );
    expect(code).toBe(0);
    const printed = lines.join("\n");
    expect(printed).toContain("user_A");
    expect(printed).toMatch(/user_A\s+k_\w+ k_\w+\s+11 of 50\s+free models until/);
  });
});
