/**
 * Upstream faults: connection refused, a reset in the middle of a body, a 200 whose body is not
 * JSON, broken SSE, an upstream that accepts and never answers. Each ends in a clear error or a
 * retry on another key within UPSTREAM_TIMEOUT_SECONDS per attempt; no key is blamed for the
 * upstream's fault; nothing hangs. Faults below HTTP come from a raw TCP server (`Bun.listen`)
 * that plays one scripted behaviour per connection.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { unreachableUpstream } from "./helpers/cli.ts";
import { chatCompletion, controlledStream, sseChunk, sseText, startFakeOpenRouter, usageChunk, type FakeOpenRouter } from "./helpers/fake-openrouter.ts";
import { startRawUpstream, type Behaviour, type RawUpstream } from "./helpers/raw-upstream.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

let proxy: TestProxy | undefined;
let fake: FakeOpenRouter | undefined;
let rawServer: RawUpstream | undefined;

afterEach(async () => {
  await proxy?.close();
  await fake?.stop();
  rawServer?.stop();
  proxy = undefined;
  fake = undefined;
  rawServer = undefined;
});

const chatBody = JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
const streamBody = JSON.stringify({ model: "openai/gpt-4o-mini", stream: true, messages: [{ role: "user", content: "hi" }] });

function post(p: TestProxy, body = chatBody): Promise<Response> {
  return fetch(`${p.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body });
}

/** Fails if `work` takes longer than `limitMs`: "nothing hangs". */
async function within<T>(limitMs: number, work: Promise<T>): Promise<T> {
  let timer: Timer | undefined;
  const overdue = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`still waiting after ${limitMs} ms`)), limitMs)));
  try {
    return await Promise.race([work, overdue]);
  } finally {
    clearTimeout(timer);
  }
}

/** No key carries a mark for what was the upstream's fault: no failure, no cooldown, not disabled. */
function expectNoKeyBlamed(p: TestProxy): void {
  const records = p.pool.records();
  expect(records).toHaveLength(testKeys.length);
  for (const record of records) {
    expect({ id: record.id, failures: record.failures, consecutiveFailures: record.consecutiveFailures, cooldownUntil: record.cooldownUntil, disabled: record.disabled }).toEqual({
      id: record.id,
      failures: 0,
      consecutiveFailures: 0,
      cooldownUntil: 0,
      disabled: undefined,
    });
  }
}

async function errorOf(response: Response): Promise<{ message: string; type: string; code: string }> {
  const body = (await response.json()) as { error: { message: string; type: string; code: string } };
  return body.error;
}

