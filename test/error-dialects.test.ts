/**
 * Every error the proxy makes on its API roots, made for real (a real proxy, the fake OpenRouter on
 * port 0, raw sockets where `fetch` will not send the request), and read on both roots: on
 * `/api/v1/…` it must be OpenRouter's shape (`code` the HTTP status, the proxy's code and type in
 * `metadata`), on `/v1/…` OpenAI's (`code` the string). The admin API keeps OpenAI's. Upstream
 * errors are never re-shaped: their bytes come back as they were sent, on either root.
 */
import { describe, expect, test } from "bun:test";
import { adminClient, adminToken, answerCosting } from "./helpers/clients.ts";
import { proxyErrorIn } from "./helpers/error-shapes.ts";
import { chatCompletion, errorReply } from "./helpers/fake-openrouter.ts";
import { connectRaw } from "./helpers/raw-http.ts";
import { rawRequest } from "./helpers/raw-request.ts";
import { useSuite } from "./helpers/suite.ts";
import { requestsDone, startTestProxy, testKeys, type TestProxy, type TestProxyOptions } from "./helpers/test-proxy.ts";
import type { Config } from "../src/config.ts";

const secrets: string[] = [...testKeys, adminToken];
const { fake, log, cleanups } = useSuite({ secrets, reply: () => chatCompletion("hi") });

/** 2026-12-04T12:00:40Z: a fixed clock, so a client's minute window cannot roll over mid-test. */
const T0 = Date.parse("2026-12-04T12:00:40Z");
const chatBody = JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
const json = { "content-type": "application/json" };

interface Answer {
  status: number;
  text: string;
  headers: Headers;
}

async function start(config: Partial<Config> = {}, options: Omit<TestProxyOptions, "upstream" | "config"> = {}): Promise<TestProxy> {
  const proxy = await startTestProxy({ upstream: fake.url, config: { ADMIN_TOKEN: adminToken, ...config }, overrides: { now: () => T0 }, ...options });
  cleanups.push(async () => {
    log.record(proxy.output.out, proxy.output.err);
    await proxy.close();
  });
  return proxy;
}

async function send(proxy: TestProxy, path: string, init: RequestInit = { method: "POST", headers: json, body: chatBody }): Promise<Answer> {
  const response = await fetch(`${proxy.url}${path}`, init);
  const text = await response.text();
  log.record(text);
  return { status: response.status, text, headers: response.headers };
}

async function raw(proxy: TestProxy, head: string): Promise<Answer> {
  const answer = await rawRequest(Number(proxy.server.port), head);
  log.record(answer.body);
  return { status: answer.status, text: answer.body, headers: answer.headers };
}

/** A client key with these settings, sent as the bearer of a chat request. */
async function asClient(proxy: TestProxy, settings: Record<string, unknown>): Promise<(path: string, body?: string) => Promise<Answer>> {
  const key = await adminClient(proxy.url, log, secrets).add("app", settings);
  return (path, body = chatBody) => send(proxy, path, { method: "POST", headers: { ...json, authorization: `Bearer ${key}` }, body });
}

const chat = (root: string) => `${root}/chat/completions`;

/** code, status, and how to make the proxy answer it on `root` (the path asked for, and the answer). */
type Row = [code: string, status: number, make: (root: string) => Promise<{ path: string; answer: Answer }>];

