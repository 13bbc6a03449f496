/**
 * Browsers cannot drive the proxy unless allowed (the front door, src/http/front-door.ts):
 * - a request with an `Origin` not in CORS_ORIGINS gets 403 `origin_not_allowed`, never forwarded;
 *   an allowed origin gets CORS headers on every answer; `*` only with PROXY_API_KEYS;
 * - `OPTIONS` on `/v1/*` and `/api/v1/*` is answered by the proxy, never forwarded;
 * - while open (no PROXY_API_KEYS) the `Host` must be loopback, HOST or in ALLOWED_HOSTS, else 421
 *   `host_not_allowed`, never forwarded;
 * - bodies must be `application/json` (parameters allowed), else 415.
 * The fake upstream counts what reaches it: where a rule says "never forwarded", it received zero.
 * The browser itself (fetch no-cors, a form, sendBeacon from another origin) is in front-door-browser.test.ts.
 */
import { describe, expect, test } from "bun:test";
import { loadConfig, type Config } from "../src/config.ts";
import { cliCommand, runCli } from "./helpers/cli.ts";
import { proxyErrorIn } from "./helpers/error-shapes.ts";
import { chatCompletion } from "./helpers/fake-openrouter.ts";
import { rawRequest } from "./helpers/raw-request.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const clientKey = "client-key-for-the-front-door-0123";
const adminToken = "admin-token-for-the-front-door-0123";
const { fake, log, cleanups, folder } = useSuite({ secrets: [...testKeys, clientKey, adminToken], reply: () => chatCompletion("ok") });

async function start(config: Partial<Config> = {}): Promise<{ proxy: TestProxy; port: number }> {
  const proxy = await startTestProxy({ upstream: fake.url, config });
  cleanups.push(() => proxy.close());
  return { proxy, port: Number(proxy.server.port) };
}

const chatBody = JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });

function chat(proxy: TestProxy, headers: Record<string, string> = {}, root = "/v1"): Promise<Response> {
  return fetch(`${proxy.url}${root}/chat/completions`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: chatBody });
}

/** The refusal's status and code, in the error shape of the path it answered (a Response knows its URL). */
async function expectError(response: Response, status: number, code: string): Promise<void> {
  const text = await response.text();
  log.record(text);
  const error = proxyErrorIn(text, response.url, response.status);
  expect({ status: response.status, code: error.code }).toEqual({ status, code });
  expect(error.message.length).toBeGreaterThan(30);
}

