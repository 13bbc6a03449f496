/** The real `openai` npm client against the proxy, which forwards to the fake OpenRouter. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import OpenAI from "openai";
import { errorReply, sseText, startFakeOpenRouter, type FakeOpenRouter } from "./helpers/fake-openrouter.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

let fake: FakeOpenRouter;
let proxy: TestProxy;
let client: OpenAI;

beforeAll(async () => {
  fake = startFakeOpenRouter();
  proxy = await startTestProxy({ upstream: fake.url });
  client = new OpenAI({ baseURL: `${proxy.url}/v1`, apiKey: "dummy-key", maxRetries: 0 });
});
afterAll(async () => {
  await proxy.close();
  await fake.stop();
});

describe("the openai client through the proxy", () => {
  test("a non-streamed chat completion comes back as the upstream sent it", async () => {
    const completion = await client.chat.completions.create({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
    expect(completion.choices[0]?.message.content).toBe(`hello from ${testKeys[0]?.slice(-4)}`);
    expect(completion.usage?.total_tokens).toBe(8);
    const seen = fake.requests.at(-1);
    expect(JSON.parse(seen?.body ?? "{}")).toEqual({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
    expect(seen?.key).toBe(testKeys[0] as string);
  });

  test("a streamed chat completion arrives chunk by chunk with its usage chunk", async () => {
    fake.replyOnce(() => new Response(sseText(["The ", "answer ", "is 42."]), { headers: { "content-type": "text/event-stream" } }));
    const stream = await client.chat.completions.create({ model: "openai/gpt-4o-mini", stream: true, messages: [{ role: "user", content: "hi" }] });
    const parts: string[] = [];
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) {
      const content = chunk.choices[0]?.delta.content;
      if (content) parts.push(content);
      if (chunk.usage) usage = chunk.usage;
    }
    expect(parts).toEqual(["The ", "answer ", "is 42."]);
    expect(usage?.total_tokens).toBe(7);
  });

  test("a rate limit on one key is invisible to the client", async () => {
    fake.replyOnce(() => errorReply(429, "Rate limit exceeded: free-models-per-min.", { headers: { "X-RateLimit-Reset": String(Date.now() + 60_000) } }));
    const { data, response } = await client.chat.completions
      .create({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] })
      .withResponse();
    expect(data.choices[0]?.message.content).toStartWith("hello from");
    expect(response.headers.get("x-proxy-attempts")).toBe("2");
  });

  test("the proxy's own errors reach the client's error as a readable message", async () => {
    fake.reply(() => errorReply(429, "Rate limit exceeded", { headers: { "X-RateLimit-Reset": String(Date.now() + 30_000) } }));
    const error = await client.chat.completions.create({ model: "x", messages: [{ role: "user", content: "hi" }] }).catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(OpenAI.RateLimitError);
    expect((error as InstanceType<typeof OpenAI.RateLimitError>).message).toContain("all keys are rate limited");
    expect((error as InstanceType<typeof OpenAI.RateLimitError>).code).toBe("all_keys_cooling_down");
  });
});
