import { afterEach, describe, expect, test } from "bun:test";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { chatCompletion, errorReply } from "./helpers/fake-openrouter.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const { fake } = useSuite({ reply: (request) => chatCompletion(`hello from ${request.key.slice(-4)}`) });
let proxy: TestProxy | undefined;
const [keyA, keyB, keyC] = testKeys as [string, string, string];
const [idA, idB, idC] = [keyIdOf(keyA), keyIdOf(keyB), keyIdOf(keyC)];

afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
});

async function start(options: Partial<Parameters<typeof startTestProxy>[0]> = {}) {
  proxy = await startTestProxy({ upstream: fake.url, ...options });
  return proxy;
}

const chatBody = JSON.stringify({ model: "meta-llama/llama-3.3-70b-instruct:free", messages: [{ role: "user", content: "hi" }] });

function chat(p: TestProxy, init: RequestInit = {}) {
  return fetch(`${p.url}/v1/chat/completions`, {
    method: "POST",
    body: chatBody,
    ...init,
    headers: { "content-type": "application/json", authorization: "Bearer dummy-key", ...init.headers },
  });
}

function cooldownOf(p: TestProxy, id: string) {
  const record = p.pool.records().find((candidate) => candidate.id === id);
  if (!record) throw new Error(`no key ${id}`);
  return { until: record.cooldownUntil, source: record.cooldownSource };
}

describe("forwarding", () => {
  test("the request goes upstream with its method, path, query and body bytes as they came, and the chosen key as bearer", async () => {
    const p = await start();
    const body = `{"model":"x",  "messages":[],"odd spacing":true}`;
    const response = await fetch(`${p.url}/v1/some/path?x=1&y=two`, {
      method: "PUT",
      body,
      headers: { authorization: "Bearer dummy", "content-type": "application/json", "HTTP-Referer": "https://myapp.example", "X-Title": "My App", host: "localhost:1234" },
    });
    expect(response.status).toBe(200);
    const [seen] = fake.requests;
    expect(seen?.method).toBe("PUT");
    expect(seen?.path).toBe("/some/path");
    expect(seen?.search).toBe("?x=1&y=two");
    expect(seen?.body).toBe(body);
    expect(seen?.key).toBe(keyA);
    expect(seen?.headers.get("http-referer")).toBe("https://myapp.example");
    expect(seen?.headers.get("x-title")).toBe("My App");
    // The client's Host (one this open proxy answers to: see front-door.test.ts) is not forwarded.
    expect(seen?.headers.get("host")).not.toBe("localhost:1234");
  });

  test("the same routes answer under /api/v1/", async () => {
    const p = await start();
    const response = await fetch(`${p.url}/api/v1/models`, { headers: { authorization: "Bearer x" } });
    expect(response.status).toBe(200);
    expect(fake.requests[0]?.path).toBe("/models");
    expect(fake.requests[0]?.method).toBe("GET");
  });

  test("every response carries x-request-id; proxied ones also the key's id (never the key) and the attempt count", async () => {
    const p = await start();
    const response = await chat(p);
    expect(response.headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);
    expect(response.headers.get("x-proxy-key-id")).toBe(idA);
    expect(response.headers.get("x-proxy-attempts")).toBe("1");
    const text = await response.text();
    expect(text).toContain("hello from");
    for (const key of testKeys) expect(JSON.stringify([...response.headers])).not.toContain(key);
    const notFound = await fetch(`${p.url}/nowhere`);
    expect(notFound.status).toBe(404);
    expect(notFound.headers.get("x-request-id")).toBeTruthy();
    expect(await notFound.json()).toEqual({
      error: { message: "no route for GET /nowhere: the API is under /v1/ (or /api/v1/)", type: "not_found_error", code: "route_not_found" },
    });
  });
});

