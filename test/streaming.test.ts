import { afterEach, describe, expect, test } from "bun:test";
import { controlledStream, errorReply, sseChunk, sseText, usageChunk } from "./helpers/fake-openrouter.ts";
import { useSuite } from "./helpers/suite.ts";
import type { RequestRecord } from "../src/domain/request-record.ts";
import { startTestProxy, type TestProxy } from "./helpers/test-proxy.ts";

const { fake } = useSuite();
let proxy: TestProxy | undefined;

afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
});

const streamBody = JSON.stringify({ model: "openai/gpt-4o-mini", stream: true, messages: [{ role: "user", content: "hi" }] });

function streamRequest(p: TestProxy, signal?: AbortSignal) {
  return fetch(`${p.url}/v1/chat/completions`, {
    method: "POST",
    body: streamBody,
    headers: { "content-type": "application/json", authorization: "Bearer dummy" },
    ...(signal ? { signal } : {}),
  });
}

const decoder = new TextDecoder();

/** Reads until the text received so far contains `marker`; returns everything read. */
interface ChunkReader {
  read(): Promise<{ done: boolean; value?: Uint8Array }>;
}

async function readUntil(reader: ChunkReader, marker: string, soFar = ""): Promise<string> {
  let text = soFar;
  while (!text.includes(marker)) {
    const { done, value } = await reader.read();
    if (done) throw new Error(`stream ended before ${JSON.stringify(marker)}; got ${JSON.stringify(text)}`);
    text += decoder.decode(value, { stream: true });
  }
  return text;
}

describe("streaming", () => {
  test("an SSE answer reaches the client byte for byte: keep-alive comments, usage chunk and [DONE] included", async () => {
    proxy = await startTestProxy({ upstream: fake.url });
    const upstreamText = sseText(["Hel", "lo", " world"]);
    fake.replyOnce(() => new Response(upstreamText, { headers: { "content-type": "text/event-stream" } }));
    const response = await streamRequest(proxy);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toBe("text/event-stream");
    expect(await response.text()).toBe(upstreamText);
  });

  test("each chunk reaches the client as soon as it arrives, before the upstream sends the next", async () => {
    proxy = await startTestProxy({ upstream: fake.url });
    const upstream = controlledStream();
    fake.replyOnce(() => upstream.response);
    // Keep-alive comments are held until the first content arrives (the commit point), then
    // the status, the comments and the content leave together.
    upstream.send(": OPENROUTER PROCESSING\n\n");
    upstream.send(sseChunk("first"));
    const response = await streamRequest(proxy);
    const reader = response.body!.getReader();
    let text = await readUntil(reader, '"first"');
    expect(text).not.toContain('"second"');
    upstream.send(sseChunk("second"));
    text = await readUntil(reader, '"second"', text);
    upstream.send(usageChunk + "data: [DONE]\n\n");
    upstream.end();
    text = await readUntil(reader, "[DONE]", text);
    expect((await reader.read()).done).toBe(true);
    expect(text).toBe(`: OPENROUTER PROCESSING\n\n${sseChunk("first")}${sseChunk("second")}${usageChunk}data: [DONE]\n\n`);
  });

  test("retries happen before the first byte: a 429 then a stream on the next key reaches the client as one clean stream", async () => {
    proxy = await startTestProxy({ upstream: fake.url });
    const upstreamText = sseText(["ok"]);
    fake.replyOnce(
      () => errorReply(429, "Rate limit exceeded: free-models-per-min.", { headers: { "X-RateLimit-Reset": String(Date.now() + 60_000) } }),
      () => new Response(upstreamText, { headers: { "content-type": "text/event-stream" } }),
    );
    const response = await streamRequest(proxy);
    expect(response.headers.get("x-proxy-attempts")).toBe("2");
    expect(await response.text()).toBe(upstreamText);
  });

  test("an upstream that dies mid-stream ends the client's stream, and nothing is retried after the first byte", async () => {
    proxy = await startTestProxy({ upstream: fake.url });
    const upstream = controlledStream();
    fake.replyOnce(() => upstream.response);
    upstream.send(sseChunk("partial"));
    const response = await streamRequest(proxy);
    const reader = response.body!.getReader();
    await readUntil(reader, '"partial"');
    upstream.cut();
    const ending = (async () => {
      for (;;) {
        const { done } = await reader.read();
        if (done) return "ended";
      }
    })().catch(() => "errored");
    expect(["ended", "errored"]).toContain(await ending);
    expect(fake.requests).toHaveLength(1);
  });

  test("an upstream silent mid-stream for longer than UPSTREAM_TIMEOUT_SECONDS is aborted and the client's stream ends", async () => {
    proxy = await startTestProxy({ upstream: fake.url, config: { UPSTREAM_TIMEOUT_SECONDS: 0.3 } });
    const upstream = controlledStream();
    fake.replyOnce(() => upstream.response);
    upstream.send(sseChunk("then silence"));
    const response = await streamRequest(proxy);
    const reader = response.body!.getReader();
    await readUntil(reader, "then silence");
    const outcome = await (async () => {
      for (;;) if ((await reader.read()).done) return "ended";
    })().catch(() => "errored");
    expect(["ended", "errored"]).toContain(outcome);
    await upstream.cancelled;
  });

  test("a long silence between chunks is not cut by the server's idle timeout", async () => {
    // The server's keep-alive idle timeout is 1 s here; the upstream pauses 2.5 s mid-stream.
    proxy = await startTestProxy({ upstream: fake.url, overrides: { idleTimeoutSeconds: 1 } });
    const upstream = controlledStream();
    fake.replyOnce(() => upstream.response);
    upstream.send(sseChunk("thinking"));
    const response = await streamRequest(proxy);
    const reader = response.body!.getReader();
    await readUntil(reader, "thinking");
    await Bun.sleep(2500); // the silence under test: nothing to await but time itself
    upstream.send(sseChunk("done thinking") + "data: [DONE]\n\n");
    upstream.end();
    const text = await readUntil(reader, "[DONE]");
    expect(text).toContain("done thinking");
  });
});

