/**
 * Issue 12, rules 6 and 7: a request's record keeps every attempt that reached the upstream
 * (a client leaving during the stream-commit hold included) and OpenRouter's generation id; the
 * proxy's own 429s carry a Retry-After from a known reset, and an upstream 429 that announced no
 * reset is passed back without one being invented.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { Config } from "../src/config.ts";
import { keyIdOf } from "../src/domain/key-identity.ts";
import type { RequestRecord } from "../src/domain/request-record.ts";
import { contentChunk, startFakeAccounts, type FakeAccountSpec, type FakeAccounts } from "./helpers/fake-accounts.ts";
import { controlledStream } from "./helpers/fake-openrouter.ts";
import { readLog } from "./helpers/log-files.ts";
import { startTestProxy, type TestProxy } from "./helpers/test-proxy.ts";
import { generationIdOf } from "../src/upstream/record-filling.ts";

const orKey = (name: string) => `sk-or-v1-${"x".repeat(50)}-${name}`;
const [a1, b1] = [orKey("a1"), orKey("b1")];
const FREE = "meta-llama/llama-3.3-70b-instruct:free";
const PAID = "openai/gpt-4o-mini";
const adminToken = "admin-token-for-tests";
const START = Date.UTC(2026, 2, 1, 10, 0, 0);
let fake: FakeAccounts | undefined;
const cleanups: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await fake?.stop();
  fake = undefined;
});

async function start(config: Partial<Config> = {}, accounts: FakeAccountSpec[] = [{ id: "user_A", keys: [a1] }, { id: "user_B", keys: [b1] }]) {
  fake = startFakeAccounts({ accounts, now: () => START });
  const proxy = await startTestProxy({
    upstream: fake.url,
    keys: accounts.flatMap((spec) => spec.keys),
    config: { ADMIN_TOKEN: adminToken, ROTATION: "round-robin", ...config },
    overrides: { now: () => START },
  });
  cleanups.push(() => proxy.close());
  return { upstream: fake, proxy };
}

const send = (proxy: TestProxy, body: Record<string, unknown>, signal?: AbortSignal) =>
  fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer client" },
    body: JSON.stringify({ model: PAID, messages: [{ role: "user", content: "hi" }], ...body }),
    ...(signal ? { signal } : {}),
  });
const nextRecord = (proxy: TestProxy) => new Promise<RequestRecord>((resolve) => void proxy.events.on("request.done", resolve));
const recentRequests = async (proxy: TestProxy) =>
  ((await (await fetch(`${proxy.url}/admin/requests`, { headers: { authorization: `Bearer ${adminToken}` } })).json()) as {
    requests: Array<{ keyId: string | null; attempts: number; status: number; generationId: string | null }>;
  }).requests;

describe("truthful records", () => {
  test("a client that leaves during the stream-commit hold leaves a record with the attempt that reached the upstream and its key", async () => {
    const { upstream, proxy } = await start({ STREAM_COMMIT_SECONDS: 30 });
    // A stream that says when the proxy reads it: past its headers, inside the commit hold.
    let reading: () => void = () => {};
    const inHold = new Promise<void>((resolve) => (reading = resolve));
    let cancelled: () => void = () => {};
    const upstreamCancelled = new Promise<void>((resolve) => (cancelled = resolve));
    let sent = false;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (!sent) controller.enqueue(new TextEncoder().encode(": OPENROUTER PROCESSING\n\n"));
        else reading();
        sent = true;
      },
      cancel: () => cancelled(),
    });
    upstream.scriptOnce({ reply: () => new Response(body, { headers: { "content-type": "text/event-stream" } }) });
    const client = new AbortController();
    const record = nextRecord(proxy);
    const pending = send(proxy, { stream: true }, client.signal).catch((error: unknown) => error);
    await inHold;
    client.abort();
    await pending;
    const done = await record;
    expect(done).toMatchObject({ status: 499, aborted: true, keyId: keyIdOf(a1) });
    expect(done.attempts).toEqual([expect.objectContaining({ keyId: keyIdOf(a1), outcome: "client-gone" })]);
    // 200 when the proxy had the upstream's headers (holding the stream), 0 when the abort came
    // while they were on the wire: either way the attempt that reached the upstream is recorded.
    expect([0, 200]).toContain(done.attempts[0]?.status ?? -1);
    await upstreamCancelled; // the upstream request was ended, not left running
    expect((await recentRequests(proxy))[0]).toMatchObject({ status: 499, keyId: keyIdOf(a1), attempts: 1 });
  });

  test("each record carries OpenRouter's X-Generation-Id, or the answer's id, in the requests log and /admin/requests", async () => {
    const { upstream, proxy } = await start();
    upstream.scriptOnce({ reply: () => Response.json({ id: "gen-from-body", object: "chat.completion", choices: [] }, { headers: { "X-Generation-Id": "gen-from-header" } }) });
    expect((await send(proxy, {})).status).toBe(200);
    expect((await send(proxy, {})).status).toBe(200); // the double's own answer: id gen-fake-1, no header
    const streamed = controlledStream();
    upstream.scriptOnce({ reply: () => streamed.response });
    streamed.send(contentChunk("hi"));
    streamed.send("data: [DONE]\n\n");
    streamed.end();
    const record = nextRecord(proxy);
    await (await send(proxy, { stream: true })).text();
    await record;
    expect((await recentRequests(proxy)).map((request) => request.generationId)).toEqual(["gen-fake-2", "gen-fake-1", "gen-from-header"]);
    await proxy.logging.flush();
    const logged = await readLog(proxy.logDir, "requests", "2026-03-01");
    expect(logged.map((line) => line.generationId)).toEqual(["gen-from-header", "gen-fake-1", "gen-fake-2"]);
  });
});

test("an answer's generation id is its first \"id\" field, not an \"id\" that is some value's text, and the header wins over both", () => {
  const bytes = (text: string) => new TextEncoder().encode(text);
  const none = new Headers();
  expect(generationIdOf(none, bytes('{"object":"id","note":"\\"id\\" is here","id" :  "gen-abc_1.2:3","choices":[]}'))).toBe("gen-abc_1.2:3");
  expect(generationIdOf(none, bytes(`data: {"id":"gen-stream-9","choices":[{"delta":{"content":"hi"}}]}\n\n`))).toBe("gen-stream-9");
  expect(generationIdOf(none, bytes('{"object":"chat.completion","choices":[]}'))).toBeUndefined();
  expect(generationIdOf(none, bytes(`${" ".repeat(2048)}{"id":"gen-too-far"}`))).toBeUndefined();
  expect(generationIdOf(new Headers({ "x-generation-id": "gen-header" }), bytes('{"id":"gen-body"}'))).toBe("gen-header");
});

describe("Retry-After tells the truth", () => {
  test("the proxy's own 429 carries a Retry-After from the announced reset", async () => {
    const { proxy } = await start({}, [{ id: "user_A", keys: [a1], freePerMinute: 0 }, { id: "user_B", keys: [b1], freePerMinute: 0 }]);
    const response = await send(proxy, { model: FREE });
    expect(response.status).toBe(429);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe("all_keys_cooling_down");
    const nextMinute = (Math.floor(START / 60_000) + 1) * 60_000;
    expect(Number(response.headers.get("retry-after"))).toBe((nextMinute - START) / 1000);
  });

  test.each([
    ["a key's own 429", { message: "Rate limit exceeded", code: 429 }],
    ["a provider's 429", { message: "Provider returned error", code: 429, metadata: { provider_name: "Chutes" } }],
    ["a shared-capacity 429", { message: "Rate limit exceeded: limit_rpm/x. High demand", code: 429, metadata: { limit_source: "openrouter_shared_capacity" } }],
  ])("an upstream 429 without a reset (%s) passes back without a Retry-After invented", async (_name, error) => {
    const { upstream, proxy } = await start();
    upstream.scriptOnce({ reply: () => Response.json({ error }, { status: 429 }) }, { reply: () => Response.json({ error }, { status: 429 }) });
    const response = await send(proxy, {});
    expect(response.status).toBe(429);
    expect(response.headers.get("retry-after")).toBeNull();
    expect(((await response.json()) as { error: { message: string } }).error.message).toBe(error.message);
  });
});

test("the proxy's own 429 while a key rests on its default cooldown (no reset announced) carries no Retry-After", async () => {
  const { upstream, proxy } = await start({}, [{ id: "user_A", keys: [a1] }]);
  upstream.scriptOnce({ reply: () => Response.json({ error: { message: "Rate limit exceeded", code: 429 } }, { status: 429 }) });
  const first = await send(proxy, {});
  expect(first.status).toBe(429);
  expect(first.headers.get("retry-after")).toBeNull();
  const second = await send(proxy, {});
  expect(second.status).toBe(429);
  const body = (await second.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe("all_keys_cooling_down");
  expect(body.error.message).toContain("no reset was announced");
  expect(second.headers.get("retry-after")).toBeNull();
  expect(upstream.chatCalls()).toHaveLength(1);
});
