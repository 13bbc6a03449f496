/**
 * The APIs coding agents use, end to end with client keys: the real `@anthropic-ai/sdk` (which
 * sends its key as `x-api-key` and posts to `/api/v1/messages`) and the real openai SDK's
 * `responses.create`, whole and streamed, through the proxy to the fake OpenRouter. What each
 * answer says it used is charged to the client, whose budget then refuses; the client key never
 * goes upstream. Every output is scanned for the pool's keys and the client keys.
 */
import { afterAll, expect, test } from "bun:test";
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";
import type { RequestRecord } from "../src/domain/request-record.ts";
import {
  jsonAnswer,
  messageObject,
  messagesErrorEvent,
  messagesStreamText,
  responseObject,
  responsesErrorEvent,
  responsesFailedEvent,
  responsesStreamStart,
  responsesStreamText,
  streamAnswer,
} from "./helpers/api-shapes.ts";
import { adminClient, adminToken } from "./helpers/clients.ts";
import { killAllProxies } from "./helpers/proxy-process.ts";
import { useSuite } from "./helpers/suite.ts";
import { requestsDone, startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const secrets: string[] = [...testKeys, adminToken];
afterAll(killAllProxies);
const { fake, log, cleanups } = useSuite({ secrets });

async function start(config: Record<string, unknown> = {}): Promise<{ proxy: TestProxy; admin: ReturnType<typeof adminClient> }> {
  const proxy = await startTestProxy({ upstream: fake.url, config: { ADMIN_TOKEN: adminToken, ...config } });
  cleanups.push(async () => {
    log.record(proxy.output.out, proxy.output.err);
    await proxy.close();
  });
  return { proxy, admin: adminClient(proxy.url, log, secrets) };
}

/** Each answer of these tests: 2,000 tokens in, 2,000 out, $0.006 (the figures). */
const spent = { input: 2000, output: 2000, cost: 0.006 };

/** The client key appears in nothing the upstream received, in any header or the body. */
function expectClientKeyNeverSent(key: string) {
  for (const request of fake.requests) {
    expect(testKeys).toContain(request.key);
    expect(request.headers.get("x-api-key")).toBeNull();
    const everything = `${[...request.headers].join("\n")}\n${request.body}`;
    expect(everything.includes(key.slice(7))).toBe(false);
  }
}

async function usageOf(admin: ReturnType<typeof adminClient>, client: string) {
  const { json } = await admin.call("GET", "/usage?by=client");
  return (json.client as Record<string, { requests: number; promptTokens: number; completionTokens: number; totalTokens: number; cost: number }>)[client];
}

test("the Anthropic SDK (x-api-key, /api/v1/messages) is served on a client key; its messages' usage, whole and streamed, spends the budget until it refuses", async () => {
  const { proxy, admin } = await start();
  // Each request holds the client's average cost for the model until its usage is known ($0 at first).
  const key = await admin.add("claude", { usdPerDay: 0.013 });
  const anthropic = new Anthropic({ baseURL: `${proxy.url}/api`, apiKey: key, maxRetries: 0 });
  const ask = { model: "anthropic/claude-sonnet-4.5", max_tokens: 1024, messages: [{ role: "user" as const, content: "Hello, Claude" }] };
  fake.replyOnce(
    () => jsonAnswer(messageObject("Hi! My name is Claude.", spent)),
    () => streamAnswer(messagesStreamText(["Hi", "!"], { input: 10, output: 20, cost: 0.001 })),
  );
  const done = requestsDone(proxy, 2);
  const message = await anthropic.messages.create(ask);
  expect(message.content[0]).toMatchObject({ type: "text", text: "Hi! My name is Claude." });
  const streamed = await anthropic.messages.stream(ask).finalMessage();
  expect(streamed.content[0]).toMatchObject({ type: "text", text: "Hi!" });
  expect(streamed.usage).toMatchObject({ input_tokens: 10, output_tokens: 20 });
  await done; // a stream's usage is charged when it has ended

  expect(fake.requests.map((request) => request.path)).toEqual(["/messages", "/messages"]);
  expectClientKeyNeverSent(key);
  expect(await usageOf(admin, "claude")).toMatchObject({ requests: 2, promptTokens: 2010, completionTokens: 2020, totalTokens: 4030 });
  expect((await usageOf(admin, "claude"))?.cost).toBeCloseTo(0.007, 9);

  fake.reply(() => jsonAnswer(messageObject("Hi! My name is Claude.", spent)));
  expect((await anthropic.messages.create(ask)).id).toBeString(); // $0.007 + the $0.0035 average held fits in $0.013: $0.013 after
  const refused = await anthropic.messages.create(ask).catch((error: unknown) => error);
  expect(refused).toBeInstanceOf(Anthropic.RateLimitError);
  expect((refused as InstanceType<typeof Anthropic.RateLimitError>).message).toContain("budget");
  expect(fake.requests).toHaveLength(3);
});

test("the openai SDK's responses.create, whole and streamed, is charged what response.usage says (budget, /admin/usage, /metrics), and the budget then refuses", async () => {
  const { proxy, admin } = await start();
  // The stream holds the $0.006 the first answer cost (the client's average for the model): $0.012 fits exactly.
  const key = await admin.add("codex", { usdPerDay: 0.012, tpm: 100_000 });
  const openai = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: key, maxRetries: 0 });
  fake.replyOnce(
    () => jsonAnswer(responseObject("In a peaceful grove…", spent)),
    () => streamAnswer(responsesStreamText(["In a ", "peaceful grove…"], spent)),
  );
  const done = requestsDone(proxy, 2);
  const whole = await openai.responses.create({ model: "openai/gpt-4.1", input: "Tell me a story." });
  expect(whole.output_text).toBe("In a peaceful grove…");
  const stream = await openai.responses.create({ model: "openai/gpt-4.1", input: "Tell me a story.", stream: true });
  const deltas: string[] = [];
  let completed: OpenAI.Responses.Response | undefined;
  for await (const event of stream) {
    if (event.type === "response.output_text.delta") deltas.push(event.delta);
    if (event.type === "response.completed") completed = event.response;
  }
  expect(deltas.join("")).toBe("In a peaceful grove…");
  expect(completed?.usage?.total_tokens).toBe(4000);
  await done;

  expect(fake.requests.map((request) => request.path)).toEqual(["/responses", "/responses"]);
  expectClientKeyNeverSent(key);
  expect(await usageOf(admin, "codex")).toMatchObject({ requests: 2, promptTokens: 4000, completionTokens: 4000, totalTokens: 8000 });
  expect((await usageOf(admin, "codex"))?.cost).toBeCloseTo(0.012, 9);
  const metrics = await (await fetch(`${proxy.url}/metrics`, { headers: { authorization: `Bearer ${adminToken}` } })).text();
  log.record(metrics);
  expect(metrics).toMatch(/openrouter_proxy_tokens_total\{model="openai\/gpt-4.1",key_id="k_\w+",type="prompt",client="codex"\} 4000/);
  expect(metrics).toMatch(/openrouter_proxy_cost_usd_total\{model="openai\/gpt-4.1",key_id="k_\w+",client="codex"\} 0\.012/);

  const refused = await openai.responses.create({ model: "openai/gpt-4.1", input: "One more?" }).catch((error: unknown) => error);
  expect(refused).toBeInstanceOf(OpenAI.RateLimitError);
  expect((refused as InstanceType<typeof OpenAI.RateLimitError>).code).toBe("client_budget_exceeded");
  const refusedStream = await openai.responses.create({ model: "openai/gpt-4.1", input: "One more?", stream: true }).catch((error: unknown) => error);
  expect(refusedStream).toBeInstanceOf(OpenAI.RateLimitError);
  expect(fake.requests).toHaveLength(2);
});