describe("rate limits", () => {
  test("a 429 with X-RateLimit-Reset cools the key until that instant and retries on the next key", async () => {
    const p = await start();
    const reset = Date.now() + 90_000;
    fake.replyOnce(() => errorReply(429, "Rate limit exceeded", { headers: { "X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": String(reset) } }));
    const response = await chat(p);
    expect(response.status).toBe(200);
    expect(response.headers.get("x-proxy-attempts")).toBe("2");
    expect(response.headers.get("x-proxy-key-id")).toBe(idB);
    expect(fake.requests.map((request) => request.key)).toEqual([keyA, keyB]);
    expect(cooldownOf(p, idA)).toEqual({ until: reset, source: "header" });
  });

  test("a 429 whose reset is only in the error body's metadata cools the key until that instant", async () => {
    const p = await start();
    const reset = Date.now() + 3_600_000;
    fake.replyOnce(() =>
      errorReply(429, "Rate limit exceeded", {
        metadata: { headers: { "X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": String(reset) }, provider_name: null },
      }),
    );
    expect((await chat(p)).status).toBe(200);
    expect(cooldownOf(p, idA)).toEqual({ until: reset, source: "body" });
  });

  test("a 429 with a 10-digit reset is read as epoch seconds", async () => {
    const p = await start();
    const resetSeconds = Math.floor(Date.now() / 1000) + 120;
    fake.replyOnce(() => errorReply(429, "slow down", { headers: { "X-RateLimit-Reset": String(resetSeconds) } }));
    expect((await chat(p)).status).toBe(200);
    expect(cooldownOf(p, idA)).toEqual({ until: resetSeconds * 1000, source: "header" });
  });

  test("a 429 with Retry-After in seconds cools the key for that long", async () => {
    const p = await start();
    fake.replyOnce(() => errorReply(429, "slow down", { headers: { "Retry-After": "30" } }));
    const before = Date.now();
    expect((await chat(p)).status).toBe(200);
    const { until, source } = cooldownOf(p, idA);
    expect(source).toBe("retry-after");
    expect(until).toBeGreaterThanOrEqual(before + 30_000);
    expect(until).toBeLessThanOrEqual(Date.now() + 30_000);
  });

  test("a 429 with Retry-After as an HTTP date cools the key until that date", async () => {
    const p = await start();
    const date = new Date(Math.ceil((Date.now() + 600_000) / 1000) * 1000);
    fake.replyOnce(() => errorReply(429, "slow down", { headers: { "Retry-After": date.toUTCString() } }));
    expect((await chat(p)).status).toBe(200);
    expect(cooldownOf(p, idA)).toEqual({ until: date.getTime(), source: "retry-after" });
  });

  test("a 429 with no reset information cools the key for COOLDOWN_SECONDS", async () => {
    const p = await start({ config: { COOLDOWN_SECONDS: 42 } });
    fake.replyOnce(() => errorReply(429, "slow down"));
    const before = Date.now();
    expect((await chat(p)).status).toBe(200);
    const { until, source } = cooldownOf(p, idA);
    expect(source).toBe("default");
    expect(until).toBeGreaterThanOrEqual(before + 42_000);
    expect(until).toBeLessThanOrEqual(Date.now() + 42_000);
  });

  test("a reset in the past or over 48 h ahead falls back to COOLDOWN_SECONDS", async () => {
    const p = await start({ config: { COOLDOWN_SECONDS: 7 } });
    fake.replyOnce(
      () => errorReply(429, "old", { headers: { "X-RateLimit-Reset": String(Date.now() - 5000) } }),
      () => errorReply(429, "centuries", { headers: { "X-RateLimit-Reset": String(Date.now() * 1000) } }),
    );
    const before = Date.now();
    const response = await chat(p);
    expect(response.status).toBe(200);
    for (const id of [idA, idB]) {
      const { until, source } = cooldownOf(p, id);
      expect(source).toBe("default");
      expect(until - before).toBeLessThanOrEqual(7_000 + (Date.now() - before));
      expect(until - before).toBeGreaterThanOrEqual(7_000);
    }
  });

  test("a success whose headers say nothing remains cools the key right away, so the next request uses another key", async () => {
    const p = await start();
    const reset = Date.now() + 50_000;
    fake.replyOnce(() => chatCompletion("last one", { headers: { "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": String(reset) } }));
    expect((await chat(p)).status).toBe(200);
    expect(cooldownOf(p, idA)).toEqual({ until: reset, source: "header" });
    const second = await chat(p);
    expect(second.headers.get("x-proxy-key-id")).toBe(idB);
    expect(fake.requests.map((request) => request.key)).toEqual([keyA, keyB]);
  });

  test("when every key is cooling down the proxy answers 429 with Retry-After and says when the first returns", async () => {
    const p = await start();
    const soonest = Date.now() + 20_000;
    fake.reply((request) =>
      errorReply(429, "Rate limit exceeded", {
        headers: { "X-RateLimit-Reset": String(request.key === keyB ? soonest : soonest + 40_000) },
      }),
    );
    const response = await chat(p);
    expect(response.status).toBe(429);
    expect(fake.requests).toHaveLength(3);
    const retryAfter = Number(response.headers.get("retry-after"));
    expect(retryAfter).toBeGreaterThanOrEqual(19);
    expect(retryAfter).toBeLessThanOrEqual(20);
    const body = (await response.json()) as { error: { message: string; type: string; code: string } };
    expect(body.error.type).toBe("rate_limit_error");
    expect(body.error.code).toBe("all_keys_cooling_down");
    expect(body.error.message).toContain("3 of 3 cooling down");
    expect(body.error.message).toContain(new Date(soonest).toISOString());
    // The next request does not reach the upstream at all.
    const again = await chat(p);
    expect(again.status).toBe(429);
    expect(fake.requests).toHaveLength(3);
  });
});

