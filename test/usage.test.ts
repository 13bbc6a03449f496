/**
 * Usage: `GET /admin/usage?since=…` over HTTP, and the usage tap that reads token counts (and late
 * errors) from the end of an answer while its bytes pass through.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { createUsageLedger } from "../src/observe/usage-ledger.ts";
import type { RequestRecord } from "../src/domain/request-record.ts";
import { readAnswerTail, UsageTap } from "../src/upstream/usage-tap.ts";
import { chatCompletion, errorReply, sseChunk, sseText, usageChunk, lateErrorChunk } from "./helpers/fake-openrouter.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, testKeys, type TestProxy, type TestProxyOptions } from "./helpers/test-proxy.ts";

const encoder = new TextEncoder();
const bytes = (text: string) => encoder.encode(text);
const TAIL = 16 * 1024;

/** Feeds `text` to a tap in pieces cut at the given byte offsets, and reads it. */
function tapped(text: string, cuts: number[], isEventStream = true) {
  const all = bytes(text);
  const tap = new UsageTap();
  let from = 0;
  for (const cut of [...cuts, all.byteLength]) {
    if (cut > from) tap.observe(all.subarray(from, cut));
    from = Math.max(from, cut);
  }
  return tap.finish(isEventStream);
}

/** Feeds `text` in chunks of `size` bytes. */
function tappedEvery(text: string, size: number, isEventStream = true) {
  const length = bytes(text).byteLength;
  const cuts: number[] = [];
  for (let at = size; at < length; at += size) cuts.push(at);
  return tapped(text, cuts, isEventStream);
}

const streamUsage = { promptTokens: 5, completionTokens: 2, totalTokens: 7, cost: 0.00002 };

describe("usage tap", () => {
  test("usage is read from a JSON body", async () => {
    const body = await chatCompletion("hello").text();
    expect(readAnswerTail(bytes(body), false)).toEqual({ usage: { promptTokens: 5, completionTokens: 3, totalTokens: 8, cost: 0.00001 } });
    expect(tappedEvery(body, 7, false)).toEqual({ usage: { promptTokens: 5, completionTokens: 3, totalTokens: 8, cost: 0.00001 } });
  });

  test("cached and reasoning tokens are read when the upstream reports them", () => {
    const body = JSON.stringify({
      choices: [],
      usage: {
        prompt_tokens: 100,
        completion_tokens: 40,
        total_tokens: 140,
        cost: 0.0012,
        prompt_tokens_details: { cached_tokens: 64 },
        completion_tokens_details: { reasoning_tokens: 30 },
      },
    });
    expect(readAnswerTail(bytes(body), false).usage).toEqual({
      promptTokens: 100,
      completionTokens: 40,
      totalTokens: 140,
      cost: 0.0012,
      cachedTokens: 64,
      reasoningTokens: 30,
    });
  });

  test("usage is read from the final SSE usage chunk", () => {
    expect(tappedEvery(sseText(["Hel", "lo"]), 10_000)).toEqual({ usage: streamUsage });
  });

  test.each([
    ["just after `data:`", 6],
    ["inside the usage object", usageChunk.indexOf('"completion_tokens"') + 5],
    ["between the line and its blank line", usageChunk.length - 1],
  ])("the usage chunk split across chunks (%s) is still read", (_where, offset) => {
    const text = sseText(["Hel", "lo"]);
    const at = text.indexOf(usageChunk) + offset;
    expect(tapped(text, [at])).toEqual({ usage: streamUsage });
    // And cut in three, one byte at a time around the cut.
    expect(tapped(text, [at - 1, at, at + 1])).toEqual({ usage: streamUsage });
  });

  test("the usage chunk is read when the 16 KB tail window cuts the first line of what it keeps", () => {
    // A 20 KB content chunk that itself says `"usage":null`: the window starts inside it, so its
    // cut first line cannot be parsed. It must be skipped, not misread, and the real usage found.
    const long = `data: ${JSON.stringify({ id: "gen-stream-1", choices: [{ index: 0, delta: { content: "x".repeat(20_000) }, finish_reason: null }], usage: null })}\n\n`;
    const text = `${long}${usageChunk}data: [DONE]\n\n`;
    const windowStart = bytes(text).byteLength - TAIL;
    expect(windowStart).toBeGreaterThan(0);
    expect(windowStart).toBeLessThan(long.length); // the window starts inside the long line
    expect(readAnswerTail(bytes(text), true)).toEqual({ usage: streamUsage });
    expect(tappedEvery(text, 1000)).toEqual({ usage: streamUsage });
    expect(tappedEvery(text, 4096)).toEqual({ usage: streamUsage });
  });

  test("an error event late in a stream is read as a late error", () => {
    const text = `: OPENROUTER PROCESSING\n\n${sseChunk("partial")}${lateErrorChunk}`;
    expect(tappedEvery(text, 50)).toEqual({ lateError: "502: Provider disconnected mid-answer" });
  });

  test("a stream without usage or error gives neither", () => {
    expect(tappedEvery(`${sseChunk("a")}${sseChunk("b")}data: [DONE]\n\n`, 16)).toEqual({});
    expect(new UsageTap().finish(true)).toEqual({});
  });

  test.each([
    ["an error object", { error: { code: 502, message: "Upstream provider error" } }, "502: Upstream provider error"],
    ["an error without a code", { error: { message: "Something broke" } }, "Something broke"],
    ["an error string", { error: "boom" }, "boom"],
  ])("a 200 JSON body carrying %s is read as a late error", (_what, body, lateError) => {
    expect(readAnswerTail(bytes(JSON.stringify(body)), false)).toEqual({ lateError });
  });

  test("a JSON body larger than the 16 KB tail still gives its usage, which comes last", async () => {
    const body = await chatCompletion("y".repeat(100_000)).text();
    expect(bytes(body).byteLength).toBeGreaterThan(6 * TAIL);
    const usage = { promptTokens: 5, completionTokens: 3, totalTokens: 8, cost: 0.00001 };
    expect(readAnswerTail(bytes(body), false)).toEqual({ usage });
    expect(tappedEvery(body, 1000, false)).toEqual({ usage });
  });

  test("a stream far larger than the tail keeps only the tail and still finds the usage", () => {
    const parts = Array.from({ length: 2000 }, (_, index) => `part ${index} `);
    const text = sseText(parts);
    expect(bytes(text).byteLength).toBeGreaterThan(20 * TAIL);
    expect(tappedEvery(text, 333)).toEqual({ usage: streamUsage });
  });
});

