/**
 * Shutdown, with the server as a child process (`bun run src/main.ts serve`) so that real signals
 * reach it: SIGTERM/SIGINT stop new connections, let streams in flight finish within
 * SHUTDOWN_GRACE_SECONDS, end the rest, save key state and logs, and exit 0; a second signal
 * exits at once. One test runs the proxy in process, to begin the stop at an exact point.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { chatCompletion, controlledStream, sseChunk, startFakeOpenRouter, usageChunk, type FakeHandler, type FakeOpenRouter } from "./helpers/fake-openrouter.ts";
import { keyEndpoint } from "./helpers/key-endpoint.ts";
import { allLogText } from "./helpers/log-files.ts";
import { killAllProxies, startProxyProcess, type ProxyProcess } from "./helpers/proxy-process.ts";
import { connectRaw, parseRawResponse } from "./helpers/raw-http.ts";
import { eventually, startTestProxy, tempDir, testKeys } from "./helpers/test-proxy.ts";

const [keyA] = testKeys as [string];
let fake: FakeOpenRouter;
const cleanups: Array<() => Promise<void>> = [];
/** How the next chat completions are answered; `serve` asks GET /key at startup, answered apart. */
const answers: FakeHandler[] = [];

beforeAll(() => {
  fake = startFakeOpenRouter();
  fake.reply(keyEndpoint(() => true, (request) => answers.shift()?.(request) ?? chatCompletion("no answer queued")));
});
afterEach(async () => {
  await killAllProxies();
  for (const cleanup of cleanups.splice(0)) await cleanup();
  fake.requests.length = 0;
});
afterAll(async () => {
  await killAllProxies();
  await fake.stop();
});

interface Started {
  child: ProxyProcess;
  dir: string;
  keysFile: string;
  logDir: string;
}

async function start(env: Record<string, string> = {}): Promise<Started> {
  const { dir, cleanup } = await tempDir();
  cleanups.push(cleanup);
  const keysFile = join(dir, "keys.json");
  const logDir = join(dir, "logs");
  await writeFile(keysFile, JSON.stringify({ keys: [{ key: keyA, label: "only" }] }));
  const child = await startProxyProcess({
    cwd: dir,
    env: { OPENROUTER_BASE_URL: fake.url, KEYS_FILE: keysFile, LOG_DIR: logDir, RETRY_BACKOFF_MS: "0", ...env },
  });
  return { child, dir, keysFile, logDir };
}

const decoder = new TextDecoder();

/** A streamed chat completion whose upstream side the test drives; resolves once its first chunk reached the client. */
async function openStream(child: ProxyProcess) {
  const upstream = controlledStream();
  answers.push(() => upstream.response);
  // The proxy holds a stream's head until its first content (STREAM_COMMIT_SECONDS): send it first.
  const first = sseChunk("first ");
  upstream.send(first);
  const response = await fetch(`${child.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "openai/gpt-4o-mini", stream: true, messages: [{ role: "user", content: "hi" }] }),
  });
  expect(response.status).toBe(200);
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  let received = "";
  while (received.length < first.length) {
    const { done, value } = await reader.read();
    if (done) break;
    received += decoder.decode(value, { stream: true });
  }
  expect(received).toBe(first);
  let sent = first;
  return {
    upstream,
    /** Sends `text` on; false once the proxy has cancelled the upstream stream. */
    send(text: string): boolean {
      try {
        upstream.send(text);
      } catch {
        return false;
      }
      sent += text;
      return true;
    },
    sent: () => sent,
    /** Reads to the end; `ended` tells whether it ended cleanly or broke off. */
    async readRest(): Promise<{ text: string; ended: "done" | "broken" }> {
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return { text: received, ended: "done" };
          received += decoder.decode(value, { stream: true });
        }
      } catch {
        return { text: received, ended: "broken" };
      }
    },
  };
}

/** Whether a new TCP connection to `port` is accepted. */
async function connects(port: number): Promise<boolean> {
  try {
    const connection = await connectRaw(port);
    connection.end();
    return true;
  } catch {
    return false;
  }
}

async function withinMs<T>(work: Promise<T>, limitMs: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  const overdue = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} took longer than ${limitMs} ms`)), limitMs)));
  try {
    return await Promise.race([work, overdue]);
  } finally {
    clearTimeout(timer);
  }
}

interface SavedFile {
  keys: Array<{ id: string; state?: { requests?: number; successes?: number } }>;
}