const rows: Row[] = [
  ["invalid_json", 400, async (root) => ({ path: chat(root), answer: await send(await start(), chat(root), { method: "POST", headers: json, body: "{" }) })],
  ["invalid_body", 400, async (root) => ({ path: chat(root), answer: await send(await start(), chat(root), { method: "POST", headers: json, body: "[]" }) })],
  ["unsupported_content_type", 415, async (root) => ({ path: chat(root), answer: await send(await start(), chat(root), { method: "POST", headers: { "content-type": "text/plain" }, body: chatBody }) })],
  ["body_too_large", 413, async (root) => ({ path: chat(root), answer: await send(await start({ MAX_BODY_BYTES: 1024 }), chat(root), { method: "POST", headers: json, body: JSON.stringify({ model: "x", pad: "x".repeat(2000) }) }) })],
  [
    "body_timeout",
    408,
    async (root) => {
      const proxy = await start({ BODY_TIMEOUT_SECONDS: 0.1 });
      const connection = await connectRaw(Number(proxy.server.port));
      cleanups.push(async () => connection.end());
      await connection.write(`POST ${chat(root)} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model":`);
      expect(await connection.waitFor(/\r\n\r\n\{.*\}$/s)).toBe(true);
      const text = connection.received();
      return { path: chat(root), answer: { status: Number(text.split(" ")[1]), text: text.slice(text.indexOf("\r\n\r\n") + 4), headers: new Headers() } };
    },
  ],
  ["method_not_allowed", 405, async (root) => ({ path: `${root}/models`, answer: await raw(await start(), `TRACE ${root}/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n`) })],
  ["endpoint_not_allowed", 403, async (root) => ({ path: `${root}/credits`, answer: await send(await start(), `${root}/credits`, {}) })],
  ["invalid_api_key", 401, async (root) => ({ path: chat(root), answer: await send(await start({ PROXY_API_KEYS: ["team-secret-d"] }), chat(root)) })],
  ["host_not_allowed", 421, async (root) => ({ path: `${root}/models`, answer: await raw(await start(), `GET ${root}/models HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n`) })],
  ["origin_not_allowed", 403, async (root) => ({ path: chat(root), answer: await send(await start(), chat(root), { method: "POST", headers: { ...json, origin: "https://evil.example" }, body: chatBody }) })],
  ["model_not_allowed", 403, async (root) => ({ path: chat(root), answer: await (await asClient(await start(), { models: ["anthropic/*"] }))(chat(root)) })],
  [
    "client_rate_limited",
    429,
    async (root) => {
      const ask = await asClient(await start(), { rpm: 1 });
      expect((await ask(chat(root))).status).toBe(200);
      return { path: chat(root), answer: await ask(chat(root)) };
    },
  ],
  [
    "client_budget_exceeded",
    429,
    async (root) => {
      const proxy = await start();
      const ask = await asClient(proxy, { usdPerDay: 0.001 });
      fake.replyOnce(() => answerCosting(0.01));
      const charged = requestsDone(proxy, 1);
      expect((await ask(chat(root))).status).toBe(200);
      await charged;
      return { path: chat(root), answer: await ask(chat(root)) };
    },
  ],
  ["no_keys_configured", 503, async (root) => ({ path: chat(root), answer: await send(await start({}, { keys: [] }), chat(root)) })],
  [
    "all_keys_cooling_down",
    429,
    async (root) => {
      fake.reply(() => errorReply(429, "Rate limit exceeded", { headers: { "X-RateLimit-Reset": String(T0 + 30_000) } }));
      return { path: chat(root), answer: await send(await start(), chat(root)) };
    },
  ],
  [
    "free_model_limit_used_up",
    429,
    async (root) => {
      const proxy = await start({}, { keys: [testKeys[0] as string] });
      const free = JSON.stringify({ model: "meta-llama/llama-3.3-70b-instruct:free", messages: [{ role: "user", content: "hi" }] });
      fake.replyOnce(() => errorReply(429, "Rate limit exceeded: free-models-per-day. ", { headers: { "X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": String(T0 + 3_600_000) } }));
      // OpenRouter's free-models-per-day 429 rests the only account for free models: the proxy answers for it.
      return { path: chat(root), answer: await send(proxy, chat(root), { method: "POST", headers: json, body: free }) };
    },
  ],
  [
    "all_keys_disabled",
    503,
    async (root) => {
      const proxy = await start({ FAILURE_THRESHOLD: 1 }, { keys: [testKeys[0] as string] });
      fake.replyOnce(() => errorReply(401, "User not found."));
      expect((await send(proxy, chat(root))).status).toBe(401);
      return { path: chat(root), answer: await send(proxy, chat(root)) };
    },
  ],
  [
    "all_accounts_out_of_credits",
    402,
    async (root) => {
      const proxy = await start({}, { keys: [testKeys[0] as string] });
      fake.replyOnce(() => errorReply(402, "Insufficient credits", { metadata: { limit_source: "openrouter_credits" } }));
      expect((await send(proxy, chat(root))).status).toBe(402);
      return { path: chat(root), answer: await send(proxy, chat(root)) };
    },
  ],
  [
    "all_keys_over_budget",
    402,
    async (root) => {
      const proxy = await start({}, { keys: [testKeys[0] as string] });
      const resetsAt = new Date(T0 + 3_600_000).toISOString();
      // The one key rests on its cap at once, and with no other key the proxy answers for it.
      fake.replyOnce(() => errorReply(403, "Budget limit exceeded", { metadata: { limit_source: "openrouter_key_limit", resets_at: resetsAt } }));
      return { path: chat(root), answer: await send(proxy, chat(root)) };
    },
  ],
  [
    "upstream_unreachable",
    502,
    async (root) => {
      const closed = Bun.serve({ port: 0, fetch: () => new Response() });
      const deadUrl = `http://127.0.0.1:${closed.port}/api/v1`;
      await closed.stop(true);
      const proxy = await startTestProxy({ upstream: deadUrl, config: { MAX_ATTEMPTS: 1 } });
      cleanups.push(() => proxy.close());
      return { path: chat(root), answer: await send(proxy, chat(root)) };
    },
  ],
  [
    "upstream_timeout",
    504,
    async (root) => {
      fake.reply(async (request) => {
        await request.aborted;
        return chatCompletion("too late");
      });
      return { path: chat(root), answer: await send(await start({ MAX_ATTEMPTS: 1, UPSTREAM_TIMEOUT_SECONDS: 0.2 }), chat(root)) };
    },
  ],
  [
    "shutting_down",
    503,
    async (root) => {
      const proxy = await startTestProxy({ upstream: fake.url });
      cleanups.push(async () => log.record(proxy.output.out, proxy.output.err));
      fake.reply(async (request) => {
        await request.aborted;
        return chatCompletion("too late");
      });
      const pending = send(proxy, chat(root));
      await fake.nextRequest();
      const stopped = proxy.close();
      const answer = await pending;
      await stopped;
      return { path: chat(root), answer };
    },
  ],
  ["route_not_found", 404, async (root) => ({ path: root, answer: await send(await start(), root, {}) })],
];