// ---- GET /admin/usage ----

const [keyA, keyB] = testKeys as [string, string, string];
const [idA, idB] = [keyIdOf(keyA), keyIdOf(keyB)];
const adminToken = "admin-token-usage-91af";
let clock = Date.parse("2026-11-25T10:00:00.000Z");
const now = () => clock;

const { fake, cleanups } = useSuite({ reply: () => chatCompletion("hello") });
afterEach(() => {
  clock = Date.parse("2026-11-25T10:00:00.000Z");
});

async function start(options: Partial<TestProxyOptions> = {}): Promise<TestProxy> {
  const proxy = await startTestProxy({ upstream: fake.url, ...options, config: { ADMIN_TOKEN: adminToken, ...options.config }, overrides: { now, ...options.overrides } });
  cleanups.push(() => proxy.close());
  return proxy;
}

const chatBody = (extra: Record<string, unknown> = {}) => JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }], ...extra });
const chat = (p: TestProxy, body = chatBody()) =>
  fetch(`${p.url}/v1/chat/completions`, { method: "POST", body, headers: { "content-type": "application/json", authorization: "Bearer client" } });
const usage = (p: TestProxy, query = "") => fetch(`${p.url}/admin/usage${query}`, { headers: { authorization: `Bearer ${adminToken}` } });