const okJson = JSON.stringify({ id: "gen-raw", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: "recovered" }, finish_reason: "stop" }] });
const answerOk: Behaviour = (socket) => {
  socket.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${okJson.length}\r\n\r\n${okJson}`);
};
/** Headers and part of a JSON body, then the connection is reset. */
const resetMidBody: Behaviour = (socket) => {
  socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"id":"gen-raw","choi');
  setTimeout(() => socket.terminate(), 20);
};
/** Headers and the start of an SSE stream with content, then a reset. */
const resetMidStream: Behaviour = (socket) => {
  socket.write(`HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n`);
  const part = sseChunk("partial ");
  socket.write(`${part.length.toString(16)}\r\n${part}\r\n`);
  setTimeout(() => socket.terminate(), 50);
};
/** An SSE stream reset after its keep-alive comment, before any content. */
const resetBeforeContent: Behaviour = (socket) => {
  const comment = ": OPENROUTER PROCESSING\n\n";
  socket.write(`HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n${comment.length.toString(16)}\r\n${comment}\r\n`);
  setTimeout(() => socket.terminate(), 20);
};
const resetAtOnce: Behaviour = (socket) => socket.terminate();
/** Accepts, reads the request, and never says anything. */
const silent: Behaviour = () => {};
/** Sends the headers of a JSON answer, then nothing. */
const silentAfterHeaders: Behaviour = (socket) => {
  socket.write("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{");
};
/** An SSE stream that says one thing, then goes silent forever. */
const silentMidStream: Behaviour = (socket) => {
  socket.write(`HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n`);
  const part = sseChunk("thinking ");
  socket.write(`${part.length.toString(16)}\r\n${part}\r\n`);
};

describe("connection refused", () => {
  test("every attempt refused ends in a clear 502 upstream_unreachable naming the upstream, at once, and no key is blamed", async () => {
    const upstream = await unreachableUpstream();
    proxy = await startTestProxy({ upstream });
    const started = performance.now();
    const response = await within(3000, post(proxy));
    expect(response.status).toBe(502);
    const error = await errorOf(response);
    expect(error.code).toBe("upstream_unreachable");
    expect(error.message).toContain(upstream);
    expect(error.message).toContain("after 3 attempts");
    expect(performance.now() - started).toBeLessThan(2000);
    expectNoKeyBlamed(proxy);
    // The keys are still there for the next request.
    expect(proxy.pool.outlook().ok).toBe(true);
  });
});

describe("a connection reset in the middle of a body", () => {
  test("reset part way through a JSON answer: retried on another key, and the client gets the whole answer", async () => {
    rawServer = startRawUpstream([resetMidBody, answerOk]);
    proxy = await startTestProxy({ upstream: rawServer.url });
    const response = await within(3000, post(proxy));
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(okJson);
    expect(response.headers.get("x-proxy-attempts")).toBe("2");
    expect(rawServer.connections()).toBe(2);
    expectNoKeyBlamed(proxy);
  });

  test("reset on every attempt: a clear 502 saying the answer broke off", async () => {
    rawServer = startRawUpstream([resetMidBody]);
    proxy = await startTestProxy({ upstream: rawServer.url });
    const response = await within(3000, post(proxy));
    expect(response.status).toBe(502);
    const error = await errorOf(response);
    expect(error.code).toBe("upstream_unreachable");
    expect(error.message).toContain("broke off");
    expectNoKeyBlamed(proxy);
  });

  test("reset before any byte of the answer: retried on another key", async () => {
    rawServer = startRawUpstream([resetAtOnce, answerOk]);
    proxy = await startTestProxy({ upstream: rawServer.url });
    const response = await within(3000, post(proxy));
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(okJson);
    expectNoKeyBlamed(proxy);
  });

  test("reset in the middle of a stream after content was sent: the client's stream ends, with the bytes sent so far, and nothing is retried", async () => {
    rawServer = startRawUpstream([resetMidStream, answerOk]);
    proxy = await startTestProxy({ upstream: rawServer.url });
    const response = await within(3000, post(proxy, streamBody));
    expect(response.status).toBe(200);
    const reader = (response.body as ReadableStream<Uint8Array>).getReader();
    let text = "";
    const ended = await within(
      3000,
      (async () => {
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) return "done";
            text += new TextDecoder().decode(value);
          }
        } catch {
          return "broken";
        }
      })(),
    );
    // Ended, not hanging, and visibly cut: the connection closes without the final chunk, so the
    // client's read fails (relay.ts errors the stream; Bun 1.3.14 still wrote the final chunk,
    // oven-sh/bun#36477, so there a cut answer looked complete).
    expect(ended).toBe("broken");
    expect(text).toBe(sseChunk("partial "));
    expect(rawServer.connections()).toBe(1);
    expectNoKeyBlamed(proxy);
  });
});

describe("a 200 whose body is not JSON", () => {
  test.each([
    ["an HTML error page", "<html><body>502 Bad Gateway</body></html>"],
    ["an empty body", ""],
    ["a truncated object", '{"id":"gen-1","choices":['],
    ["plain text", "upstream overloaded, try later"],
  ])("%s sent as application/json is retried on another key, and no key is blamed", async (_what, body) => {
    fake = startFakeOpenRouter();
    fake.replyOnce(() => new Response(body, { headers: { "content-type": "application/json" } }));
    fake.reply(() => chatCompletion("fine"));
    proxy = await startTestProxy({ upstream: fake.url });
    const response = await within(3000, post(proxy));
    expect(response.status).toBe(200);
    expect(((await response.json()) as { choices: Array<{ message: { content: string } }> }).choices[0]?.message.content).toBe("fine");
    expect(response.headers.get("x-proxy-attempts")).toBe("2");
    expect(fake.requests[0]?.key).not.toBe(fake.requests[1]?.key);
    expectNoKeyBlamed(proxy);
  });

  test("on every attempt: a clear 502 saying the upstream answered 200 with a body that is not JSON", async () => {
    fake = startFakeOpenRouter();
    fake.reply(() => new Response("<html>oops</html>", { headers: { "content-type": "application/json; charset=utf-8" } }));
    proxy = await startTestProxy({ upstream: fake.url });
    const response = await within(3000, post(proxy));
    expect(response.status).toBe(502);
    const error = await errorOf(response);
    expect(error.message).toContain("200 with a body that is not JSON");
    expect(fake.requests).toHaveLength(3);
    expectNoKeyBlamed(proxy);
  });
});

describe("broken SSE", () => {
  test("a stream cut before any content is retried invisibly on another key", async () => {
    rawServer = startRawUpstream([resetBeforeContent, answerOk]);
    proxy = await startTestProxy({ upstream: rawServer.url });
    const response = await within(3000, post(proxy, streamBody));
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(okJson);
    expectNoKeyBlamed(proxy);
  });

  test("a stream that ends without [DONE] or a final chunk reaches the client as it came, and ends", async () => {
    fake = startFakeOpenRouter();
    const cut = `: OPENROUTER PROCESSING\n\n${sseChunk("half an ")}${sseChunk("answ")}`;
    fake.reply(() => new Response(cut, { headers: { "content-type": "text/event-stream" } }));
    proxy = await startTestProxy({ upstream: fake.url });
    const response = await within(3000, post(proxy, streamBody));
    expect(response.status).toBe(200);
    expect(await within(3000, response.text())).toBe(cut);
    expectNoKeyBlamed(proxy);
  });

  test("events that are not JSON, or not SSE at all, pass through untouched and the stream ends", async () => {
    fake = startFakeOpenRouter();
    const garbage = `data: {"id": "gen-1", "choices": [{"delta": {"content": "ok"}}]}\n\ndata: {not json at all\n\n\u0000\u0001binary\u00ff\n\nevent: nonsense\ndata: ]]]\n\n${usageChunk}data: [DONE]\n\n`;
    fake.reply(() => new Response(garbage, { headers: { "content-type": "text/event-stream" } }));
    proxy = await startTestProxy({ upstream: fake.url });
    const response = await within(3000, post(proxy, streamBody));
    expect(response.status).toBe(200);
    expect(await within(3000, response.text())).toBe(garbage);
  });

  test("an error event before any content is retried on another key", async () => {
    fake = startFakeOpenRouter();
    fake.replyOnce(() => new Response(`: OPENROUTER PROCESSING\n\ndata: {"error":{"code":502,"message":"Provider returned error"}}\n\n`, { headers: { "content-type": "text/event-stream" } }));
    const good = sseText(["second ", "try"]);
    fake.reply(() => new Response(good, { headers: { "content-type": "text/event-stream" } }));
    proxy = await startTestProxy({ upstream: fake.url });
    const response = await within(3000, post(proxy, streamBody));
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(good);
    expect(fake.requests).toHaveLength(2);
    expectNoKeyBlamed(proxy);
  });

  test("a stream whose upstream errors after content ends the client's stream, and nothing hangs", async () => {
    fake = startFakeOpenRouter();
    const stream = controlledStream();
    fake.reply(() => stream.response);
    proxy = await startTestProxy({ upstream: fake.url });
    stream.send(sseChunk("some "));
    const response = await within(3000, post(proxy, streamBody));
    const reading = response.text().then(
      (text) => ({ text, ended: "done" as const }),
      () => ({ text: "", ended: "broken" as const }),
    );
    stream.cut();
    const { text, ended } = await within(3000, reading);
    expect(["done", "broken"]).toContain(ended); // see "reset in the middle of a stream" above
    if (ended === "done") expect(text).toBe(sseChunk("some "));
    expect(fake.requests).toHaveLength(1);
    expectNoKeyBlamed(proxy);
  });
});

describe("an upstream that accepts and never answers", () => {
  test("each attempt is given up after UPSTREAM_TIMEOUT_SECONDS, and the next key's attempt answers", async () => {
    rawServer = startRawUpstream([silent, answerOk]);
    proxy = await startTestProxy({ upstream: rawServer.url, config: { UPSTREAM_TIMEOUT_SECONDS: 0.4 } });
    const started = performance.now();
    const response = await within(3000, post(proxy));
    const took = performance.now() - started;
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(okJson);
    expect(response.headers.get("x-proxy-attempts")).toBe("2");
    expect(took).toBeGreaterThanOrEqual(350);
    expect(took).toBeLessThan(1500);
    expectNoKeyBlamed(proxy);
  });

  test.each([0.3, 0.6])("silent on every attempt: 504 upstream_timeout after MAX_ATTEMPTS × UPSTREAM_TIMEOUT_SECONDS (%p s)", async (seconds) => {
    rawServer = startRawUpstream([silent]);
    proxy = await startTestProxy({ upstream: rawServer.url, config: { UPSTREAM_TIMEOUT_SECONDS: seconds, MAX_ATTEMPTS: 2 } });
    const started = performance.now();
    const response = await within(5000, post(proxy));
    const took = performance.now() - started;
    expect(response.status).toBe(504);
    const error = await errorOf(response);
    expect(error.code).toBe("upstream_timeout");
    expect(error.message).toContain(`sent nothing for ${seconds} s`);
    expect(took).toBeGreaterThanOrEqual(2 * seconds * 1000 - 50);
    expect(took).toBeLessThan(2 * seconds * 1000 + 1000);
    expectNoKeyBlamed(proxy);
  });

  test("headers then silence inside a JSON body: given up after UPSTREAM_TIMEOUT_SECONDS and retried", async () => {
    rawServer = startRawUpstream([silentAfterHeaders, answerOk]);
    proxy = await startTestProxy({ upstream: rawServer.url, config: { UPSTREAM_TIMEOUT_SECONDS: 0.4 } });
    const response = await within(3000, post(proxy));
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(okJson);
    expectNoKeyBlamed(proxy);
  });

  test("silence in the middle of a stream: the client's stream is ended after UPSTREAM_TIMEOUT_SECONDS", async () => {
    rawServer = startRawUpstream([silentMidStream]);
    proxy = await startTestProxy({ upstream: rawServer.url, config: { UPSTREAM_TIMEOUT_SECONDS: 0.4 } });
    const started = performance.now();
    const response = await within(3000, post(proxy, streamBody));
    expect(response.status).toBe(200);
    const outcome = await within(
      3000,
      response.text().then(
        () => "done",
        () => "broken",
      ),
    );
    expect(["done", "broken"]).toContain(outcome); // ended, not hanging; see above for "done"
    expect(performance.now() - started).toBeGreaterThanOrEqual(350);
    expect(rawServer.connections()).toBe(1);
    expectNoKeyBlamed(proxy);
  });
});