describe("a request with an Origin header is refused unless its origin is in CORS_ORIGINS", () => {
  test.each([
    ["POST", "/v1/chat/completions"],
    ["POST", "/api/v1/chat/completions"],
    ["GET", "/v1/models"],
    ["POST", "/v1/embeddings"],
  ])("an origin not listed gets 403 origin_not_allowed on %s %s, and the upstream receives zero requests", async (method, path) => {
    const { proxy } = await start({ CORS_ORIGINS: ["https://app.example.com"] });
    for (const origin of ["https://evil.example", "null", "https://app.example.com.evil.example", "http://app.example.com"]) {
      const response = await fetch(`${proxy.url}${path}`, { method, headers: { origin, "content-type": "application/json" }, ...(method === "POST" ? { body: chatBody } : {}) });
      expect(response.headers.get("access-control-allow-origin")).toBeNull();
      await expectError(response, 403, "origin_not_allowed");
    }
    expect(fake.requests).toHaveLength(0);
  });

  test("with no CORS_ORIGINS every origin is refused, on the API, the admin API and /metrics alike, and nothing is forwarded", async () => {
    const { proxy } = await start({ ADMIN_TOKEN: adminToken });
    await expectError(await chat(proxy, { origin: "http://localhost:5173" }), 403, "origin_not_allowed");
    const admin = await fetch(`${proxy.url}/admin/keys`, { headers: { origin: "http://localhost:5173", authorization: `Bearer ${adminToken}` } });
    await expectError(admin, 403, "origin_not_allowed");
    await expectError(await fetch(`${proxy.url}/metrics`, { headers: { origin: "http://localhost:5173" } }), 403, "origin_not_allowed");
    expect(fake.requests).toHaveLength(0);
    // The same requests without an Origin are served: the refusal above was the Origin's.
    expect((await chat(proxy)).status).toBe(200);
    expect(fake.requests).toHaveLength(1);
  });

  test("an allowed origin is served, with Access-Control-Allow-Origin echoing it, Vary: Origin and the useful headers exposed", async () => {
    const { proxy } = await start({ CORS_ORIGINS: ["https://app.example.com", "http://localhost:5173"] });
    const response = await chat(proxy, { origin: "http://localhost:5173" });
    expect(response.status).toBe(200);
    expect(((await response.json()) as { choices: unknown[] }).choices).toHaveLength(1);
    expect(response.headers.get("access-control-allow-origin")).toBe("http://localhost:5173");
    expect(response.headers.get("vary")).toContain("Origin");
    expect(response.headers.get("access-control-expose-headers")).toContain("x-request-id");
    expect(response.headers.get("access-control-allow-credentials")).toBeNull();
    expect(fake.requests).toHaveLength(1);
  });

  test("an allowed origin's error answers carry the CORS headers too, so the page can read them", async () => {
    const { proxy } = await start({ CORS_ORIGINS: ["https://app.example.com"], PROXY_API_KEYS: [clientKey] });
    const response = await chat(proxy, { origin: "https://app.example.com" });
    expect(response.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
    await expectError(response, 401, "invalid_api_key");
    expect(fake.requests).toHaveLength(0);
  });

  test("CORS_ORIGINS=* with PROXY_API_KEYS serves any origin with a key, echoing that origin", async () => {
    const { proxy } = await start({ CORS_ORIGINS: ["*"], PROXY_API_KEYS: [clientKey] });
    const response = await chat(proxy, { origin: "https://anywhere.example", authorization: `Bearer ${clientKey}` });
    expect(response.status).toBe(200);
    await response.text();
    expect(response.headers.get("access-control-allow-origin")).toBe("https://anywhere.example");
    expect(fake.requests).toHaveLength(1);
  });

  test("CORS_ORIGINS=* without PROXY_API_KEYS is a configuration error of one line, and serve exits 2", async () => {
    const result = loadConfig({ CORS_ORIGINS: "*" });
    expect(result.ok).toBe(false);
    const { code, stdout, stderr } = await runCli(["serve", "--port", "0"], { cwd: await folder(), env: { CORS_ORIGINS: "https://app.example.com,*" }, log });
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr.trim().split("\n")).toEqual([
      'openrouter-proxy: invalid CORS_ORIGINS="https://app.example.com,*": "*" lets any web page use the proxy, so it needs PROXY_API_KEYS set; or list the origins, such as CORS_ORIGINS=https://app.example.com',
    ]);
  });

  test.each([
    ["https://App.Example.com:443/", ["https://app.example.com"]],
    ["http://localhost:5173, http://127.0.0.1:8080", ["http://localhost:5173", "http://127.0.0.1:8080"]],
  ])("CORS_ORIGINS=%p is read as the origins browsers send: %p", (text, origins) => {
    const result = loadConfig({ CORS_ORIGINS: text });
    expect(result.ok && result.config.CORS_ORIGINS).toEqual(origins);
  });

  test.each(["https://app.example.com/path", "null", "app.example.com", "ftp://files.example.com", "https://user:pw@app.example.com"])("CORS_ORIGINS=%p is refused with one line saying what is allowed", (text) => {
    const result = loadConfig({ CORS_ORIGINS: text });
    expect(result).toEqual({ ok: false, message: expect.stringMatching(/^invalid CORS_ORIGINS=.*: expected a comma-separated list of exact origins/) });
  });
});

describe("while open, a request a browser marks as from another site is refused even without an Origin", () => {
  test.each(["cross-site", "same-site"])("Sec-Fetch-Site: %s without Origin (a no-cors GET, an image) gets 403 origin_not_allowed, never forwarded", async (site) => {
    const { proxy } = await start();
    await expectError(await fetch(`${proxy.url}/v1/models`, { headers: { "sec-fetch-site": site, "sec-fetch-mode": "no-cors" } }), 403, "origin_not_allowed");
    expect(fake.requests).toHaveLength(0);
  });

  test("Sec-Fetch-Site: same-origin or none, or a navigation from another site (a link the user follows), is served, and with PROXY_API_KEYS a keyed request is whatever its site", async () => {
    const { proxy } = await start();
    for (const site of ["same-origin", "none"]) expect((await fetch(`${proxy.url}/v1/models`, { headers: { "sec-fetch-site": site } })).status).toBe(200);
    // A link followed from another site (to the status page, say) is a navigation: let through.
    expect((await fetch(`${proxy.url}/v1/models`, { headers: { "sec-fetch-site": "cross-site", "sec-fetch-mode": "navigate" } })).status).toBe(200);
    const keyed = await start({ PROXY_API_KEYS: [clientKey] });
    const response = await fetch(`${keyed.proxy.url}/v1/models`, { headers: { "sec-fetch-site": "cross-site", authorization: `Bearer ${clientKey}` } });
    expect(response.status).toBe(200);
    expect(fake.requests).toHaveLength(4);
  });
});