test("a client key (and a PROXY_API_KEYS entry) is accepted as x-api-key, also beside an Authorization that is no key of ours, and neither header goes upstream", async () => {
  const { proxy, admin } = await start({ PROXY_API_KEYS: ["team-secret-x"] });
  secrets.push("team-secret-x");
  const key = await admin.add("agent");
  const send = (headers: Record<string, string>) =>
    fetch(`${proxy.url}/api/v1/messages`, {
      method: "POST",
      headers: { "content-type": "application/json", ...headers },
      body: JSON.stringify({ model: "anthropic/claude-sonnet-4.5", max_tokens: 10, messages: [{ role: "user", content: "hi" }] }),
    }).then(async (response) => {
      log.record(await response.text());
      return response.status;
    });
  fake.reply(() => jsonAnswer(messageObject("Hi", { input: 1, output: 1 })));
  const accepted: Array<Record<string, string>> = [
    { "x-api-key": key },
    { "x-api-key": "team-secret-x" },
    { "x-api-key": key, authorization: "Bearer placeholder-not-a-key" },
    { "x-api-key": key, authorization: "Basic dXNlcjpwYXNz" },
    { authorization: `Bearer ${key}`, "x-api-key": "placeholder-not-a-key" },
  ];
  for (const headers of accepted) expect(await send(headers)).toBe(200);
  expect(await send({ "x-api-key": "sk-orp-not-a-real-key" })).toBe(401);
  expect(await send({ authorization: "Bearer team-secret-y", "x-api-key": "placeholder" })).toBe(401);
  expect(fake.requests).toHaveLength(5);
  expectClientKeyNeverSent(key);
  for (const request of fake.requests) expect(`${[...request.headers].join("\n")}`.includes("team-secret-x")).toBe(false);
});

