/**
 * Real SDKs reading the proxy's own refusals: `@openrouter/sdk` on `/api/v1` (OpenRouter's URL
 * shape; it validates `error.code` as the HTTP status, an integer, and threw
 * `ResponseValidationError` on a string code), and the `openai` SDK on both roots. Each must
 * surface the status and the proxy's message for a refused model, a client's limit (429 with
 * Retry-After) and a pool with no keys (503). A real proxy, the fake OpenRouter on port 0.
 */
import { describe, expect, test } from "bun:test";
import { OpenRouter } from "@openrouter/sdk";
import * as sdkErrors from "@openrouter/sdk/models/errors";
import OpenAI from "openai";
import { adminClient, adminToken } from "./helpers/clients.ts";
import { chatCompletion } from "./helpers/fake-openrouter.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const secrets: string[] = [...testKeys, adminToken];
/** A served answer as OpenRouter sends it: its SDK requires `system_fingerprint` (null allowed), which the shared fake leaves out. */
async function served(): Promise<Response> {
  const answer = (await chatCompletion("hi").json()) as Record<string, unknown>;
  return Response.json({ ...answer, system_fingerprint: null });
}
const { fake, log, cleanups } = useSuite({ secrets, reply: served });

/** 2026-12-04T12:00:40Z: twenty seconds before a minute boundary, so a client's rpm window has 20 s left. */
const T0 = Date.parse("2026-12-04T12:00:40Z");
const ask = { model: "openai/gpt-4o-mini", messages: [{ role: "user" as const, content: "hi" }] };

async function start(keys: string[] = testKeys): Promise<TestProxy> {
  const proxy = await startTestProxy({ upstream: fake.url, keys, config: { ADMIN_TOKEN: adminToken }, overrides: { now: () => T0 } });
  cleanups.push(async () => {
    log.record(proxy.output.out, proxy.output.err);
    await proxy.close();
  });
  return proxy;
}

const addClient = (proxy: TestProxy, settings: Record<string, unknown>) => adminClient(proxy.url, log, secrets).add("sdk", settings);

/** OpenRouter's SDK on the proxy's `/api/v1`, with no retries: each refusal is read once, as it came. */
const openRouterSdk = (proxy: TestProxy, apiKey: string) => new OpenRouter({ serverURL: `${proxy.url}/api/v1`, apiKey, retryConfig: { strategy: "none" } });
const openAiSdk = (proxy: TestProxy, root: string, apiKey: string) => new OpenAI({ baseURL: `${proxy.url}${root}`, apiKey, maxRetries: 0 });

/** What the SDK threw, recorded for the secret scan. */
async function thrown(call: Promise<unknown>): Promise<unknown> {
  const error = await call.then(
    () => undefined,
    (caught: unknown) => caught,
  );
  log.record(String(error));
  return error;
}

/** The three refusals, each as (the proxy, a key to call with, the call made once before the refused one). */
const cases = [
  {
    what: "a model outside the client's --models",
    status: 403,
    code: "model_not_allowed",
    message: "may use only the models openai/*",
    setUp: async () => {
      const proxy = await start();
      return { proxy, key: await addClient(proxy, { models: ["openai/*"] }), model: "anthropic/claude-3.5-sonnet", warmUps: 0 };
    },
  },
  {
    what: "a client over its --rpm",
    status: 429,
    code: "client_rate_limited",
    message: "reached its limit of 1 requests per minute",
    setUp: async () => {
      const proxy = await start();
      return { proxy, key: await addClient(proxy, { rpm: 1 }), model: ask.model, warmUps: 1 };
    },
  },
  {
    what: "a pool with no keys",
    status: 503,
    code: "no_keys_configured",
    message: "no OpenRouter keys are configured",
    setUp: async () => ({ proxy: await start([]), key: "dummy-key", model: ask.model, warmUps: 0 }),
  },
] as const;

describe("@openrouter/sdk on /api/v1 reads the proxy's own errors", () => {
  test.each(cases)("$what: the SDK throws its typed $status error with the proxy's message and code, not a ResponseValidationError", async ({ status, code, message, setUp }) => {
    const { proxy, key, model, warmUps } = await setUp();
    const client = openRouterSdk(proxy, key);
    for (let i = 0; i < warmUps; i++) expect(await client.chat.send({ chatRequest: { ...ask, model } })).toMatchObject({ choices: [{ message: { content: "hi" } }] });
    const error = await thrown(client.chat.send({ chatRequest: { ...ask, model } }));
    expect(error).not.toBeInstanceOf(sdkErrors.ResponseValidationError);
    expect(error).toBeInstanceOf(sdkErrors.OpenRouterError);
    const sdkError = error as sdkErrors.OpenRouterError & { error?: { code: number; message: string; metadata?: Record<string, unknown> | null } };
    expect(sdkError.statusCode).toBe(status);
    expect(sdkError.message).toContain(message);
    expect(sdkError.error).toMatchObject({ code: status, metadata: { code } });
    if (status === 429) expect(sdkError.headers.get("retry-after")).toBe("20");
  });
});

describe("the openai SDK reads the same errors on either root", () => {
  for (const root of ["/v1", "/api/v1"]) {
    test.each(cases)(`$what on ${root}: the SDK's $status error carries the proxy's message`, async ({ status, message, setUp }) => {
      const { proxy, key, model, warmUps } = await setUp();
      const client = openAiSdk(proxy, root, key);
      for (let i = 0; i < warmUps; i++) await client.chat.completions.create({ ...ask, model });
      const error = await thrown(client.chat.completions.create({ ...ask, model }));
      expect(error).toBeInstanceOf(OpenAI.APIError);
      const apiError = error as InstanceType<typeof OpenAI.APIError>;
      expect(apiError.status).toBe(status);
      expect(apiError.message).toContain(message);
      if (status === 429) expect(apiError.headers?.get("retry-after")).toBe("20");
    });
  }
});