describe("OPTIONS on /v1/* and /api/v1/* is answered by the proxy and never forwarded", () => {
  test.each(["/v1/chat/completions", "/api/v1/responses", "/v1/models"])("a preflight from an allowed origin on %s gets 204 with the allow headers", async (path) => {
    const { proxy } = await start({ CORS_ORIGINS: ["https://app.example.com"] });
    const response = await fetch(`${proxy.url}${path}`, {
      method: "OPTIONS",
      headers: { origin: "https://app.example.com", "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type, x-stainless-os" },
    });
    expect(response.status).toBe(204);
    expect(response.headers.get("access-control-allow-origin")).toBe("https://app.example.com");
    expect(response.headers.get("access-control-allow-methods")).toContain("POST");
    expect(response.headers.get("access-control-allow-headers")).toBe("authorization, content-type, x-stainless-os");
    expect(response.headers.get("vary")).toContain("Origin");
    expect(Number(response.headers.get("access-control-max-age"))).toBeGreaterThan(0);
    expect(fake.requests).toHaveLength(0);
  });

  test("a preflight from an origin not allowed gets 403 origin_not_allowed", async () => {
    const { proxy } = await start({ CORS_ORIGINS: ["https://app.example.com"] });
    const response = await fetch(`${proxy.url}/v1/chat/completions`, { method: "OPTIONS", headers: { origin: "https://evil.example", "access-control-request-method": "POST" } });
    expect(response.headers.get("access-control-allow-origin")).toBeNull();
    await expectError(response, 403, "origin_not_allowed");
    expect(fake.requests).toHaveLength(0);
  });

  test("OPTIONS without an Origin gets 204 with Allow, with or without PROXY_API_KEYS, and no CORS headers", async () => {
    for (const config of [{}, { PROXY_API_KEYS: [clientKey] }]) {
      const { proxy } = await start(config);
      for (const root of ["/v1", "/api/v1"]) {
        const response = await fetch(`${proxy.url}${root}/chat/completions`, { method: "OPTIONS" });
        expect(response.status).toBe(204);
        expect(response.headers.get("allow")).toContain("POST");
        expect(response.headers.get("access-control-allow-origin")).toBeNull();
      }
    }
    expect(fake.requests).toHaveLength(0);
  });
});

