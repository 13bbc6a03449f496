/**
 * Client keys at the front door: who may call once client keys exist, which models a client may
 * use, and its limits and budgets, each checked before anything goes upstream (the fake upstream
 * counts what it receives). A real proxy on a temporary keys file, an injected clock, the admin
 * API and the CLI to change clients; every answer and log line is scanned for pool and client keys.
 */
import { afterAll, expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import OpenAI from "openai";
import { runCli } from "./helpers/cli.ts";
import { proxyErrorIn } from "./helpers/error-shapes.ts";
import { chatCompletion } from "./helpers/fake-openrouter.ts";
import { killAllProxies, startProxyProcess } from "./helpers/proxy-process.ts";
import { rawRequest } from "./helpers/raw-request.ts";
import { adminClient, adminToken, answerCosting, runKeyPrintingCli, streamCosting } from "./helpers/clients.ts";
import { useSuite } from "./helpers/suite.ts";
import { eventually, requestsDone, startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const secrets: string[] = [...testKeys, adminToken];
afterAll(killAllProxies);
const { fake, log, cleanups, folder } = useSuite({ secrets, reply: (request) => chatCompletion(`hello from ${request.key.slice(-4)}`) });

/** 2026-12-04T12:00:40Z: twenty seconds before a minute boundary. */
const T0 = Date.parse("2026-12-04T12:00:40Z");

interface Harness {
  proxy: TestProxy;
  admin: ReturnType<typeof adminClient>;
  clock: { now: number };
  chat(key: string | undefined, body?: Record<string, unknown>, path?: string): Promise<{ status: number; json: Record<string, unknown>; headers: Headers }>;
}

/** A proxy with the admin API on; `dir` given: on that folder, its keys file kept as it is (a restart). */
async function start(config: Record<string, unknown> = {}, dir?: string): Promise<Harness> {
  const clock = { now: T0 };
  const proxy = await startTestProxy({
    upstream: fake.url,
    ...(dir ? { keys: null } : {}),
    config: { ADMIN_TOKEN: adminToken, ...config },
    overrides: { now: () => clock.now },
    ...(dir ? { dir } : {}),
  });
  cleanups.push(async () => {
    log.record(proxy.output.out, proxy.output.err);
    await (dir ? proxy.stop(0) : proxy.close());
  });
  const admin = adminClient(proxy.url, log, secrets);
  return {
    proxy,
    admin,
    clock,
    async chat(key, body = {}, path = "/v1/chat/completions") {
      const response = await fetch(`${proxy.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(key ? { authorization: `Bearer ${key}` } : {}) },
        body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }], ...body }),
      });
      const text = await response.text();
      log.record(text, JSON.stringify([...response.headers]));
      const json = text.startsWith("{") ? (JSON.parse(text) as Record<string, unknown>) : { stream: text };
      return { status: response.status, json, headers: response.headers };
    },
  };
}

const errorOf = (json: Record<string, unknown>) => json.error as { message: string; type: string; code: string };
const upstreamChats = () => fake.requests.filter((request) => request.path === "/chat/completions").length;

test("once any client key exists, /v1 and /api/v1 require a client key (or a PROXY_API_KEYS entry, unlimited)", async () => {
  const { admin, chat } = await start({ PROXY_API_KEYS: ["team-secret-1"] });
  secrets.push("team-secret-1");
  expect((await chat("team-secret-1")).status).toBe(200);
  expect((await chat(undefined)).status).toBe(401); // PROXY_API_KEYS alone, as before
  const key = await admin.add("alice", { rpm: 1 });
  for (const bearer of [undefined, "sk-orp-not-a-real-key", "team-secret-2"]) {
    for (const path of ["/v1/chat/completions", "/api/v1/chat/completions"]) {
      const refused = await chat(bearer, {}, path);
      expect(refused.status).toBe(401);
      expect(proxyErrorIn(JSON.stringify(refused.json), path, 401)).toMatchObject({ type: "authentication_error", code: "invalid_api_key" });
    }
  }
  const before = upstreamChats();
  expect((await chat(key)).status).toBe(200);
  expect((await chat(key, {}, "/api/v1/chat/completions")).status).toBe(429); // alice's rpm 1
  // A PROXY_API_KEYS entry stays the unlimited mode.
  for (let i = 0; i < 3; i++) expect((await chat("team-secret-1")).status).toBe(200);
  expect(upstreamChats()).toBe(before + 4);
});

test("without client keys nothing changes: an open proxy stays open", async () => {
  const { chat } = await start();
  expect((await chat(undefined)).status).toBe(200);
  expect((await chat("anything")).status).toBe(200);
});

test("a client limited to openai/* gets 403 model_not_allowed for anthropic/… and no upstream request", async () => {
  const { admin, chat } = await start();
  const key = await admin.add("app", { models: ["openai/*", "*:free"] });
  const before = upstreamChats();
  for (const body of [
    { model: "anthropic/claude-3.5-sonnet" },
    { model: "openai/gpt-4o", models: ["openai/gpt-4o", "anthropic/claude-3.5-sonnet"] }, // a fallback outside
    { model: undefined }, // no model: OpenRouter would pick the account's default
    { model: "OpenAI/gpt-4o" }, // patterns match exactly, case included
  ]) {
    const refused = await chat(key, body);
    expect(refused.status).toBe(403);
    expect(errorOf(refused.json)).toMatchObject({ type: "permission_error", code: "model_not_allowed" });
  }
  expect(upstreamChats()).toBe(before);
  expect((await chat(key, { model: "openai/gpt-4o" })).status).toBe(200);
  expect((await chat(key, { model: "meta-llama/llama-3.3-70b-instruct:free" })).status).toBe(200);
  expect(upstreamChats()).toBe(before + 2);
  // Narrowed while serving: in force at once.
  expect((await admin.call("PATCH", "/clients/app", { models: ["*:free"] })).status).toBe(200);
  expect((await chat(key, { model: "openai/gpt-4o" })).status).toBe(403);
  expect((await admin.call("PATCH", "/clients/app", { models: null })).status).toBe(200);
  expect((await chat(key, { model: "anthropic/claude-3.5-sonnet" })).status).toBe(200);
});

test("model checks see every model the upstream could use: the fallbacks, /messages' fallbacks, presets (by name), non-strings refused", async () => {
  const { admin, chat } = await start();
  const key = await admin.add("app", { models: ["openai/gpt-4o-mini", "@preset/team-default"] });
  const before = upstreamChats();
  for (const [body, status, code] of [
    [{ model: ["openai/gpt-4o"], models: ["openai/gpt-4o-mini"] }, 400, "invalid_body"],
    [{ model: { id: "openai/gpt-4o" } }, 400, "invalid_body"],
    [{ models: ["openai/gpt-4o-mini", ["openai/gpt-4o"]] }, 400, "invalid_body"],
    [{ model: "@preset/other" }, 403, "model_not_allowed"],
    [{ model: "openai/gpt-4o-mini@preset/other" }, 403, "model_not_allowed"], // the preset may pick another model
    [{ model: "openai/gpt-4o-mini", preset: "other" }, 403, "model_not_allowed"],
    [{ model: "openai/gpt-4o-mini", fallbacks: [{ model: "anthropic/claude-sonnet-4.5" }] }, 403, "model_not_allowed"],
  ] as const) {
    for (const path of ["/v1/chat/completions", "/api/v1/chat/completions"]) {
      const refused = await chat(key, body, path);
      expect(refused.status).toBe(status);
      expect(proxyErrorIn(JSON.stringify(refused.json), path, status).code).toBe(code);
    }
  }
  expect(upstreamChats()).toBe(before);
  for (const body of [{ model: "@preset/team-default" }, { model: "openai/gpt-4o-mini@preset/team-default" }, { model: "openai/gpt-4o-mini", preset: "team-default", models: ["openai/gpt-4o-mini"] }]) {
    expect((await chat(key, body)).status).toBe(200);
  }
  expect(upstreamChats()).toBe(before + 3);
});

test("--rpm 3 gives the 4th request in a minute a 429 client_rate_limited with a truthful Retry-After (fixed UTC minutes)", async () => {
  const { admin, chat, clock } = await start();
  const key = await admin.add("bot", { rpm: 3 });
  for (let i = 0; i < 3; i++) expect((await chat(key)).status).toBe(200);
  const before = upstreamChats();
  const refused = await chat(key);
  expect(refused.status).toBe(429);
  expect(errorOf(refused.json)).toMatchObject({ type: "rate_limit_error", code: "client_rate_limited" });
  expect(errorOf(refused.json).message).toContain("3 requests per minute");
  expect(refused.headers.get("retry-after")).toBe("20"); // 12:00:40 → 12:01:00
  expect(upstreamChats()).toBe(before);
  clock.now = Date.parse("2026-12-04T12:00:59.500Z");
  expect((await chat(key)).headers.get("retry-after")).toBe("1");
  clock.now = Date.parse("2026-12-04T12:01:00Z");
  expect((await chat(key)).status).toBe(200);
});

test("--rpd counts per UTC day, and Retry-After runs to midnight", async () => {
  const { admin, chat, clock } = await start();
  const key = await admin.add("nightly", { rpd: 2 });
  expect((await chat(key)).status).toBe(200);
  clock.now += 5 * 60_000;
  expect((await chat(key)).status).toBe(200);
  const refused = await chat(key);
  expect(refused.status).toBe(429);
  expect(errorOf(refused.json).code).toBe("client_rate_limited");
  expect(Number(refused.headers.get("retry-after"))).toBe((Date.parse("2026-12-05T00:00:00Z") - clock.now) / 1000);
  clock.now = Date.parse("2026-12-05T00:00:00Z");
  expect((await chat(key)).status).toBe(200);
});

test("--tpm counts the tokens of the answers' usage, each request holding its prompt and max_tokens while it runs", async () => {
  const { admin, chat, clock } = await start();
  fake.reply(() => answerCosting(0, 600));
  const key = await admin.add("tokens", { tpm: 1000 });
  const small = { max_tokens: 100 }; // holds 100 + the prompt's bytes / 4 until its usage is known
  expect((await chat(key, small)).status).toBe(200); // 600
  expect((await chat(key, small)).status).toBe(200); // 600 + what it holds fits in 1000: 1200 after
  const refused = await chat(key, small);
  expect(refused.status).toBe(429);
  expect(errorOf(refused.json)).toMatchObject({ code: "client_rate_limited" });
  expect(errorOf(refused.json).message).toContain("1000 tokens per minute");
  expect(refused.headers.get("retry-after")).toBe("20");
  clock.now = Date.parse("2026-12-04T12:01:00Z");
  expect((await chat(key, small)).status).toBe(200);
});

test("--usd-per-day counts the streams' usage.cost, and refuses once it is spent", async () => {
  const { admin, chat, proxy } = await start();
  const key = await admin.add("paid", { usdPerDay: 0.012 });
  fake.reply(() => streamCosting(0.006));
  const done = requestsDone(proxy, 2);
  // No catalog prices this model: a request holds the client's average cost for it ($0 at first).
  expect((await chat(key, { stream: true })).status).toBe(200); // $0.006
  expect((await chat(key, { stream: true })).status).toBe(200); // holds $0.006, which fits exactly: $0.012 after
  await done; // a stream's usage is charged when it has ended
  const before = upstreamChats();
  const refused = await chat(key, { stream: true });
  expect(refused.status).toBe(429);
  expect(errorOf(refused.json)).toMatchObject({ type: "insufficient_quota", code: "client_budget_exceeded" });
  expect(Number(refused.headers.get("retry-after"))).toBe((Date.parse("2026-12-05T00:00:00Z") - T0) / 1000);
  expect(upstreamChats()).toBe(before);
});

test("--usd-per-month counts whole answers' usage.cost per UTC month; Retry-After runs to the next month", async () => {
  const { admin, chat, clock } = await start();
  const key = await admin.add("monthly", { usdPerMonth: 1.5 });
  fake.reply(() => answerCosting(0.75));
  expect((await chat(key)).status).toBe(200);
  clock.now = Date.parse("2026-12-20T08:00:00Z");
  expect((await chat(key)).status).toBe(200); // holds its average, $0.75, which fits: $1.50 now
  const refused = await chat(key);
  expect(errorOf(refused.json).code).toBe("client_budget_exceeded");
  expect(Number(refused.headers.get("retry-after"))).toBe((Date.parse("2027-01-01T00:00:00Z") - clock.now) / 1000);
  clock.now = Date.parse("2027-01-01T00:00:00Z");
  expect((await chat(key)).status).toBe(200);
});

test("a removed or rotated-away key gets 401 at once", async () => {
  const { admin, chat } = await start();
  const alice = await admin.add("alice");
  const bob = await admin.add("bob");
  expect((await chat(alice)).status).toBe(200);
  expect((await admin.call("DELETE", "/clients/alice")).status).toBe(204);
  expect(errorOf((await chat(alice)).json).code).toBe("invalid_api_key");
  const rotated = await admin.call("POST", "/clients/bob/rotate");
  expect(rotated.status).toBe(200);
  expect(errorOf((await chat(bob)).json).code).toBe("invalid_api_key");
  expect((await chat(rotated.json.key as string)).status).toBe(200);
});

test("a key removed with the CLI stops working on a running server within a poll of the keys file", async () => {
  const { admin, chat, proxy } = await start();
  const key = await admin.add("carol");
  await admin.add("dave");
  expect((await chat(key)).status).toBe(200);
  const removed = await runCli(["remove-client", "carol"], { cwd: proxy.dir, env: { KEYS_FILE: proxy.keysFile }, log });
  expect(removed.code).toBe(0);
  await eventually(async () => (await chat(key)).status === 401, { what: "the removal to be adopted" });
});

test("an expired key gets 401 invalid_api_key", async () => {
  const { admin, chat, clock } = await start();
  const key = await admin.add("temp", { expires: "2026-12-04T12:30:00Z" });
  expect((await chat(key)).status).toBe(200);
  clock.now = Date.parse("2026-12-04T12:30:00Z");
  const refused = await chat(key);
  expect(refused.status).toBe(401);
  expect(errorOf(refused.json)).toMatchObject({ type: "authentication_error", code: "invalid_api_key" });
  expect(errorOf(refused.json).message).toContain("expired");
});

test("client keys never reach OpenRouter: the upstream gets a pool key in Authorization", async () => {
  const { admin, chat, proxy } = await start();
  const key = await admin.add("alice");
  fake.requests.length = 0;
  expect((await chat(key)).status).toBe(200);
  expect(fake.requests).toHaveLength(1);
  const sent = fake.requests[0];
  expect(testKeys).toContain(sent?.key ?? "");
  const everything = `${[...(sent?.headers ?? [])].join("\n")}\n${sent?.body}`;
  expect(everything.includes(key)).toBe(false);
  expect(everything.includes(key.slice(7))).toBe(false);
  // The same key as an Anthropic-style x-api-key: accepted, and not passed on either.
  const viaHeader = await fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-api-key": key },
    body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
  });
  log.record(await viaHeader.text());
  expect(viaHeader.status).toBe(200);
  const second = fake.requests[1];
  expect(testKeys).toContain(second?.key ?? "");
  expect([...(second?.headers ?? [])].join("\n").includes(key.slice(7))).toBe(false);
});

test("the counters survive a restart with the file store", async () => {
  const dir = await folder();
  await Bun.write(`${dir}/keys.json`, JSON.stringify({ keys: testKeys.map((key) => ({ key })) }));
  const first = await start({}, dir);
  const key = await first.admin.add("bot", { rpm: 3, usdPerDay: 1 });
  fake.reply(() => answerCosting(0.25));
  for (let i = 0; i < 3; i++) expect((await first.chat(key)).status).toBe(200);
  await first.proxy.stop(0);
  const stored = JSON.parse(await readFile(first.proxy.keysFile, "utf8")) as { clients: { bot: { usage: { minute: { requests: number }; day: { cost: number } } } } };
  expect(stored.clients.bot.usage.minute.requests).toBe(3);
  expect(stored.clients.bot.usage.day.cost).toBeCloseTo(0.75, 9);
  const second = await start({}, dir);
  const refused = await second.chat(key);
  expect(refused.status).toBe(429);
  expect(errorOf(refused.json).code).toBe("client_rate_limited");
  second.clock.now = Date.parse("2026-12-04T12:01:00Z");
  expect((await second.chat(key)).status).toBe(200); // $1.00 spent now
  const spent = await second.chat(key);
  expect(errorOf(spent.json).code).toBe("client_budget_exceeded");
});

test("add-client with the CLI beside a running server: the new key works within a poll", async () => {
  const { chat, proxy } = await start();
  const added = await runKeyPrintingCli(["add-client", "erin", "--models", "openai/*"], { cwd: proxy.dir, env: { KEYS_FILE: proxy.keysFile }, log, secrets });
  expect(added.code).toBe(0);
  // Open until the first client exists; then a key is needed.
  await eventually(async () => (await chat(undefined)).status === 401, { what: "the new client to be adopted" });
  expect((await chat(added.key)).status).toBe(200);
  expect((await chat(added.key, { model: "anthropic/claude-3.5-sonnet" })).status).toBe(403);
});

test("the real openai client works end to end with a client key as apiKey, and reads the proxy's refusals", async () => {
  const { admin, proxy } = await start();
  const key = await admin.add("sdk", { models: ["openai/*"], rpm: 2 });
  const client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: key, maxRetries: 0 });
  const answer = await client.chat.completions.create({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
  expect(answer.choices[0]?.message.content).toContain("hello from");
  const forbidden = await client.chat.completions.create({ model: "anthropic/claude-3.5-sonnet", messages: [{ role: "user", content: "hi" }] }).catch((error: unknown) => error);
  expect(forbidden).toBeInstanceOf(OpenAI.PermissionDeniedError);
  expect((forbidden as InstanceType<typeof OpenAI.APIError>).code).toBe("model_not_allowed");
  await client.chat.completions.create({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
  const limited = await client.chat.completions.create({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }).catch((error: unknown) => error);
  expect(limited).toBeInstanceOf(OpenAI.RateLimitError);
  expect((limited as InstanceType<typeof OpenAI.APIError>).code).toBe("client_rate_limited");
  const stranger = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: "sk-orp-guessed", maxRetries: 0 });
  expect(await stranger.models.list().catch((error: unknown) => error)).toBeInstanceOf(OpenAI.AuthenticationError);
});

test("admin API: GET/POST /admin/clients, PATCH/DELETE /admin/clients/:name, POST …/rotate, with OpenAI-shaped errors", async () => {
  const { admin, proxy } = await start();
  const created = await admin.call("POST", "/clients", { name: "app", models: "openai/*,*:free", rpm: 5, usdPerMonth: 20, expires: "2027-06-01" });
  expect(created.status).toBe(201);
  expect(created.json.client).toMatchObject({ name: "app", models: ["openai/*", "*:free"], limits: { rpm: 5, usdPerMonth: 20 }, expires: "2027-06-01T00:00:00.000Z" });
  const listed = await admin.call("GET", "/clients");
  expect((listed.json.clients as unknown[]).length).toBe(1);
  expect(JSON.stringify(listed.json)).not.toContain("keySha256");
  const patched = await admin.call("PATCH", "/clients/app", { rpm: null, tpm: 900 });
  expect(patched.json.client).toMatchObject({ limits: { rpm: null, tpm: 900, usdPerMonth: 20 } });
  for (const [method, path, body, status, code] of [
    ["POST", "/clients", { name: "app" }, 409, "client_exists"],
    ["POST", "/clients", { name: "bad name" }, 400, "invalid_client_name"],
    ["POST", "/clients", { name: "x", rpm: "fast" }, 400, "invalid_body"],
    ["POST", "/clients", { name: "x", colour: "red" }, 400, "invalid_body"],
    ["POST", "/clients", "{not json", 400, "invalid_body"],
    ["PATCH", "/clients/nobody", { rpm: 1 }, 404, "client_not_found"],
    ["DELETE", "/clients/nobody", undefined, 404, "client_not_found"],
    ["POST", "/clients/nobody/rotate", undefined, 404, "client_not_found"],
  ] as const) {
    const answer = await admin.call(method, path, body);
    expect(answer.status).toBe(status);
    expect(answer.json.error).toMatchObject({ code });
    expect(typeof (answer.json.error as { message: string }).message).toBe("string");
  }
  const noToken = await fetch(`${proxy.url}/admin/clients`);
  log.record(await noToken.clone().text());
  expect(noToken.status).toBe(401);
  expect(((await noToken.json()) as { error: { code: string } }).error.code).toBe("invalid_admin_token");
  expect((await admin.call("DELETE", "/clients/app")).status).toBe(204);
});

test("once a client key exists the key guards the proxy: any Host name is answered, as with PROXY_API_KEYS", async () => {
  const { admin, proxy } = await start();
  const port = Number(new URL(proxy.url).port);
  const get = (authorization: string) => rawRequest(port, `GET /v1/models HTTP/1.1\r\nHost: proxy.team.example\r\n${authorization}Connection: close\r\n\r\n`);
  expect((await get("")).status).toBe(421); // open: only loopback names, HOST and ALLOWED_HOSTS
  const key = await admin.add("alice");
  const refused = await get("");
  log.record(refused.body);
  expect(refused.status).toBe(401);
  const served = await get(`Authorization: Bearer ${key}\r\n`);
  log.record(served.body);
  expect(served.status).toBe(200);
  // Nor the open mode's Sec-Fetch-Site check: a page's no-cors request carries no key, so the key check refuses it.
  const fromPage = await get("Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\n");
  log.record(fromPage.body);
  expect(fromPage.status).toBe(401);
});

test("a keys file whose clients section is broken: the server refuses to start, says where, and leaves the file untouched", async () => {
  const dir = await folder();
  const keysFile = `${dir}/keys.json`;
  const text = JSON.stringify({ keys: [{ key: testKeys[0] }], clients: { alice: { keySha256: "not-a-hash", createdAt: "2026-12-01T00:00:00Z" } } });
  await Bun.write(keysFile, text);
  const refused = await startTestProxy({ upstream: fake.url, keys: null, dir }).then(
    () => "started",
    (error: unknown) => String(error),
  );
  expect(refused).toContain("clients section is invalid at clients.alice.keySha256");
  expect(refused).toContain("left untouched");
  expect(await readFile(keysFile, "utf8")).toBe(text);
});

test("a clients section broken while the server runs is reported once; the clients held in memory keep working and the section is not written over", async () => {
  const { admin, chat, proxy } = await start();
  const key = await admin.add("alice", { rpm: 100 });
  expect((await chat(key)).status).toBe(200);
  await proxy.sync.flush();
  const broken = JSON.stringify({ keys: testKeys.map((each) => ({ key: each })), clients: { alice: { keySha256: 42 } } });
  await Bun.write(proxy.keysFile, broken);
  await eventually(() => proxy.output.err.includes("clients section is invalid"), { what: "the broken section to be reported" });
  expect((await chat(key)).status).toBe(200);
  await proxy.sync.flush();
  // The key sync may rewrite the file for its own state; the section stays as the person left it.
  expect((JSON.parse(await readFile(proxy.keysFile, "utf8")) as { clients: unknown }).clients).toEqual({ alice: { keySha256: 42 } });
  expect(proxy.output.err.split("clients section is invalid").length - 1).toBe(1);
});

test("the counters survive a restart of the real process (SIGTERM saves them)", async () => {
  const dir = await folder();
  const env = { OPENROUTER_BASE_URL: fake.url, KEYS_FILE: `${dir}/keys.json`, LOG_DIR: `${dir}/logs`, RETRY_BACKOFF_MS: "0" };
  await Bun.write(env.KEYS_FILE, JSON.stringify({ keys: testKeys.map((key) => ({ key })) }));
  const added = await runKeyPrintingCli(["add-client", "nightly", "--rpd", "3"], { cwd: dir, env, log, secrets });
  expect(added.code).toBe(0);
  const send = async (url: string) => {
    const response = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${added.key}` },
      body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
    });
    log.record(await response.text());
    return response.status;
  };
  const first = await startProxyProcess({ cwd: dir, env });
  await first.waitForStdout(/1 client key from .*keys\.json: \/v1 needs one/);
  for (let i = 0; i < 3; i++) expect(await send(first.url)).toBe(200);
  first.signal("SIGTERM");
  expect(await first.exited).toBe(0);
  log.record(first.stdout(), first.stderr());
  const second = await startProxyProcess({ cwd: dir, env });
  try {
    expect(await send(second.url)).toBe(429);
    const listed = await runCli(["list-clients", "--json"], { cwd: dir, env, log });
    expect((JSON.parse(listed.stdout) as { clients: Array<{ usage: { today: { requests: number } } }> }).clients[0]?.usage.today.requests).toBe(3);
  } finally {
    await second.kill();
    log.record(second.stdout(), second.stderr());
  }
});