describe("shutdown", () => {
  test.each(["SIGTERM", "SIGINT"] as const)(
    "after %s a stream in flight keeps flowing to completion while new connections are refused; key state and logs are saved and the exit status is 0",
    async (signal) => {
      const { child, keysFile, logDir } = await start({ SHUTDOWN_GRACE_SECONDS: "10" });
      const stream = await openStream(child);

      child.signal(signal);
      await child.waitForStdout(new RegExp(`${signal}: finishing requests in flight`));
      // The line is printed just before the listener closes: allow the child that instant.
      await eventually(async () => !(await connects(child.port)), { timeoutMs: 1000, what: "new connections to be refused" });
      await Bun.sleep(100);
      expect(await connects(child.port)).toBe(false);

      // The stream goes on after the signal, chunk by chunk, to its end.
      for (let i = 0; i < 5; i++) {
        stream.send(sseChunk(`after-${i} `));
        await Bun.sleep(20);
      }
      stream.send(`${usageChunk}data: [DONE]\n\n`);
      stream.upstream.end();
      const { text, ended } = await withinMs(stream.readRest(), 5000, "the rest of the stream");
      expect(ended).toBe("done");
      expect(text).toBe(stream.sent());

      expect(await withinMs(child.exited, 5000, "the exit")).toBe(0);
      const saved = JSON.parse(await readFile(keysFile, "utf8")) as SavedFile;
      expect(saved.keys[0]).toMatchObject({ id: keyIdOf(keyA), state: { requests: 1, successes: 1 } });
      const requestLines = (await allLogText(logDir)).split("\n").filter((line) => line.includes('"path":"/chat/completions"'));
      expect(requestLines).toHaveLength(1);
      expect(JSON.parse(requestLines[0] as string)).toMatchObject({ status: 200, stream: true, aborted: false });
    },
  );

  test("an idle kept-alive connection is closed at SIGTERM, so the client's next request opens a new connection", async () => {
    const { child } = await start({ SHUTDOWN_GRACE_SECONDS: "10" });
    const kept = await connectRaw(child.port);
    await kept.write("GET /healthz HTTP/1.1\r\nHost: proxy\r\n\r\n");
    expect(await kept.waitFor(/\r\n\r\n.*ok/is, 2000)).toBe(true);
    const stream = await openStream(child); // holds the server open while the test looks
    const answered = kept.received().length;

    child.signal("SIGTERM");
    await withinMs(kept.closed, 2000, "the idle connection to be closed");
    expect(kept.received().length).toBe(answered);

    stream.upstream.end();
    await stream.readRest();
    expect(await withinMs(child.exited, 5000, "the exit")).toBe(0);
  });

  test("a request half-sent when SIGTERM arrives gets 503 shutting_down with Connection: close, and the connection is closed", async () => {
    const { child } = await start({ SHUTDOWN_GRACE_SECONDS: "10" });
    const kept = await connectRaw(child.port);
    const stream = await openStream(child); // holds the server open while the test asks
    await kept.write("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n");

    child.signal("SIGTERM");
    await child.waitForStdout(/SIGTERM: finishing/);
    await kept.write("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    expect(await kept.waitFor(/shutting_down"\}\}/, 2000)).toBe(true);
    const answer = parseRawResponse(kept.received());
    expect(answer?.status).toBe(503);
    expect(answer?.headers.get("connection")).toBe("close");
    expect(JSON.parse(answer?.body ?? "{}")).toMatchObject({ error: { type: "service_unavailable", code: "shutting_down" } });
    await withinMs(kept.closed, 2000, "the connection to be closed");
    expect(fake.requests.filter((request) => request.path === "/chat/completions")).toHaveLength(1); // only the stream

    stream.upstream.end();
    await stream.readRest();
    expect(await withinMs(child.exited, 5000, "the exit")).toBe(0);
  });

  test("a request whose first bytes reached the socket but were not yet read when the stop began still gets its 503 shutting_down", async () => {
    // In process, so that the stop begins in the same tick as the write and the proxy has not read
    // the bytes yet: the child-process test above meets the same when a loaded machine has the
    // child handle the signal before it reads the socket.
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    const proxy = await startTestProxy({ upstream: fake.url, keys: [keyA], dir, config: { SHUTDOWN_GRACE_SECONDS: 10 } });
    const kept = await connectRaw(proxy.server.port as number);
    await kept.write("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    expect(await kept.waitFor(/\r\n\r\n.*ok/is)).toBe(true); // accepted, and idle again
    const answered = kept.received().length;

    const headSent = kept.write("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    const stopped = proxy.stop();
    expect(await headSent).toBe(true);
    await kept.write("Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}");
    expect(await kept.waitFor(/shutting_down"\}\}/)).toBe(true);
    const answer = parseRawResponse(kept.received().slice(answered));
    expect(answer?.status).toBe(503);
    expect(answer?.headers.get("connection")).toBe("close");
    expect(JSON.parse(answer?.body ?? "{}")).toMatchObject({ error: { type: "service_unavailable", code: "shutting_down" } });
    await withinMs(kept.closed, 2000, "the connection to be closed");
    await withinMs(stopped, 5000, "the stop");
    expect(fake.requests.filter((request) => request.path === "/chat/completions")).toHaveLength(0);
  });

  test("a stream that outlives SHUTDOWN_GRACE_SECONDS is ended when the grace runs out, key state and its log line are still saved, and the exit status is 0", async () => {
    const { child, keysFile, logDir } = await start({ SHUTDOWN_GRACE_SECONDS: "0.5" });
    const stream = await openStream(child);
    const ticker = setInterval(() => stream.send(": still thinking\n\n"), 100);
    try {
      const signalled = performance.now();
      child.signal("SIGTERM");
      const { ended } = await withinMs(stream.readRest(), 4000, "the stream to be ended");
      const endedAfter = performance.now() - signalled;
      expect(["done", "broken"]).toContain(ended);
      expect(endedAfter).toBeGreaterThanOrEqual(400);
      expect(await withinMs(child.exited, 4000, "the exit")).toBe(0);
      expect(performance.now() - signalled).toBeLessThan(4000);
    } finally {
      clearInterval(ticker);
    }
    const saved = JSON.parse(await readFile(keysFile, "utf8")) as SavedFile;
    expect(saved.keys[0]?.state?.requests).toBe(1);
    const requestLines = (await allLogText(logDir)).split("\n").filter((line) => line.includes('"path":"/chat/completions"'));
    expect(requestLines).toHaveLength(1);
    expect(JSON.parse(requestLines[0] as string)).toMatchObject({ status: 200, stream: true, error: expect.stringContaining("SHUTDOWN_GRACE_SECONDS (0.5 s) ran out") });
  });

  test("a request still waiting for the upstream's answer when the grace runs out is answered 503 shutting_down", async () => {
    const { child } = await start({ SHUTDOWN_GRACE_SECONDS: "0.3" });
    // An upstream that never answers, until the proxy gives up on it.
    answers.push(async (request) => {
      await request.aborted;
      return chatCompletion("too late");
    });
    const pending = fetch(`${child.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
    });
    await eventually(() => fake.requests.some((request) => request.path === "/chat/completions"), { what: "the request to reach the upstream" });
    child.signal("SIGTERM");
    const response = await withinMs(pending, 4000, "the answer");
    expect(response.status).toBe(503);
    expect(await response.json()).toMatchObject({ error: { type: "service_unavailable", code: "shutting_down" } });
    expect(await withinMs(child.exited, 4000, "the exit")).toBe(0);
  });

  test("a second SIGTERM exits at once, without waiting for the grace period", async () => {
    const { child } = await start({ SHUTDOWN_GRACE_SECONDS: "30" });
    const stream = await openStream(child);
    child.signal("SIGTERM");
    await child.waitForStdout(/SIGTERM: finishing/);
    const again = performance.now();
    child.signal("SIGTERM");
    const code = await withinMs(child.exited, 1500, "the exit after the second SIGTERM");
    expect(performance.now() - again).toBeLessThan(1500);
    expect(code).toBe(130);
    expect(child.stderr()).toContain("SIGTERM again: exiting now");
    await stream.readRest();
  });

  test("with nothing in flight, SIGTERM exits 0 at once even when the grace period is long", async () => {
    const { child } = await start({ SHUTDOWN_GRACE_SECONDS: "30" });
    expect((await fetch(`${child.url}/healthz`)).status).toBe(200);
    const signalled = performance.now();
    child.signal("SIGTERM");
    expect(await withinMs(child.exited, 3000, "the exit")).toBe(0);
    expect(performance.now() - signalled).toBeLessThan(3000);
  });
});