/** The record of the next request to end. */
function nextRecord(proxy: TestProxy): Promise<RequestRecord> {
  return new Promise((resolve) => {
    const off = proxy.events.on("request.done", (record) => {
      off();
      resolve(record);
    });
  });
}

test.each([
  ["a Responses `error` event", "/responses", responsesErrorEvent, responsesStreamText(["Fine"], spent)],
  ["a Responses `response.failed` event", "/responses", responsesFailedEvent, responsesStreamText(["Fine"], spent)],
  ["an Anthropic `event: error`", "/messages", messagesErrorEvent, messagesStreamText(["Fine"], spent)],
])("%s before any content is retried on another key, invisibly, as a chat stream's error chunk is", async (_what, path, errorEvent, good) => {
  const { proxy } = await start();
  fake.replyOnce(
    () => streamAnswer(`: OPENROUTER PROCESSING\n\n${errorEvent}`),
    () => streamAnswer(good),
  );
  const recorded = nextRecord(proxy);
  const response = await fetch(`${proxy.url}/v1${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "openai/gpt-4.1", stream: true, input: "hi" }) });
  expect(response.status).toBe(200);
  expect(response.headers.get("x-proxy-attempts")).toBe("2");
  expect(await response.text()).toBe(good);
  const record = await recorded;
  expect(record.usage).toMatchObject({ totalTokens: 4000, cost: 0.006 });
  expect(record.error).toBeUndefined();
});

test.each([
  ["a Responses `error` event", "/responses", `${responsesStreamStart()}${responsesErrorEvent}`, "server_error: The model failed to generate a response."],
  ["a Responses `response.failed` event", "/responses", `${responsesStreamStart()}${responsesFailedEvent}`, "server_error: The model failed to generate a response."],
  ["an Anthropic `event: error`", "/messages", `${messagesStreamText(["Hel"], spent).split("event: content_block_stop")[0]}${messagesErrorEvent}`, "overloaded_error: Overloaded"],
])("%s after content passes through untouched and is the record's late error", async (_what, path, sent, error) => {
  const { proxy } = await start();
  fake.replyOnce(() => streamAnswer(sent));
  const recorded = nextRecord(proxy);
  const response = await fetch(`${proxy.url}/v1${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model: "openai/gpt-4.1", stream: true, input: "hi" }) });
  expect(await response.text()).toBe(sent);
  expect(fake.requests).toHaveLength(1);
  expect((await recorded).error).toBe(`error inside the answer: ${error}`);
});
