/**
 * Account and management endpoints stay private: `/key`, `/auth/key`, `/auth/keys`, `/keys` (and
 * below), `/credits` and `/activity`, under `/v1` and `/api/v1`, answer 403 `endpoint_not_allowed`
 * and the upstream receives nothing, however the path is spelled (case, double or trailing
 * slashes, percent-escapes, encoded slashes and dot segments, `;params`).
 */
import { describe, expect, test } from "bun:test";
import { proxyErrorIn } from "./helpers/error-shapes.ts";
import { rawRequest } from "./helpers/raw-request.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const { fake, cleanups } = useSuite({ secrets: testKeys, reply: () => Response.json({ data: [] }) });

async function start(): Promise<TestProxy> {
  const proxy = await startTestProxy({ upstream: fake.url });
  cleanups.push(() => proxy.close());
  return proxy;
}

function expectRefused(status: number, body: string, path: string): void {
  expect(status).toBe(403);
  const error = proxyErrorIn(body, path, status);
  expect(error.code).toBe("endpoint_not_allowed");
  expect(error.type).toBe("invalid_request_error");
  expect(error.message).toContain("/credits");
}

const privatePaths = ["/key", "/auth/key", "/auth/keys", "/keys", "/keys/abc123", "/credits", "/credits/coinbase", "/activity", "/auth/keys/code"];

describe("account and management endpoints are never forwarded with a pool key", () => {
  test.each(["/v1", "/api/v1"])("every private endpoint under %s answers 403 endpoint_not_allowed to GET, POST and DELETE, and the upstream receives zero requests", async (root) => {
    const proxy = await start();
    for (const path of privatePaths) {
      for (const method of ["GET", "POST", "DELETE"]) {
        const response = await fetch(`${proxy.url}${root}${path}`, {
          method,
          headers: { "content-type": "application/json" },
          ...(method === "POST" ? { body: JSON.stringify({ name: "x" }) } : {}),
        });
        expectRefused(response.status, await response.text(), `${root}${path}`);
      }
    }
    expect(fake.requests).toHaveLength(0);
    // The same proxy does forward what is not private: the check above could have failed.
    const models = await fetch(`${proxy.url}${root}/models`);
    expect(models.status).toBe(200);
    await models.text();
    expect(fake.requests.map((request) => request.path)).toEqual(["/models"]);
  });

  const disguised = [
    "/v1/KEYS",
    "/v1/Auth/Key",
    "/v1//keys",
    "/v1/keys/",
    "/api/v1///credits//",
    "/v1/%6beys",
    "/v1/%2Fkeys",
    "/v1/chat%2f..%2fkeys",
    "/v1/chat/%2e%2e/credits",
    "/v1/x/..%2Factivity",
    "/v1/%252e%252e/%252e%252e/x",
    "/v1/keys;v=1",
    "/v1/auth%2Fkey",
    "/v1/chat/../key",
  ];
  test.each(disguised)("a private endpoint spelled %s is refused the same way, and nothing is forwarded", async (path) => {
    const proxy = await start();
    const port = Number(proxy.server.port);
    const response = await rawRequest(port, `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`);
    expectRefused(response.status, response.body, path);
    expect(fake.requests).toHaveLength(0);
  });

  test.each(["/v1/keysmith", "/v1/models/openai/gpt-4o/endpoints", "/v1/generation?id=gen-1", "/v1/credit"])("a path that only looks like one (%s) is forwarded", async (path) => {
    const proxy = await start();
    const response = await fetch(`${proxy.url}${path}`);
    expect(response.status).toBe(200);
    await response.text();
    expect(fake.requests).toHaveLength(1);
  });
});