describe("the proxy's own errors speak the dialect of the root they were asked on", () => {
  test.each(rows)("%s (%d) is OpenRouter-shaped on /api/v1 and OpenAI-shaped on /v1, with the same code, type and message", async (code, status, make) => {
    const seen: Array<{ type: string; message: string }> = [];
    for (const root of ["/v1", "/api/v1"]) {
      const { path, answer } = await make(root);
      expect({ path, status: answer.status }).toEqual({ path, status });
      const error = proxyErrorIn(answer.text, path, answer.status);
      expect(error.code).toBe(code);
      expect(error.message.length).toBeGreaterThan(10);
      seen.push({ type: error.type, message: error.message });
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
      fake.reply(() => chatCompletion("hi"));
    }
    // One error, two spellings: only the envelope differs.
    expect(seen[1]?.type).toBe(seen[0]?.type as string);
  });

  test("a client's 429 keeps its Retry-After on both roots", async () => {
    for (const root of ["/v1", "/api/v1"]) {
      const ask = await asClient(await start(), { rpm: 1 });
      await ask(chat(root));
      const limited = await ask(chat(root));
      expect({ root, status: limited.status, retryAfter: Number(limited.headers.get("retry-after")) }).toEqual({ root, status: 429, retryAfter: 20 });
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    }
  });

  test("the admin API keeps OpenAI's shape, whatever the API roots speak", async () => {
    const proxy = await start();
    const refused = await send(proxy, "/admin/keys", {});
    expect(refused.status).toBe(401);
    expect(JSON.parse(refused.text)).toEqual({ error: { message: expect.stringContaining("ADMIN_TOKEN"), type: "authentication_error", code: expect.any(String) } });
  });

  test.each(["/v1", "/api/v1"])("an upstream error on %s comes back byte for byte, never re-shaped", async (root) => {
    const upstreamText = '{"error":{"message":"Provider returned error","code":400,"metadata":{"provider_name":"Example"}}}';
    fake.reply(() => new Response(upstreamText, { status: 400, headers: json }));
    const answer = await send(await start(), chat(root));
    expect({ status: answer.status, text: answer.text }).toEqual({ status: 400, text: upstreamText });
  });
});