describe("key failures", () => {
  test("a 401 counts a failure against the key and the request is retried on another key", async () => {
    const p = await start();
    fake.replyOnce(() => errorReply(401, "User not found."));
    const response = await chat(p);
    expect(response.status).toBe(200);
    expect(response.headers.get("x-proxy-key-id")).toBe(idB);
    expect(p.pool.records().find((record) => record.id === idA)?.consecutiveFailures).toBe(1);
  });

  test("a key is disabled at FAILURE_THRESHOLD consecutive 401s and its reason is kept", async () => {
    const p = await start({ keys: [keyA], config: { FAILURE_THRESHOLD: 2 } });
    fake.reply(() => errorReply(401, "User not found."));
    const first = await chat(p);
    expect(first.status).toBe(401);
    expect(p.pool.statusOf(p.pool.records()[0]!).state).toBe("active");
    await chat(p);
    const status = p.pool.statusOf(p.pool.records()[0]!);
    expect(status).toMatchObject({ state: "disabled" });
    expect(status.state === "disabled" ? status.reason : "").toContain("401: User not found.");
    const refused = await chat(p);
    expect(refused.status).toBe(503);
    const body = (await refused.json()) as { error: { message: string; code: string } };
    expect(body.error.code).toBe("all_keys_disabled");
    expect(body.error.message).toContain("enable-key");
    expect(fake.requests).toHaveLength(2);
  });

  test("a success resets the key's consecutive failure count", async () => {
    const p = await start({ keys: [keyA] });
    fake.replyOnce(() => errorReply(401, "bad"), () => errorReply(401, "bad"));
    await chat(p);
    await chat(p);
    expect(p.pool.records()[0]?.consecutiveFailures).toBe(2);
    expect((await chat(p)).status).toBe(200);
    expect(p.pool.records()[0]?.consecutiveFailures).toBe(0);
  });
});

describe("the request's own errors", () => {
  test.each([
    [400, "model is required"],
    [404, "No endpoints found for nope/model"],
    [413, "Request too large"],
    [422, "Unprocessable"],
    [403, "Your input was flagged for moderation"],
  ])("a %d goes back to the client as it came, without retry and without marking the key", async (status, message) => {
    const p = await start();
    const upstreamBody = JSON.stringify({ error: { code: status, message, metadata: { reasons: ["x"] } } });
    fake.reply(() => new Response(upstreamBody, { status, headers: { "content-type": "application/json", "x-upstream-thing": "kept" } }));
    const response = await chat(p);
    expect(response.status).toBe(status);
    expect(await response.text()).toBe(upstreamBody);
    expect(response.headers.get("x-upstream-thing")).toBe("kept");
    expect(response.headers.get("x-proxy-attempts")).toBe("1");
    expect(fake.requests).toHaveLength(1);
    const record = p.pool.records().find((candidate) => candidate.id === idA);
    expect(record?.consecutiveFailures).toBe(0);
    expect(p.pool.statusOf(record!).state).toBe("active");
  });
});