describe("client disconnect aborts the upstream request", () => {
  test("before the upstream answers", async () => {
    proxy = await startTestProxy({ upstream: fake.url });
    const client = new AbortController();
    fake.replyOnce(async (request) => {
      await request.aborted;
      return new Response("nobody is listening");
    });
    const arrived = fake.nextRequest();
    const pending = streamRequest(proxy, client.signal).catch((error: unknown) => error);
    const upstreamRequest = await arrived;
    client.abort();
    await upstreamRequest.aborted;
    expect(upstreamRequest.wasAborted()).toBe(true);
    expect(await pending).toBeInstanceOf(Error);
    expect(fake.requests).toHaveLength(1);
  });

  test("during a retry's wait, and no further attempt is made", async () => {
    let enteredWait: () => void = () => {};
    const waiting = new Promise<void>((resolve) => (enteredWait = resolve));
    let waitEnded: (aborted: boolean) => void = () => {};
    const waitOutcome = new Promise<boolean>((resolve) => (waitEnded = resolve));
    proxy = await startTestProxy({
      upstream: fake.url,
      config: { RETRY_BACKOFF_MS: 60_000 },
      overrides: {
        // The retry wait: tells the test it started, and ends only when the client leaves.
        sleep: (_ms, signal) =>
          new Promise<void>((resolve) => {
            enteredWait();
            signal.addEventListener("abort", () => {
              waitEnded(true);
              resolve();
            });
          }),
      },
    });
    const done = new Promise<RequestRecord>((resolve) => proxy!.events.on("request.done", resolve));
    fake.replyOnce(() => errorReply(502, "provider down"));
    const client = new AbortController();
    const pending = streamRequest(proxy, client.signal).catch((error: unknown) => error);
    await waiting;
    client.abort();
    expect(await waitOutcome).toBe(true);
    const record = await done;
    expect(record.aborted).toBe(true);
    expect(record.attempts).toHaveLength(1);
    expect(fake.requests).toHaveLength(1);
    expect(await pending).toBeInstanceOf(Error);
  });

  test("mid-stream", async () => {
    proxy = await startTestProxy({ upstream: fake.url });
    const upstream = controlledStream();
    fake.replyOnce(() => upstream.response);
    const arrived = fake.nextRequest();
    const client = new AbortController();
    upstream.send(sseChunk("one"));
    const response = await streamRequest(proxy, client.signal);
    const reader = response.body!.getReader();
    await readUntil(reader, '"one"');
    client.abort();
    const upstreamRequest = await arrived;
    await Promise.all([upstream.cancelled, upstreamRequest.aborted]);
    expect(upstreamRequest.wasAborted()).toBe(true);
  });
});
