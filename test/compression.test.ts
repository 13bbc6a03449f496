/**
 * Answers keep the upstream's compression when the client accepts it (src/upstream/encoded-answers.ts):
 * the model list is relayed as the upstream encoded it, while inference answers are still decoded,
 * because the proxy reads them (usage, errors, key scrubbing).
 */
import { gunzipSync, gzipSync } from "node:zlib";
import { afterEach, describe, expect, test } from "bun:test";
import type { RequestRecord } from "../src/domain/request-record.ts";
import { chatCompletion, startFakeOpenRouter, type FakeOpenRouter, type FakeRequest } from "./helpers/fake-openrouter.ts";
import { startTestProxy, type TestProxy } from "./helpers/test-proxy.ts";

let proxy: TestProxy | undefined;
let fake: FakeOpenRouter | undefined;

afterEach(async () => {
  await proxy?.close();
  await fake?.stop();
  proxy = undefined;
  fake = undefined;
});

const modelList = JSON.stringify({ data: Array.from({ length: 400 }, (_, index) => ({ id: `vendor/model-${index}`, name: `Model ${index}`, context_length: 128_000, pricing: { prompt: "0.000001", completion: "0.000002" } })) });

/** Like OpenRouter: gzip when the request accepts it, else plain. */
function maybeGzipped(request: FakeRequest, text: string): Response {
  const accepts = /\bgzip\b/.test(request.headers.get("accept-encoding") ?? "");
  if (!accepts) return new Response(text, { headers: { "content-type": "application/json" } });
  return new Response(gzipSync(text), { headers: { "content-type": "application/json", "content-encoding": "gzip" } });
}

async function start(): Promise<{ p: TestProxy; upstream: FakeOpenRouter }> {
  const upstream = startFakeOpenRouter();
  fake = upstream;
  const p = await startTestProxy({ upstream: upstream.url });
  proxy = p;
  return { p, upstream };
}

describe("answers keep the upstream's compression when the client accepts it", () => {
  test("the model list travels gzip-encoded end to end when both ends speak gzip, byte for byte as the upstream sent it", async () => {
    const { p, upstream } = await start();
    upstream.reply((request) => maybeGzipped(request, modelList));
    const response = await fetch(`${p.url}/v1/models`, { headers: { "accept-encoding": "gzip" }, decompress: false });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-encoding")).toBe("gzip");
    const bytes = new Uint8Array(await response.arrayBuffer());
    expect(bytes.byteLength).toBeLessThan(modelList.length / 4);
    expect(gunzipSync(bytes).toString()).toBe(modelList);
    expect(upstream.requests[0]?.headers.get("accept-encoding")).toBe("gzip");
  });

  test("a client that does not accept gzip gets the model list plain, and the upstream is asked for it plain", async () => {
    const { p, upstream } = await start();
    upstream.reply((request) => maybeGzipped(request, modelList));
    const response = await fetch(`${p.url}/v1/models`, { headers: { "accept-encoding": "identity" }, decompress: false });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-encoding")).toBeNull();
    expect(await response.text()).toBe(modelList);
    expect(upstream.requests[0]?.headers.get("accept-encoding")).toBe("identity");
  });

  test("an inference answer is still decoded by the proxy: the client gets plain JSON and the record has its usage", async () => {
    const { p, upstream } = await start();
    upstream.reply(async (request) => maybeGzipped(request, await chatCompletion("hello").text()));
    const records: RequestRecord[] = [];
    p.events.on("request.done", (record) => void records.push(record));
    const response = await fetch(`${p.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", "accept-encoding": "gzip" },
      body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
      decompress: false,
    });
    expect(response.status).toBe(200);
    expect(response.headers.get("content-encoding")).toBeNull();
    const answer = (await response.json()) as { choices: Array<{ message: { content: string } }> };
    expect(answer.choices[0]?.message.content).toBe("hello");
    expect(records[0]?.usage?.totalTokens).toBeGreaterThan(0);
  });

  test("an encoded error answer to the model list is passed back as it came, encoding included", async () => {
    const { p, upstream } = await start();
    const error = JSON.stringify({ error: { code: 400, message: "bad category" } });
    upstream.reply(() => new Response(gzipSync(error), { status: 400, headers: { "content-type": "application/json", "content-encoding": "gzip" } }));
    const response = await fetch(`${p.url}/v1/models?category=nope`, { headers: { "accept-encoding": "gzip" }, decompress: false });
    expect(response.status).toBe(400);
    expect(response.headers.get("content-encoding")).toBe("gzip");
    expect(gunzipSync(new Uint8Array(await response.arrayBuffer())).toString()).toBe(error);
  });
});