describe("upstream faults", () => {
  test("a 5xx is retried on another key and blames no key", async () => {
    const p = await start();
    fake.replyOnce(() => errorReply(502, "Provider returned an invalid response"));
    const response = await chat(p);
    expect(response.status).toBe(200);
    expect(response.headers.get("x-proxy-key-id")).toBe(idB);
    for (const record of p.pool.records()) expect(record.consecutiveFailures).toBe(0);
  });

  test("an OpenRouter outage answering 503 everywhere disables no key, and the last answer goes back as it came", async () => {
    const p = await start({ config: { FAILURE_THRESHOLD: 1 } });
    fake.reply(() => errorReply(503, "No available providers"));
    for (let i = 0; i < 3; i++) {
      const response = await chat(p);
      expect(response.status).toBe(503);
      expect(((await response.json()) as { error: { message: string } }).error.message).toBe("No available providers");
    }
    for (const record of p.pool.records()) expect(p.pool.statusOf(record).state).toBe("active");
  });

  test("a refused connection is retried and then answered 502 with an OpenAI-shaped error, blaming no key", async () => {
    const refusing = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("") });
    const deadUrl = `http://127.0.0.1:${refusing.port}/api/v1`;
    await refusing.stop(true);
    const p = await start({ upstream: deadUrl });
    const response = await chat(p);
    expect(response.status).toBe(502);
    const body = (await response.json()) as { error: { message: string; type: string; code: string } };
    expect(body.error.code).toBe("upstream_unreachable");
    expect(body.error.message).toContain("after 3 attempts");
    for (const record of p.pool.records()) expect(record.consecutiveFailures).toBe(0);
  });

  test("an upstream that never answers is cut after UPSTREAM_TIMEOUT_SECONDS and the request retried on another key", async () => {
    const p = await start({ config: { UPSTREAM_TIMEOUT_SECONDS: 0.2 } });
    fake.replyOnce(async (request) => {
      await request.aborted; // hangs until the proxy gives up on it
      return new Response("too late");
    });
    const response = await chat(p);
    expect(response.status).toBe(200);
    expect(response.headers.get("x-proxy-attempts")).toBe("2");
    expect(fake.requests[0]?.wasAborted()).toBe(true);
  });

  test("at most MAX_ATTEMPTS upstream attempts are made per request", async () => {
    const p = await start({ config: { MAX_ATTEMPTS: 2 } });
    fake.reply(() => errorReply(500, "Internal Server Error"));
    const response = await chat(p);
    expect(response.status).toBe(500);
    expect(response.headers.get("x-proxy-attempts")).toBe("2");
    expect(fake.requests).toHaveLength(2);
  });

  test("MAX_ATTEMPTS caps rate-limit rotation too", async () => {
    const p = await start({ config: { MAX_ATTEMPTS: 2 } });
    fake.reply(() => errorReply(429, "Rate limit exceeded", { headers: { "X-RateLimit-Reset": String(Date.now() + 60_000) } }));
    const response = await chat(p);
    expect(fake.requests.map((request) => request.key)).toEqual([keyA, keyB]);
    expect(response.status).toBe(429);
    expect(cooldownOf(p, idC).until).toBe(0);
  });
});

describe("no keys", () => {
  test("with no keys configured the proxy answers 503 saying how to add one", async () => {
    const p = await start({ keys: null });
    const response = await chat(p);
    expect(response.status).toBe(503);
    const body = (await response.json()) as { error: { message: string; type: string; code: string } };
    expect(body.error).toEqual({
      message: "no OpenRouter keys are configured: add one with `openrouter-proxy add-key` or to the keys file",
      type: "service_unavailable",
      code: "no_keys_configured",
    });
    expect(fake.requests).toHaveLength(0);
  });
});

describe("answers from paths that do not spend a key on a model", () => {
  test.each([401, 403])("a %i from a path that is not an inference path is passed back and never counts against a key", async (status) => {
    const p = await start({ keys: [keyA], config: { FAILURE_THRESHOLD: 1 } });
    fake.replyOnce(() => errorReply(status, "this endpoint needs a management key"));
    const answer = await fetch(`${p.url}/v1/generation?id=gen-1`, { headers: { authorization: "Bearer dummy-key" } });
    expect(answer.status).toBe(status);
    expect(fake.requests).toHaveLength(1); // passed back, not retried
    const record = p.pool.records().find((candidate) => candidate.id === idA);
    expect({ failures: record?.consecutiveFailures, disabled: record?.disabled }).toEqual({ failures: 0, disabled: undefined });
    expect((await chat(p)).status).toBe(200);
  });

  test("a 401 from an inference path still counts against the key", async () => {
    const p = await start({ keys: [keyA], config: { FAILURE_THRESHOLD: 1, MAX_ATTEMPTS: 1 } });
    fake.replyOnce(() => errorReply(401, "User not found."));
    expect((await chat(p)).status).toBe(401);
    expect(p.pool.records().find((candidate) => candidate.id === idA)?.disabled).toBeDefined();
  });
});
