/**
 * The HTTP surface around the proxy path: the admin API under /admin (on only with ADMIN_TOKEN),
 * /healthz and /readyz, the client keys of PROXY_API_KEYS, and the refusal to run an open proxy on
 * a non-loopback HOST. The real proxy wiring runs in-process on a loopback port against the fake
 * upstream; every response body and header a test receives is scanned for the secrets.
 */
import { describe, expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { defaultConfig } from "../src/config.ts";
import { keyIdOf, maskKey } from "../src/domain/key-identity.ts";
import { startProxy } from "../src/compose.ts";
import { runCli, unreachableUpstream } from "./helpers/cli.ts";
import { chatCompletion, errorReply } from "./helpers/fake-openrouter.ts";
import { keyEndpoint } from "./helpers/key-endpoint.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, tempDir, testKeys, type TestProxy, type TestProxyOptions } from "./helpers/test-proxy.ts";

const [keyA, keyB] = testKeys as [string, string];
const keyD = "sk-or-v1-test-dddddddddddddddddddddddddddddddddddddd";
const [idA, idB, idD] = [keyA, keyB, keyD].map(keyIdOf) as [string, string, string];
const adminToken = "admin-token-0123456789";
const clientKeys = ["client-key-one-0123456789", "client-key-two-0123456789"];
const secrets = [...testKeys, keyD, adminToken, ...clientKeys];

const { fake, log, cleanups } = useSuite({ secrets, reply: keyEndpoint(() => true, () => chatCompletion("hello")) });

async function start(options: Partial<TestProxyOptions> = {}): Promise<TestProxy> {
  const proxy = await startTestProxy({ upstream: fake.url, ...options, config: { ADMIN_TOKEN: adminToken, ...options.config } });
  cleanups.push(() => proxy.close());
  return proxy;
}

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  json: () => unknown;
  /** The JSON body, typed by the caller. */
  body: <T>() => T;
}

/** An HTTP exchange with the proxy, recorded (body and headers) for the secret scan. */
async function call(proxy: TestProxy, path: string, { token, ...init }: RequestInit & { token?: string | null } = {}): Promise<Answer> {
  const headers = new Headers(init.headers);
  if (token !== null && path.startsWith("/admin")) headers.set("authorization", `Bearer ${token ?? adminToken}`);
  const response = await fetch(`${proxy.url}${path}`, { ...init, headers });
  const text = await response.text();
  log.record(text, JSON.stringify([...response.headers]));
  return { status: response.status, headers: response.headers, text, json: () => JSON.parse(text) as unknown, body: <T>() => JSON.parse(text) as T };
}

const post = (proxy: TestProxy, path: string, body: unknown, init: RequestInit & { token?: string | null } = {}) =>
  call(proxy, path, { method: "POST", body: typeof body === "string" ? body : JSON.stringify(body), headers: { "content-type": "application/json" }, ...init });

