/**
 * HTTP hygiene: routing reads the path alone, whatever URL form Bun hands over (an HTTP/1.0
 * request without Host, an invalid Host such as `a@b`, dot segments), and the headers a client's
 * `Connection` header names, and `Expect`, are not forwarded upstream (RFC 9110 §7.6.1, §10.1.1).
 */
import { describe, expect, test } from "bun:test";
import { rawRequest } from "./helpers/raw-request.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const clientKey = "client-key-for-hygiene-0123456789";
const { fake, cleanups } = useSuite({ secrets: [...testKeys, clientKey], reply: () => Response.json({ data: [{ id: "openai/gpt-4o" }] }) });

/** With PROXY_API_KEYS set the Host check is off, so these tests see routing alone. */
async function start(): Promise<{ proxy: TestProxy; port: number }> {
  const proxy = await startTestProxy({ upstream: fake.url, config: { PROXY_API_KEYS: [clientKey] } });
  cleanups.push(() => proxy.close());
  return { proxy, port: Number(proxy.server.port) };
}

const auth = `Authorization: Bearer ${clientKey}\r\n`;

describe("routing works from the path alone, whatever URL form Bun hands over", () => {
  test("GET /v1/models over HTTP/1.0 without a Host header is served", async () => {
    const { port } = await start();
    const response = await rawRequest(port, `GET /v1/models HTTP/1.0\r\n${auth}\r\n`);
    expect(response.status).toBe(200);
    expect(JSON.parse(response.body)).toEqual({ data: [{ id: "openai/gpt-4o" }] });
    expect(fake.requests.map((request) => request.path)).toEqual(["/models"]);
  });

  test("GET /v1/models with an invalid Host (a@b) is served, its query kept", async () => {
    const { port } = await start();
    const response = await rawRequest(port, `GET /api/v1/models?supported_parameters=tools HTTP/1.1\r\nHost: a@b\r\n${auth}Connection: close\r\n\r\n`);
    expect(response.status).toBe(200);
    expect(fake.requests.map((request) => `${request.path}${request.search}`)).toEqual(["/models?supported_parameters=tools"]);
  });

  test("/healthz over HTTP/1.0 without a Host header is answered by its own route", async () => {
    const { port } = await start();
    const response = await rawRequest(port, "GET /healthz HTTP/1.0\r\n\r\n");
    expect(response.status).toBe(200);
    expect(JSON.parse(response.body)).toEqual({ status: "ok" });
  });

  const notProxied = ["/admin/v1/key", "/healthz/v1/credits", "/metrics/v1/chat/completions", "/v1/chat/../../key", "/x/api/v1/models"];
  for (const [form, head] of [
    ["HTTP/1.0 without Host", (path: string) => `GET ${path} HTTP/1.0\r\n${auth}\r\n`],
    ["an invalid Host a@b", (path: string) => `GET ${path} HTTP/1.1\r\nHost: a@b\r\n${auth}Connection: close\r\n\r\n`],
    ["a valid Host", (path: string) => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${auth}Connection: close\r\n\r\n`],
  ] as const) {
    test.each(notProxied)(`%s is never proxied (${form}): 404 from the proxy's own routes, the upstream receives zero requests`, async (path) => {
      const { port } = await start();
      const response = await rawRequest(port, head(path));
      expect(response.status).toBe(404);
      // `/admin/…` is the admin API's (off without ADMIN_TOKEN); the rest have no route.
      expect(JSON.parse(response.body).error.code).toBe(path.startsWith("/admin/") ? "admin_disabled" : "route_not_found");
      expect(fake.requests).toHaveLength(0);
    });
  }
});

describe("headers named in Connection, and Expect, are not forwarded", () => {
  test("Connection: close, X-Evil drops X-Evil; Expect: 100-continue is not sent upstream; other headers pass", async () => {
    const { port } = await start();
    const body = JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
    const response = await rawRequest(
      port,
      `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n${auth}Content-Type: application/json\r\nContent-Length: ${body.length}\r\n` +
        `Connection: close, X-Evil, x-other-hop\r\nX-Evil: drop me\r\nX-Other-Hop: me too\r\nX-Title: kept\r\nExpect: 100-continue\r\n\r\n${body}`,
    );
    expect(response.status).toBe(200);
    const upstream = fake.requests[0];
    expect(upstream?.headers.get("x-title")).toBe("kept");
    expect(upstream?.headers.get("x-evil")).toBeNull();
    expect(upstream?.headers.get("x-other-hop")).toBeNull();
    expect(upstream?.headers.get("expect")).toBeNull();
    expect(upstream?.body).toBe(body);
  });

  test("a Connection header naming something that is not a header name is ignored, and the request still served", async () => {
    const { port } = await start();
    const response = await rawRequest(port, `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\n${auth}Connection: close, "x y", X-Evil\r\nX-Evil: 1\r\n\r\n`);
    expect(response.status).toBe(200);
    expect(fake.requests[0]?.headers.get("x-evil")).toBeNull();
  });
});