describe("while open (no PROXY_API_KEYS), the Host must be loopback, HOST or in ALLOWED_HOSTS", () => {
  const get = (port: number, host: string, path = "/v1/models") => rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);

  test.each(["evil.example", "evil.example:3000", "a@b", "127.0.0.1.evil.example", "127.0.0.1:80@evil.example", "[::2]:3000", "localhost.evil.example", "0.0.0.0:3000"])(
    "Host: %s gets 421 host_not_allowed on the API, the admin API and /metrics, and the upstream receives zero requests",
    async (host) => {
      const { port } = await start({ ADMIN_TOKEN: adminToken });
      for (const path of ["/v1/models", "/api/v1/chat/completions", "/admin/keys", "/metrics", "/admin/"]) {
        const response = await get(port, host, path);
        log.record(response.body);
        expect({ path, status: response.status, code: proxyErrorIn(response.body, path, response.status).code }).toEqual({ path, status: 421, code: "host_not_allowed" });
      }
      expect(fake.requests).toHaveLength(0);
    },
  );

  test.each(["localhost", "localhost:3000", "LOCALHOST:1", "127.0.0.1", "127.8.9.10:443", "[::1]:3000", "[::1]"])("Host: %s (loopback, any port) is served", async (host) => {
    const { port } = await start();
    expect((await get(port, host)).status).toBe(200);
    expect(fake.requests).toHaveLength(1);
  });

  test("the names in ALLOWED_HOSTS (any port, any case, a trailing dot) and the configured HOST are served; others are not", async () => {
    const { port } = await start({ ALLOWED_HOSTS: ["proxy.internal", "gateway.example.com"] });
    for (const host of ["proxy.internal", "Proxy.Internal:8080", "gateway.example.com.", "127.0.0.1"]) expect({ host, status: (await get(port, host)).status }).toEqual({ host, status: 200 });
    expect((await get(port, "other.internal")).status).toBe(421);
    expect(fake.requests).toHaveLength(4);
  });

  test("serve on 0.0.0.0 with ALLOW_OPEN_PROXY and ALLOWED_HOSTS (the README's gateway example) says which names it answers to, and answers only to them", async () => {
    const cwd = await folder();
    await Bun.write(`${cwd}/keys.json`, JSON.stringify({ keys: [{ key: testKeys[0], label: "only" }] }));
    const child = Bun.spawn(cliCommand(["serve", "--port", "0"]), {
      cwd,
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: cwd, HOST: "0.0.0.0", ALLOW_OPEN_PROXY: "true", ALLOWED_HOSTS: "llm-proxy.internal", OPENROUTER_BASE_URL: fake.url, LOG_DIR: `${cwd}/logs` },
      stdout: "pipe",
      stderr: "pipe",
    });
    cleanups.push(async () => {
      child.kill("SIGKILL");
      await child.exited;
    });
    // Read stdout until both lines are there: the listening line (with the port) and the names.
    let out = "";
    const reader = child.stdout.getReader();
    const decoder = new TextDecoder();
    while (!/listening on http:\/\/0\.0\.0\.0:(\d+)[\s\S]*open proxy[^\n]*\n/.test(out)) {
      const { done, value } = await reader.read();
      if (done) throw new Error(`serve ended: ${out} ${await new Response(child.stderr).text()}`);
      out += decoder.decode(value, { stream: true });
    }
    reader.releaseLock();
    log.record(out);
    expect(out).toContain("open proxy (no PROXY_API_KEYS): it answers only to the Host names localhost, 127.0.0.0/8, [::1], 0.0.0.0, llm-proxy.internal; add the names your clients use to ALLOWED_HOSTS\n");
    const port = Number(/listening on http:\/\/0\.0\.0\.0:(\d+)/.exec(out)?.[1]);
    expect((await get(port, "llm-proxy.internal:3000")).status).toBe(200);
    expect((await get(port, "192.0.2.10:3000")).status).toBe(421);
    expect(fake.requests.filter((request) => request.path === "/models")).toHaveLength(1);
  });

  test("with PROXY_API_KEYS set, any Host is served to a client with a key", async () => {
    const { port } = await start({ PROXY_API_KEYS: [clientKey] });
    const response = await rawRequest(port, `GET /v1/models HTTP/1.1\r\nHost: gateway.example.com\r\nAuthorization: Bearer ${clientKey}\r\nConnection: close\r\n\r\n`);
    expect(response.status).toBe(200);
    expect(fake.requests).toHaveLength(1);
  });

  test("/healthz and /readyz answer whatever the Host and Origin (a load balancer asks by IP)", async () => {
    const { port } = await start();
    for (const path of ["/healthz", "/readyz"]) {
      const response = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: 10.1.2.3:3000\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n`);
      expect({ path, status: response.status }).toEqual({ path, status: 200 });
    }
  });
});

describe("bodies must be sent as application/json", () => {
  test.each(["text/plain; x=json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=json", "application/jsonp", "text/json", ""])(
    "a body sent as %p gets 415 and is never forwarded",
    async (type) => {
      const { proxy } = await start();
      const response = await fetch(`${proxy.url}/v1/chat/completions`, { method: "POST", headers: type === "" ? {} : { "content-type": type }, body: new TextEncoder().encode(chatBody) });
      await expectError(response, 415, "unsupported_content_type");
      expect(fake.requests).toHaveLength(0);
    },
  );

  test.each(["application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8", " application/json "])("a body sent as %p is served", async (type) => {
    const { proxy } = await start();
    const response = await fetch(`${proxy.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": type }, body: chatBody });
    expect(response.status).toBe(200);
    await response.text();
    expect(fake.requests).toHaveLength(1);
  });
});