const chat = (proxy: TestProxy, bearer = "anything", prefix = "/v1") =>
  call(proxy, `${prefix}/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", ...(bearer ? { authorization: `Bearer ${bearer}` } : {}) },
    body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
  });

const recordOf = (proxy: TestProxy, id: string) => proxy.pool.records().find((record) => record.id === id);
const storedIds = async (proxy: TestProxy) => (JSON.parse(await readFile(proxy.keysFile, "utf8")) as { keys: Array<{ key: string }> }).keys.map((entry) => keyIdOf(entry.key));
const keyChecks = () => fake.requests.filter((request) => request.path === "/key").map((request) => request.key);
const rateLimited = (until: number) => errorReply(429, "Rate limit exceeded: slow down", { headers: { "X-RateLimit-Reset": String(until) } });

describe("admin API switched off", () => {
  test.each([
    ["GET", "/admin/keys"],
    ["POST", "/admin/keys"],
    ["DELETE", `/admin/keys/${idA}`],
    ["POST", `/admin/keys/${idA}/enable`],
  ])("without ADMIN_TOKEN, %s %s answers 404 saying how to enable the admin API", async (method, path) => {
    const proxy = await start({ config: { ADMIN_TOKEN: undefined } });
    const answer = await call(proxy, path, { method, ...(method === "POST" ? { body: JSON.stringify({ key: keyD }) } : {}) });
    expect(answer.status).toBe(404);
    expect(answer.json()).toEqual({
      error: {
        message: "the admin API is off: set ADMIN_TOKEN to enable it, then send Authorization: Bearer <ADMIN_TOKEN>",
        type: "not_found_error",
        code: "admin_disabled",
      },
    });
    expect(proxy.pool.records().map((record) => record.id)).toEqual(testKeys.map(keyIdOf));
  });
});

describe("admin authentication", () => {
  test.each([
    ["no Authorization header", null],
    ["a wrong token", "wrong-token-0123456789"],
    ["the token's prefix", adminToken.slice(0, -1)],
    ["the token with more after it", `${adminToken}x`],
    ["a client key from PROXY_API_KEYS", clientKeys[0] as string],
  ])("%s gets 401 from the admin API and changes nothing", async (_what, token) => {
    const proxy = await start({ config: { PROXY_API_KEYS: clientKeys } });
    for (const [method, path] of [["GET", "/admin/keys"], ["DELETE", `/admin/keys/${idA}`]] as const) {
      const answer = await call(proxy, path, { method, token });
      expect(answer.status).toBe(401);
      expect(answer.json()).toEqual({
        error: { message: "the admin API needs Authorization: Bearer <ADMIN_TOKEN>", type: "authentication_error", code: "invalid_admin_token" },
      });
    }
    expect(recordOf(proxy, idA)).toBeDefined();
  });
});

describe("GET /admin/keys", () => {
  test("lists every key with id, label, masked key, status, cooldown, failures, disabled reason, last use, added time and requests", async () => {
    const reset = Date.now() + 600_000;
    fake.reply((request) => (request.key === keyA ? rateLimited(reset) : chatCompletion("ok")));
    const proxy = await start({ keys: [keyA, keyB] });
    expect((await chat(proxy)).status).toBe(200); // keyA answers 429 and cools down; keyB serves

    const answer = await call(proxy, "/admin/keys");
    expect(answer.status).toBe(200);
    const { keys } = answer.body<{ keys: Array<Record<string, unknown>> }>();
    expect(keys).toHaveLength(2);
    for (const view of keys) {
      for (const field of ["id", "label", "masked", "status", "cooldownUntil", "consecutiveFailures", "disabledReason", "lastUsedAt", "addedAt", "requests"]) {
        expect(view).toHaveProperty(field);
      }
    }
    expect(keys[0]).toMatchObject({
      id: idA,
      label: "key-0",
      masked: maskKey(keyA),
      status: "cooling",
      cooldownUntil: new Date(reset).toISOString(),
      cooldownReason: "Rate limit exceeded: slow down",
      consecutiveFailures: 0,
      disabledReason: null,
      requests: 1,
    });
    expect(keys[1]).toMatchObject({ id: idB, label: "key-1", masked: maskKey(keyB), status: "active", cooldownUntil: null, requests: 1, successes: 1 });
    expect(Date.parse(keys[1]?.lastUsedAt as string)).toBeGreaterThan(Date.now() - 60_000);
    expect(Date.parse(keys[1]?.addedAt as string)).not.toBeNaN();
  });
});

describe("POST /admin/keys", () => {
  test("a new key is checked with GET /key, added (201 with the new entry) and in the rotation and the file at once", async () => {
    fake.reply(keyEndpoint(() => true, (request) => chatCompletion(`served by ${request.key.slice(-4)}`)));
    const proxy = await start({ keys: [] });
    const answer = await post(proxy, "/admin/keys", { key: keyD, label: "new" });
    expect(answer.status).toBe(201);
    expect(answer.json()).toMatchObject({ outcome: "added", key: { id: idD, label: "new", masked: maskKey(keyD), status: "active", requests: 0 } });
    expect(keyChecks()).toEqual([keyD]);
    expect(await storedIds(proxy)).toEqual([idD]);
    const served = await chat(proxy);
    expect(served.status).toBe(200);
    expect(fake.requests.at(-1)?.key).toBe(keyD);
  });

  test("a key the upstream rejects is not added: 422 with the upstream's reason", async () => {
    fake.reply(keyEndpoint(() => false));
    const proxy = await start({ keys: [keyA] });
    const answer = await post(proxy, "/admin/keys", { key: keyD });
    expect(answer.status).toBe(422);
    expect(answer.json()).toEqual({
      error: { message: "the upstream rejected this key (401: User not found.); it was not added", type: "invalid_request_error", code: "key_rejected" },
    });
    expect(recordOf(proxy, idD)).toBeUndefined();
    expect(await storedIds(proxy)).toEqual([idA]);
  });

  test("when the upstream cannot be reached the key is added (201) with a warning", async () => {
    const proxy = await startTestProxy({ upstream: await unreachableUpstream(), keys: [], config: { ADMIN_TOKEN: adminToken } });
    cleanups.push(() => proxy.close());
    const answer = await post(proxy, "/admin/keys", { key: keyD });
    expect(answer.status).toBe(201);
    const body = answer.body<{ outcome: string; warning: string }>();
    expect(body.outcome).toBe("added");
    expect(body.warning).toStartWith("could not verify the key: ");
    expect(body.warning).toEndWith("; added anyway");
    expect(recordOf(proxy, idD)).toBeDefined();
  });

  test('with "verify": false the key is added without asking the upstream', async () => {
    fake.reply(keyEndpoint(() => false));
    const proxy = await start({ keys: [] });
    const answer = await post(proxy, "/admin/keys", { key: keyD, verify: false });
    expect(answer.status).toBe(201);
    expect(keyChecks()).toEqual([]);
    expect(recordOf(proxy, idD)).toBeDefined();
  });

  test("a key already present answers 200 and changes nothing", async () => {
    const proxy = await start({ keys: [keyA] });
    const before = await readFile(proxy.keysFile, "utf8");
    const answer = await post(proxy, "/admin/keys", { key: keyA, label: "other", verify: false });
    expect(answer.status).toBe(200);
    expect(answer.json()).toMatchObject({ outcome: "present", key: { id: idA, label: "key-0", status: "active" } });
    expect(await readFile(proxy.keysFile, "utf8")).toBe(before);
  });

  test("a key the server has disabled, posted again, is re-enabled (200) and serves again", async () => {
    fake.reply((request) => (request.key === keyA ? errorReply(401, "User not found.") : chatCompletion("ok")));
    const proxy = await start({ keys: [keyA], config: { FAILURE_THRESHOLD: 1, MAX_ATTEMPTS: 1 } });
    expect((await chat(proxy)).status).toBe(401);
    expect(recordOf(proxy, idA)?.disabled).toBeDefined();

    const answer = await post(proxy, "/admin/keys", { key: keyA, verify: false });
    expect(answer.status).toBe(200);
    expect(answer.json()).toMatchObject({ outcome: "re-enabled", key: { id: idA, status: "active", consecutiveFailures: 0, disabledReason: null } });
    fake.reply(() => chatCompletion("ok"));
    expect((await chat(proxy)).status).toBe(200);
  });

  test.each([
    ["not JSON", "{key:", "body: not JSON"],
    ["an array", "[]", "body: "],
    ["no key", {}, "key: key must be a string"],
    ["a key that is not a string", { key: 5 }, "key: key must be a string"],
    ["an empty key", { key: "  " }, "key: key must not be empty"],
    ["a key with spaces", { key: "sk-or-v1 abc" }, "key: key must not contain spaces"],
    ["a label that is not a string", { key: keyD, label: 7 }, "label: label must be a string"],
    ["verify that is not a boolean", { key: keyD, verify: "no" }, "verify: verify must be true or false"],
    ["an unknown field", { key: keyD, lable: "typo" }, "body: unknown field lable"],
  ])("a body with %s gets 400 with a message naming the field", async (_what, body, message) => {
    const proxy = await start({ keys: [] });
    const answer = await post(proxy, "/admin/keys", body);
    expect(answer.status).toBe(400);
    const { error } = answer.body<{ error: { message: string; type: string; code: string } }>();
    expect(error.message).toStartWith(message);
    expect(error).toMatchObject({ type: "invalid_request_error", code: "invalid_body" });
    expect(proxy.pool.records()).toEqual([]);
    expect(keyChecks()).toEqual([]);
  });
});

describe("DELETE /admin/keys/:id and POST /admin/keys/:id/enable", () => {
  test("DELETE removes the key (204) from the rotation and the file", async () => {
    const proxy = await start({ keys: [keyA, keyB] });
    const answer = await call(proxy, `/admin/keys/${idA}`, { method: "DELETE" });
    expect(answer.status).toBe(204);
    expect(answer.text).toBe("");
    expect(proxy.pool.records().map((record) => record.id)).toEqual([idB]);
    expect(await storedIds(proxy)).toEqual([idB]);
    expect((await chat(proxy)).status).toBe(200);
    expect(fake.requests.at(-1)?.key).toBe(keyB);
  });

  test.each(["DELETE", "POST"])("%s on an unknown id answers 404 and says where the ids are", async (method) => {
    const proxy = await start({ keys: [keyA] });
    const answer = await call(proxy, method === "DELETE" ? "/admin/keys/k_0000000000" : "/admin/keys/k_0000000000/enable", { method });
    expect(answer.status).toBe(404);
    expect(answer.json()).toEqual({ error: { message: "no key with id k_0000000000: GET /admin/keys lists the ids", type: "not_found_error", code: "key_not_found" } });
    expect(proxy.pool.records().map((record) => record.id)).toEqual([idA]);
  });

  test("a key sent where its id belongs is not echoed back in the 404", async () => {
    const proxy = await start({ keys: [keyA] });
    const answer = await call(proxy, `/admin/keys/${keyA}`, { method: "DELETE" });
    expect(answer.status).toBe(404);
    expect(answer.body<{ error: { message: string } }>().error.message).toStartWith(`no key with id ${maskKey(keyA)}:`);
  });

  test("enable clears the disabled mark, failures and cooldown (200) and the key serves again", async () => {
    fake.reply(() => errorReply(401, "User not found."));
    const proxy = await start({ keys: [keyA], config: { FAILURE_THRESHOLD: 2, MAX_ATTEMPTS: 1 } });
    expect((await chat(proxy)).status).toBe(401);
    expect((await chat(proxy)).status).toBe(401);
    expect(recordOf(proxy, idA)).toMatchObject({ consecutiveFailures: 2, disabled: { reason: expect.stringContaining("2 consecutive failures") } });

    const answer = await post(proxy, `/admin/keys/${idA}/enable`, "");
    expect(answer.status).toBe(200);
    expect(answer.json()).toMatchObject({ key: { id: idA, status: "active", consecutiveFailures: 0, disabledReason: null, cooldownUntil: null } });
    expect(recordOf(proxy, idA)?.disabled).toBeUndefined();
    fake.reply(() => chatCompletion("ok"));
    expect((await chat(proxy)).status).toBe(200);
  });
});

describe("health", () => {
  test("/healthz answers 200 without any token, even with no keys, admin token or client keys configured", async () => {
    const proxy = await start({ keys: null, config: { PROXY_API_KEYS: clientKeys } });
    const answer = await call(proxy, "/healthz");
    expect(answer.status).toBe(200);
    expect(answer.json()).toEqual({ status: "ok" });
  });

  test("/readyz answers 200 without any token while a key is available", async () => {
    const proxy = await start({ keys: [keyA], config: { PROXY_API_KEYS: clientKeys } });
    const answer = await call(proxy, "/readyz");
    expect(answer.status).toBe(200);
    expect(answer.json()).toMatchObject({ status: "ready", total: 1, available: 1 });
  });

  test("/readyz answers 503 saying how to add a key when there are none", async () => {
    const proxy = await start({ keys: null });
    const answer = await call(proxy, "/readyz");
    expect(answer.status).toBe(503);
    expect(answer.json()).toMatchObject({ status: "unavailable", reason: "no keys configured: add one with `openrouter-proxy add-key`", total: 0 });
  });

  test("/readyz answers 503 saying when the first key returns while every key cools down", async () => {
    const reset = Date.now() + 600_000;
    fake.reply(() => rateLimited(reset));
    const proxy = await start({ keys: [keyA] });
    expect((await chat(proxy)).status).toBe(429);
    const answer = await call(proxy, "/readyz");
    expect(answer.status).toBe(503);
    expect(answer.json()).toMatchObject({
      status: "unavailable",
      reason: `all available keys are cooling down; the first returns at ${new Date(reset).toISOString()}`,
      cooling: 1,
      nextAvailableAt: reset,
    });
  });

  test("/readyz answers 503 saying how to re-enable a key when every key is disabled", async () => {
    fake.reply(() => errorReply(401, "User not found."));
    const proxy = await start({ keys: [keyA], config: { FAILURE_THRESHOLD: 1, MAX_ATTEMPTS: 1 } });
    expect((await chat(proxy)).status).toBe(401);
    const answer = await call(proxy, "/readyz");
    expect(answer.status).toBe(503);
    expect(answer.body<{ reason: string }>().reason).toContain("disabled: re-enable one with `openrouter-proxy enable-key <id>`");
  });
});

describe("PROXY_API_KEYS", () => {
  test.each([
    ["/v1", "no bearer", ""],
    ["/v1", "a wrong bearer", "not-a-client-key"],
    ["/api/v1", "no bearer", ""],
    ["/api/v1", "a pool key as bearer", keyA],
  ])("with PROXY_API_KEYS set, %s with %s gets an OpenAI-shaped 401 and the upstream is not called", async (prefix, _what, bearer) => {
    const proxy = await start({ config: { PROXY_API_KEYS: clientKeys } });
    const answer = await chat(proxy, bearer, prefix);
    expect(answer.status).toBe(401);
    expect(answer.json()).toEqual({
      error: { message: "this proxy needs an API key: send Authorization: Bearer <one of PROXY_API_KEYS> (or x-api-key: <it>)", type: "authentication_error", code: "invalid_api_key" },
    });
    expect(fake.requests).toEqual([]);
  });

  test.each([
    ["/v1", "the first key as bearer", { authorization: `Bearer ${clientKeys[0]}` }],
    ["/api/v1", "the second key as bearer", { authorization: `Bearer ${clientKeys[1]}` }],
    ["/v1", "a key as x-api-key", { "x-api-key": clientKeys[1] as string }],
  ])("a client key from the list is accepted on %s (%s) and the upstream sees a pool key instead", async (prefix, _how, headers) => {
    const proxy = await start({ keys: [keyA], config: { PROXY_API_KEYS: clientKeys } });
    const answer = await call(proxy, `${prefix}/models`, { headers });
    expect(answer.status).toBe(200);
    expect(fake.requests).toHaveLength(1);
    expect(fake.requests[0]?.key).toBe(keyA);
    expect(fake.requests[0]?.headers.get("x-api-key")).toBeNull();
  });

  test("without PROXY_API_KEYS any bearer is accepted on loopback", async () => {
    const proxy = await start({ keys: [keyA] });
    expect((await chat(proxy, "whatever-the-client-sends")).status).toBe(200);
    expect(fake.requests[0]?.key).toBe(keyA);
  });
});

describe("open proxy", () => {
  test.each(["0.0.0.0", "::", "192.0.2.10", "example.internal"])(
    "without PROXY_API_KEYS the proxy refuses to start on HOST=%s and says why and what to do",
    async (host) => {
      const started = await startProxy(defaultConfig({ HOST: host, PORT: 0, KEYS_FILE: "/nonexistent/keys.json" }));
      expect(started.ok).toBe(false);
      const message = started.ok ? "" : started.message;
      expect(message).toStartWith(`refusing to listen on ${host} without PROXY_API_KEYS: anyone who can reach it could spend your keys.`);
      expect(message).toContain("ALLOW_OPEN_PROXY=true");
      expect(message).toContain("127.0.0.1");
    },
  );

  test("serve on a port already in use exits 2 at once with one line naming the address, leaving nothing open behind it", async () => {
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    const taken = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("someone else") });
    try {
      // runCli's time limit fails the test if a timer or a connection left open keeps the process alive.
      const { code, stdout, stderr } = await runCli(["serve", "--host", "127.0.0.1", "--port", String(taken.port)], { cwd: dir, log, env: { KEYS_FILE: join(dir, "keys.json") }, limitMs: 10_000 });
      expect(code).toBe(2);
      expect(stdout).toBe("");
      expect(stderr.trim().split("\n")).toEqual([expect.stringMatching(new RegExp(`^openrouter-proxy: cannot listen on 127\\.0\\.0\\.1:${taken.port}: `))]);
    } finally {
      taken.stop(true);
    }
  });

  test("serve on a non-loopback HOST without PROXY_API_KEYS exits 2 and says why", async () => {
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    const { code, stdout, stderr } = await runCli(["serve", "--host", "0.0.0.0", "--port", "0"], { cwd: dir, log, env: { KEYS_FILE: join(dir, "keys.json") } });
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toStartWith("openrouter-proxy: refusing to listen on 0.0.0.0 without PROXY_API_KEYS");
  });

  test("ALLOW_OPEN_PROXY=true lets it listen on 0.0.0.0 without PROXY_API_KEYS", async () => {
    const proxy = await start({ keys: [keyA], config: { HOST: "0.0.0.0", ALLOW_OPEN_PROXY: true } });
    const local = { ...proxy, url: `http://127.0.0.1:${proxy.server.port}` };
    expect((await call(local, "/healthz")).status).toBe(200);
    expect((await chat(local, "anything")).status).toBe(200);
  });

  test("with PROXY_API_KEYS set it listens on 0.0.0.0, and still asks every client for a key", async () => {
    const proxy = await start({ keys: [keyA], config: { HOST: "0.0.0.0", PROXY_API_KEYS: clientKeys } });
    const local = { ...proxy, url: `http://127.0.0.1:${proxy.server.port}` };
    expect((await chat(local, "")).status).toBe(401);
    expect((await chat(local, clientKeys[0])).status).toBe(200);
  });
});