describe("GET /admin/usage", () => {
  test("returns the totals as JSON, by model and by key", async () => {
    const p = await start();
    expect((await chat(p)).status).toBe(200); // key A: 5 + 3 tokens, $0.00001
    fake.replyOnce(() => new Response(sseText(["streamed"]), { headers: { "content-type": "text/event-stream" } }));
    await (await chat(p, chatBody({ stream: true, model: "anthropic/claude-sonnet-4" }))).text(); // key A: 5 + 2, $0.00002
    fake.replyOnce(() => errorReply(429, "slow down"));
    expect((await chat(p)).status).toBe(200); // 429 on A, served by B: 5 + 3, $0.00001
    const response = await usage(p);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toStartWith("application/json");
    const report = (await response.json()) as Record<string, unknown>;
    expect(report).toMatchObject({
      since: "2026-11-25T00:00:00.000Z",
      until: "2026-11-25T10:00:00.000Z",
      totals: { requests: 3, errors: 0, promptTokens: 15, completionTokens: 8, totalTokens: 23 },
      byModel: {
        "openai/gpt-4o-mini": { requests: 2, errors: 0, promptTokens: 10, completionTokens: 6, totalTokens: 16 },
        "anthropic/claude-sonnet-4": { requests: 1, errors: 0, promptTokens: 5, completionTokens: 2, totalTokens: 7 },
      },
      byKey: {
        // Key A was tried three times: it served two, and one attempt was rate limited.
        [idA]: { requests: 3, successes: 2, errors: 1, promptTokens: 10, completionTokens: 5, totalTokens: 15 },
        [idB]: { requests: 1, successes: 1, errors: 0, promptTokens: 5, completionTokens: 3, totalTokens: 8 },
      },
    });
    const cost = (path: string[]) => path.reduce<unknown>((value, name) => (value as Record<string, unknown>)[name], report) as number;
    expect(cost(["totals", "cost"])).toBeCloseTo(0.00004, 12);
    expect(cost(["byModel", "openai/gpt-4o-mini", "cost"])).toBeCloseTo(0.00002, 12);
    expect(cost(["byKey", idA, "cost"])).toBeCloseTo(0.00003, 12);
    expect(cost(["byKey", idB, "cost"])).toBeCloseTo(0.00001, 12);
  });

  test("since is an ISO date or time, or epoch milliseconds; without it, today (UTC)", async () => {
    const p = await start();
    clock = Date.parse("2026-11-24T22:00:00.000Z");
    expect((await chat(p)).status).toBe(200);
    clock = Date.parse("2026-11-25T10:00:00.000Z");
    expect((await chat(p)).status).toBe(200);
    expect((await chat(p)).status).toBe(200);
    const requestsSince = async (query: string) => {
      const response = await usage(p, query);
      expect(response.status).toBe(200);
      const report = (await response.json()) as { since: string; totals: { requests: number } };
      return [report.since, report.totals.requests];
    };
    expect(await requestsSince("")).toEqual(["2026-11-25T00:00:00.000Z", 2]);
    expect(await requestsSince("?since=2026-11-24")).toEqual(["2026-11-24T00:00:00.000Z", 3]);
    expect(await requestsSince("?since=2026-11-24T21:30:00Z")).toEqual(["2026-11-24T21:30:00.000Z", 3]);
    expect(await requestsSince(`?since=${encodeURIComponent("2026-11-25T01:00:00+02:00")}`)).toEqual(["2026-11-24T23:00:00.000Z", 2]);
    expect(await requestsSince(`?since=${Date.parse("2026-11-24T23:00:00.000Z")}`)).toEqual(["2026-11-24T23:00:00.000Z", 2]);
    expect(await requestsSince(`?since=${Date.parse("2026-11-25T11:00:00.000Z")}`)).toEqual(["2026-11-25T11:00:00.000Z", 0]);
  });

  test.each(["not-a-date", "2026-13-45", "yesterday", "-5", "12abc"])("a bad since (%p) answers 400, OpenAI-shaped", async (since) => {
    const p = await start();
    const response = await usage(p, `?since=${encodeURIComponent(since)}`);
    expect(response.status).toBe(400);
    const body = (await response.json()) as { error: { message: string; type: string; code: string } };
    expect(body).toEqual({ error: { message: expect.any(String), type: "invalid_request_error", code: "invalid_since" } });
    expect(body.error.message).toContain(JSON.stringify(since));
    expect(body.error.message).toContain("epoch milliseconds");
  });

  test("needs the admin token", async () => {
    const p = await start();
    const response = await fetch(`${p.url}/admin/usage`);
    expect(response.status).toBe(401);
    expect(await response.json()).toMatchObject({ error: { type: "authentication_error" } });
  });
});

describe("recent requests", () => {
  const record = (index: number): RequestRecord => ({
    requestId: `req-${index}`,
    startedAt: 1_795_600_000_000 + index,
    method: "POST",
    path: "/chat/completions",
    stream: false,
    status: 200,
    attempts: [{ keyId: "k_1", status: 200, outcome: "ok", ms: 1 }],
    keyId: "k_1",
    durationMs: 1,
    aborted: false,
  });

  test("the ledger keeps the last recentSize requests, newest first, however many came before", () => {
    const ledger = createUsageLedger({ now: () => 1_795_600_100_000, recentSize: 3 });
    expect(ledger.recent()).toEqual([]);
    ledger.record(record(1));
    expect(ledger.recent().map((each) => each.requestId)).toEqual(["req-1"]);
    for (let index = 2; index <= 8; index++) ledger.record(record(index));
    expect(ledger.recent().map((each) => each.requestId)).toEqual(["req-8", "req-7", "req-6"]);
    expect(ledger.recent(2).map((each) => each.requestId)).toEqual(["req-8", "req-7"]);
    expect(ledger.recent(10).map((each) => each.requestId)).toEqual(["req-8", "req-7", "req-6"]);
  });
});

describe("holding chunks", () => {
  test("a chunk read from a fetch body owns a buffer of about its own size, so the tap may keep chunks without pinning more memory", async () => {
    const server = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch: () =>
        new Response(
          new ReadableStream({
            async pull(controller) {
              for (let index = 0; index < 20; index++) {
                controller.enqueue(encoder.encode(sseChunk(`token ${index} `)));
                await Bun.sleep(1);
              }
              controller.close();
            },
          }),
          { headers: { "content-type": "text/event-stream" } },
        ),
    });
    try {
      const response = await fetch(`http://127.0.0.1:${server.port}/`);
      const reader = (response.body as ReadableStream<Uint8Array>).getReader();
      const buffers: number[] = [];
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffers.push(value.buffer.byteLength);
      }
      expect(buffers.length).toBeGreaterThan(1);
      // Bun 1.3 handed out views into a 256 KB buffer (oven-sh/bun#30593); then the tap kept copies.
      for (const size of buffers) expect(size).toBeLessThan(16 * 1024);
    } finally {
      await server.stop(true);
    }
  });
});
