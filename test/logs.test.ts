/**
 * The logs: date-rotated JSON-line files (requests, errors, keys) in LOG_DIR, and one human line
 * per request on standard output. Time is an injected clock: midnight is crossed by moving it.
 * Buffered writes are forced out with `logging.flush()`, never waited for.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdir, rename, symlink, unlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { defaultConfig } from "../src/config.ts";
import { createEventBus } from "../src/observe/event-bus.ts";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { startLogging } from "../src/observe/log/loggers.ts";
import type { RequestRecord } from "../src/domain/request-record.ts";
import { chatCompletion, controlledStream, errorReply, sseChunk, sseText, usageChunk, lateErrorChunk } from "./helpers/fake-openrouter.ts";
import { useSuite } from "./helpers/suite.ts";
import { allLogText, expectNoSecrets, logFiles, readLog } from "./helpers/log-files.ts";
import { startTestProxy, tempDir, testKeys, type TestProxy, type TestProxyOptions } from "./helpers/test-proxy.ts";

// The fake's default answer echoes the key it got; these tests scan for keys, so it must not.
const { fake, cleanups } = useSuite({ reply: () => chatCompletion("hello") });
let proxy: TestProxy | undefined;
const [keyA, keyB] = testKeys as [string, string, string];
const [idA, idB] = [keyIdOf(keyA), keyIdOf(keyB)];
const clientBearer = "client-bearer-3f9c1e7a5b2d4c6e8f0a";
const adminToken = "admin-token-7d1e4b9a2c";

/** The proxy's clock; each test sets it. */
let clock = Date.parse("2026-11-25T10:00:00.000Z");
const now = () => clock;
const day = (ms = clock) => new Date(ms).toISOString().slice(0, 10);

afterEach(async () => {
  await proxy?.close();
  proxy = undefined;
  clock = Date.parse("2026-11-25T10:00:00.000Z");
});

async function start(options: Partial<TestProxyOptions> = {}): Promise<TestProxy> {
  proxy = await startTestProxy({ upstream: fake.url, ...options, overrides: { now, ...options.overrides } });
  return proxy;
}

const chatBody = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "a distinctive prompt 71c2" }], ...extra });

function chat(p: TestProxy, { body = chatBody(), headers = {} }: { body?: string; headers?: Record<string, string> } = {}) {
  return fetch(`${p.url}/v1/chat/completions`, {
    method: "POST",
    body,
    headers: { "content-type": "application/json", authorization: `Bearer ${clientBearer}`, "user-agent": "logs-test/1.0", ...headers },
  });
}

const eventStream = (text: string) => new Response(text, { headers: { "content-type": "text/event-stream" } });

/** Resolves with the next request record the proxy announces. */
const nextRecord = (p: TestProxy) =>
  new Promise<RequestRecord>((resolve) => {
    const off = p.events.on("request.done", (record) => {
      off();
      resolve(record);
    });
  });

/**
 * The real `fetch`, except that after `breakNext()` its next answer is malformed (no headers
 * object): the forward loop then throws, which is how these tests cause an internal exception.
 */
function breakingFetch() {
  let broken = false;
  const wrapped = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    if (!broken) return fetch(input, init);
    broken = false;
    return Promise.resolve({ status: 200, headers: null } as unknown as Response);
  };
  return { fetch: wrapped as typeof fetch, breakNext: () => void (broken = true) };
}

/** A folder for a proxy whose log folder the test prepares first; removed after the test. */
async function ownFolder() {
  const folder = await tempDir();
  cleanups.push(folder.cleanup);
  return folder.dir;
}

describe("log files", () => {
  test("LOG_DIR defaults to logs, LOG_RETENTION_DAYS to 14, LOG_LEVEL to info and LOG_BODIES to false", () => {
    const config = defaultConfig();
    expect([config.LOG_DIR, config.LOG_RETENTION_DAYS, config.LOG_LEVEL, config.LOG_BODIES]).toEqual(["logs", 14, "info", false]);
  });

  test("LOG_DIR holds requests-, errors- and keys-YYYY-MM-DD.log, one JSON object per line", async () => {
    clock = Date.parse("2026-11-25T23:30:00.000Z");
    const p = await start({ config: { MAX_ATTEMPTS: 2 } });
    fake.replyOnce(() => errorReply(429, "slow down"));
    expect((await chat(p)).status).toBe(200); // 429 on one key (keys log), then served
    fake.replyOnce(() => errorReply(500, "provider down"), () => errorReply(500, "provider down"));
    expect((await chat(p)).status).toBe(500); // two 500s (errors log)
    await p.logging.flush();
    expect(await logFiles(p.logDir)).toEqual(["errors-2026-11-25.log", "keys-2026-11-25.log", "requests-2026-11-25.log"]);
    for (const name of ["requests", "errors", "keys"] as const) {
      const lines = await readLog(p.logDir, name, "2026-11-25"); // JSON.parse of each line
      expect(lines.length).toBeGreaterThan(0);
      for (const line of lines) {
        expect(typeof line).toBe("object");
        expect(Array.isArray(line)).toBe(false);
        expect(String(line.time)).toMatch(/^2026-11-25T23:(?:29|30):\d{2}\.\d{3}Z$/);
      }
    }
    expect(await readLog(p.logDir, "requests", "2026-11-25")).toHaveLength(2);
  });

  test("file dates and times are UTC, even where the local date is already the next day", async () => {
    // A zone is fixed when a process starts, so this runs in a child with TZ set: at 23:30 UTC it
    // is 13:30 the next day in Kiritimati (UTC+14).
    const dir = await ownFolder();
    const script = join(dir, "log-in-kiritimati.ts");
    await writeFile(
      script,
      `import { createEventBus } from ${JSON.stringify(join(import.meta.dir, "..", "src", "observe", "event-bus.ts"))};
import { startLogging } from ${JSON.stringify(join(import.meta.dir, "..", "src", "observe", "log", "loggers.ts"))};
if (new Date(Date.parse("2026-11-25T23:30:00Z")).getDate() !== 26) throw new Error("TZ was not applied");
const events = createEventBus();
const logging = startLogging({ dir: ${JSON.stringify(join(dir, "logs"))}, retentionDays: 14, level: "error", events, now: () => Date.parse("2026-11-25T23:30:00Z") });
events.emit("key.recovered", { keyId: "k_0123456789" });
await logging.close();
`,
    );
    const child = Bun.spawn([process.execPath, "--no-env-file", "run", script], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", TZ: "Pacific/Kiritimati" },
      stdout: "pipe",
      stderr: "pipe",
    });
    const code = await child.exited;
    if (code !== 0) throw new Error(`the child exited ${code}: ${await new Response(child.stderr).text()}`);
    expect(await logFiles(join(dir, "logs"))).toEqual(["keys-2026-11-25.log"]);
    expect(await readLog(join(dir, "logs"), "keys", "2026-11-25")).toEqual([{ time: "2026-11-25T23:30:00.000Z", event: "key.recovered", keyId: "k_0123456789" }]);
  });

  test("a new file starts at midnight without a restart", async () => {
    clock = Date.parse("2026-11-25T23:59:00.000Z");
    const p = await start();
    expect((await chat(p)).status).toBe(200);
    await p.logging.flush();
    clock = Date.parse("2026-11-26T00:01:00.000Z");
    expect((await chat(p)).status).toBe(200);
    await p.logging.flush();
    expect(await logFiles(p.logDir)).toEqual(["requests-2026-11-25.log", "requests-2026-11-26.log"]);
    const [before, after] = [await readLog(p.logDir, "requests", "2026-11-25"), await readLog(p.logDir, "requests", "2026-11-26")];
    expect(before.map((line) => String(line.time).slice(0, 10))).toEqual(["2026-11-25"]);
    expect(after.map((line) => String(line.time).slice(0, 10))).toEqual(["2026-11-26"]);
  });

  test("a line goes to the file of its own time, even when it is written out after midnight", async () => {
    clock = Date.parse("2026-11-25T23:59:00.000Z");
    const p = await start();
    expect((await chat(p)).status).toBe(200);
    clock = Date.parse("2026-11-26T00:01:00.000Z"); // before the buffered line is written
    await p.logging.flush();
    expect(await logFiles(p.logDir)).toEqual(["requests-2026-11-25.log"]);
  });

  test("files older than LOG_RETENTION_DAYS are deleted at startup, with no traffic; other files in the folder are never touched", async () => {
    const dir = await ownFolder();
    const logDir = join(dir, "logs");
    await mkdir(logDir);
    // Today is 2026-11-25; with the default 14 days, 2026-11-12 is the oldest day kept.
    const old = ["requests-2026-11-11.log", "errors-2026-11-11.log", "keys-2026-11-11.log", "requests-2025-01-01.log"];
    const kept = ["requests-2026-11-12.log", "errors-2026-11-24.log", "keys-2026-11-25.log"];
    const others = ["notes.txt", "requests-2026-11-01.log.gz", "other-2026-11-01.log", "requests-latest.log", "requests-2026-11-01.log.bak"];
    for (const name of [...old, ...kept, ...others]) await writeFile(join(logDir, name), "{}\n");
    const p = await start({ dir });
    await p.logging.flush(); // waits for the startup sweep; nothing has been logged
    expect(await logFiles(logDir)).toEqual([...kept, ...others].sort());
  });

  test("files older than LOG_RETENTION_DAYS are deleted at each rotation; other files in the folder are never touched", async () => {
    const dir = await ownFolder();
    const logDir = join(dir, "logs");
    await mkdir(logDir);
    const others = ["notes.txt", "other-2026-11-01.log", "requests-2026-11-01.log.gz"];
    for (const name of ["requests-2026-11-24.log", ...others]) await writeFile(join(logDir, name), "{}\n");
    clock = Date.parse("2026-11-25T12:00:00.000Z");
    const p = await start({ dir, config: { LOG_RETENTION_DAYS: 2 } });
    expect((await chat(p)).status).toBe(200);
    await p.logging.flush();
    // Two days kept: yesterday's file stays today.
    expect(await logFiles(logDir)).toEqual(["requests-2026-11-24.log", "requests-2026-11-25.log", ...others].sort());
    clock = Date.parse("2026-11-26T00:30:00.000Z");
    expect((await chat(p)).status).toBe(200);
    await p.logging.flush();
    expect(await logFiles(logDir)).toEqual(["requests-2026-11-25.log", "requests-2026-11-26.log", ...others].sort());
  });
});

describe("writing", () => {
  test("writes are buffered and never block: an event returns before anything reaches the disk, and closing flushes it", async () => {
    const dir = await ownFolder();
    const events = createEventBus();
    const logging = startLogging({ dir, retentionDays: 14, level: "info", events, now, out: () => {}, err: () => {}, flushIntervalMs: 60_000 });
    const record: RequestRecord = {
      requestId: "req-buffered",
      startedAt: clock,
      method: "POST",
      path: "/chat/completions",
      stream: false,
      status: 200,
      attempts: [{ keyId: idA, status: 200, outcome: "ok", ms: 3 }],
      durationMs: 4,
      aborted: false,
    };
    events.emit("request.done", record);
    expect(existsSync(join(dir, `requests-${day()}.log`))).toBe(false);
    await logging.close();
    expect(await readLog(dir, "requests", day())).toMatchObject([{ requestId: "req-buffered", status: 200 }]);
  });

  test("buffered lines are flushed on shutdown", async () => {
    const dir = await ownFolder();
    const p = await start({ dir });
    const response = await chat(p, { headers: { "x-request-id": "req-before-shutdown" } });
    expect(response.status).toBe(200);
    proxy = undefined; // stopped here, not by afterEach
    await p.stop(0); // no flush() first: stopping must write what is buffered
    expect(await readLog(p.logDir, "requests", day())).toMatchObject([{ requestId: "req-before-shutdown", status: 200 }]);
  });

  test("an unwritable folder is reported on stderr once and the proxy keeps serving", async () => {
    const dir = await ownFolder();
    await writeFile(join(dir, "a-file"), "not a folder\n");
    const logDir = join(dir, "a-file", "logs"); // its parent is a regular file: mkdir fails, even for root
    const p = await start({ dir, config: { LOG_DIR: logDir } });
    for (let round = 0; round < 3; round++) {
      expect((await chat(p)).status).toBe(200);
      await p.logging.flush();
    }
    const problems = p.output.err.split("\n").filter((line) => line.startsWith("logs: "));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain(`cannot create ${logDir}`);
    expect(problems[0]).toContain("the proxy keeps serving");
  });

  test.skipIf(!existsSync("/dev/full"))("a full disk is reported on stderr once and the proxy keeps serving", async () => {
    const dir = await ownFolder();
    const logDir = join(dir, "logs");
    await mkdir(logDir);
    // Today's requests log is /dev/full, where every write fails with ENOSPC, as on a full disk.
    await symlink("/dev/full", join(logDir, `requests-${day()}.log`));
    const p = await start({ dir });
    for (let round = 0; round < 3; round++) {
      expect((await chat(p)).status).toBe(200);
      await p.logging.flush();
    }
    const problems = p.output.err.split("\n").filter((line) => line.startsWith("logs: "));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain(`cannot write ${join(logDir, `requests-${day()}.log`)}`);
    expect(problems[0]).toContain("ENOSPC");
  });
});

test.skipIf(!existsSync("/dev/full"))("a disk problem is reported when it starts and when it ends, each time it happens", async () => {
  const dir = await ownFolder();
  const logDir = join(dir, "logs");
  await mkdir(logDir);
  const full = join(logDir, `requests-${day()}.log`);
  const p = await start({ dir });
  const problems = () => p.output.err.split("\n").filter((line) => line.startsWith("logs: "));
  const serveAndFlush = async () => {
    expect((await chat(p)).status).toBe(200);
    await p.logging.flush();
  };
  for (let outage = 1; outage <= 2; outage++) {
    // The disk fills up (the lines written so far are set aside, and put back when it has space).
    const written = existsSync(full);
    if (written) await rename(full, `${full}.kept`);
    await symlink("/dev/full", full);
    await serveAndFlush();
    await serveAndFlush();
    await unlink(full);
    if (written) await rename(`${full}.kept`, full);
    await serveAndFlush();
    expect(problems()).toHaveLength(outage * 2);
    expect(problems().at(-2)).toContain(`cannot write ${full}`);
    expect(problems().at(-1)).toBe(`logs: ${full} can be written again`);
  }
  // The lines of both outages were kept in memory and written once the disk took them.
  const lines = await readLog(p.logDir, "requests", day());
  expect(lines).toHaveLength(6);
});

describe("requests log", () => {
  test("per request: time, request id, method, path, model, stream, status, every attempt's key and status, time to first byte, duration, usage and cost, client address, user agent", async () => {
    const p = await start();
    fake.replyOnce(() => errorReply(429, "slow down"));
    const response = await chat(p, { headers: { "x-request-id": "req-fields-1" } });
    expect(response.status).toBe(200);
    await p.logging.flush();
    const [line] = await readLog(p.logDir, "requests", day());
    expect(line).toMatchObject({
      requestId: "req-fields-1",
      method: "POST",
      path: "/chat/completions",
      model: "openai/gpt-4o-mini",
      stream: false,
      status: 200,
      keyId: idB,
      attempts: [
        { keyId: idA, status: 429, outcome: "rate-limited" },
        { keyId: idB, status: 200, outcome: "ok" },
      ],
      usage: { promptTokens: 5, completionTokens: 3, totalTokens: 8, cost: 0.00001 },
      clientAddress: "127.0.0.1",
      userAgent: "logs-test/1.0",
    });
    expect(String(line?.time)).toMatch(/^2026-11-2[45]T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
    expect(Date.parse(String(line?.time))).toBeLessThanOrEqual(clock);
    expect(line?.ttfbMs).toBeGreaterThan(0);
    expect(line?.durationMs).toBeGreaterThanOrEqual(line?.ttfbMs as number);
    expect("startedAt" in (line ?? {})).toBe(false);
    expect(Object.keys(line ?? {})[0]).toBe("time");
  });

  test("a request that fails carries its error", async () => {
    const p = await start();
    fake.replyOnce(() => errorReply(400, "max_tokens is too large"));
    expect((await chat(p, { headers: { "x-request-id": "req-fails" } })).status).toBe(400);
    await p.logging.flush();
    expect(await readLog(p.logDir, "requests", day())).toMatchObject([
      { requestId: "req-fails", status: 400, error: "upstream answered 400: max_tokens is too large", attempts: [{ keyId: idA, status: 400 }] },
    ]);
  });

  test("for a stream, usage and cost come from the final usage chunk, read while the bytes pass through without delaying them", async () => {
    const p = await start();
    const upstream = controlledStream();
    fake.replyOnce(() => upstream.response);
    upstream.send(sseChunk("Hel"));
    const response = await chat(p, { body: chatBody({ stream: true }), headers: { "x-request-id": "req-stream" } });
    const reader = response.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    const readUntil = async (marker: string) => {
      while (!text.includes(marker)) {
        const { done, value } = await reader.read();
        if (done) throw new Error(`the stream ended before ${marker}`);
        text += decoder.decode(value, { stream: true });
      }
    };
    await readUntil('"Hel"');
    upstream.send(usageChunk);
    await readUntil('"usage"'); // the usage chunk reached the client while the upstream is still open
    upstream.send("data: [DONE]\n\n");
    upstream.end();
    await readUntil("[DONE]");
    expect((await reader.read()).done).toBe(true);
    expect(text).toBe(`${sseChunk("Hel")}${usageChunk}data: [DONE]\n\n`);
    await p.logging.flush();
    expect(await readLog(p.logDir, "requests", day())).toMatchObject([
      { requestId: "req-stream", stream: true, status: 200, usage: { promptTokens: 5, completionTokens: 2, totalTokens: 7, cost: 0.00002 } },
    ]);
  });

  test("no request or response bodies unless LOG_BODIES=true", async () => {
    const p = await start();
    expect((await chat(p)).status).toBe(200);
    fake.replyOnce(() => eventStream(sseText(["a streamed answer 5e1d"])));
    await (await chat(p, { body: chatBody({ stream: true }) })).text();
    await p.logging.flush();
    const lines = await readLog(p.logDir, "requests", day());
    expect(lines).toHaveLength(2);
    for (const line of lines) {
      expect(line).not.toHaveProperty("requestBody");
      expect(line).not.toHaveProperty("responseBody");
    }
    const text = await allLogText(p.logDir);
    expect(text).not.toContain("a distinctive prompt 71c2");
    expect(text).not.toContain("a streamed answer 5e1d");
  });

  test("with LOG_BODIES=true the request and response bodies are in the requests log, streamed or not", async () => {
    const p = await start({ config: { LOG_BODIES: true } });
    const plain = await chat(p, { headers: { "x-request-id": "req-body-json" } });
    const plainText = await plain.text();
    const streamText = sseText(["a streamed answer 5e1d"]);
    fake.replyOnce(() => eventStream(streamText));
    const streamBody = chatBody({ stream: true });
    expect(await (await chat(p, { body: streamBody, headers: { "x-request-id": "req-body-sse" } })).text()).toBe(streamText);
    await p.logging.flush();
    expect(await readLog(p.logDir, "requests", day())).toMatchObject([
      { requestId: "req-body-json", requestBody: chatBody(), responseBody: plainText },
      { requestId: "req-body-sse", requestBody: streamBody, responseBody: streamText },
    ]);
  });
});

describe("keys log", () => {
  test.each([
    ["a header", "header", { headers: { "x-ratelimit-reset": String(Date.parse("2026-11-25T10:00:30.000Z")) } }, "2026-11-25T10:00:30.000Z"],
    ["the error body", "body", { metadata: { headers: { "X-RateLimit-Reset": String(Date.parse("2026-11-25T10:00:45.000Z")) } } }, "2026-11-25T10:00:45.000Z"],
    ["Retry-After", "retry-after", { headers: { "retry-after": "20" } }, "2026-11-25T10:00:20.000Z"],
    ["the default", "default", {}, "2026-11-25T10:01:00.000Z"],
  ] as const)("cooldown started: until when, and that the reset came from %s", async (_what, source, reply, until) => {
    const p = await start();
    fake.replyOnce(() => errorReply(429, "Rate limit exceeded", reply));
    expect((await chat(p)).status).toBe(200);
    await p.logging.flush();
    expect(await readLog(p.logDir, "keys", day())).toEqual([
      { time: "2026-11-25T10:00:00.000Z", event: "key.cooldown", keyId: idA, until, source, reason: "Rate limit exceeded" },
    ]);
  });

  test("recovered: a key whose cooldown is over is logged as back", async () => {
    const p = await start();
    fake.replyOnce(() => errorReply(429, "slow down"));
    expect((await chat(p)).status).toBe(200);
    clock += 61_000; // past the default 60 s cooldown
    expect((await chat(p)).status).toBe(200);
    await p.logging.flush();
    expect((await readLog(p.logDir, "keys", day())).map((line) => [line.event, line.keyId])).toEqual([
      ["key.cooldown", idA],
      ["key.recovered", idA],
    ]);
  });

  test("failure counted, and disabled with the reason", async () => {
    const p = await start({ config: { FAILURE_THRESHOLD: 1 } });
    fake.replyOnce(() => errorReply(401, "User not found."));
    expect((await chat(p)).status).toBe(200);
    await p.logging.flush();
    expect(await readLog(p.logDir, "keys", day())).toMatchObject([
      { event: "key.failure", keyId: idA, consecutiveFailures: 1, reason: "upstream answered 401: User not found." },
      { event: "key.disabled", keyId: idA, reason: "1 consecutive failures; last: upstream answered 401: User not found." },
    ]);
  });

  test("added, enabled and removed, through the admin API", async () => {
    const p = await start({ config: { FAILURE_THRESHOLD: 1, ADMIN_TOKEN: adminToken } });
    fake.replyOnce(() => errorReply(401, "User not found."));
    expect((await chat(p)).status).toBe(200); // key A disabled
    const admin = (method: string, path: string, body?: unknown) =>
      fetch(`${p.url}/admin${path}`, {
        method,
        headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    const freshKey = "sk-or-v1-test-dddddddddddddddddddddddddddddddddddddd";
    expect((await admin("POST", "/keys", { key: freshKey, label: "fresh", verify: false })).status).toBe(201);
    expect((await admin("POST", `/keys/${idA}/enable`)).status).toBe(200);
    expect((await admin("DELETE", `/keys/${keyIdOf(freshKey)}`)).status).toBe(204);
    await p.logging.flush();
    const events = (await readLog(p.logDir, "keys", day())).map(({ event, keyId, label }) => ({ event, keyId, ...(label ? { label } : {}) }));
    expect(events).toEqual([
      { event: "key.failure", keyId: idA },
      { event: "key.disabled", keyId: idA },
      { event: "key.added", keyId: keyIdOf(freshKey), label: "fresh" },
      { event: "key.enabled", keyId: idA },
      { event: "key.removed", keyId: keyIdOf(freshKey) },
    ]);
  });
});

describe("errors log", () => {
  test("upstream errors are logged: a 5xx answer, and a 5xx that was retried on another key", async () => {
    const p = await start({ config: { MAX_ATTEMPTS: 2 } });
    fake.replyOnce(() => errorReply(502, "provider down"));
    expect((await chat(p, { headers: { "x-request-id": "req-retried" } })).status).toBe(200);
    fake.replyOnce(() => errorReply(500, "internal"), () => errorReply(503, "overloaded"));
    expect((await chat(p, { headers: { "x-request-id": "req-failed" } })).status).toBe(503);
    await p.logging.flush();
    expect(await readLog(p.logDir, "errors", day())).toMatchObject([
      { kind: "upstream", requestId: "req-retried", status: 200, attempts: [{ status: 502 }, { status: 200 }] },
      { kind: "upstream", requestId: "req-failed", status: 503, error: "upstream answered 503: overloaded", attempts: [{ status: 500 }, { status: 503 }] },
    ]);
    const [retried] = await readLog(p.logDir, "errors", day());
    expect(String(retried?.error)).toContain("502");
  });

  test("an error event inside a stream after its 200 is logged", async () => {
    const p = await start();
    const upstreamText = `${sseChunk("partial")}${lateErrorChunk}`;
    fake.replyOnce(() => eventStream(upstreamText));
    const response = await chat(p, { body: chatBody({ stream: true }), headers: { "x-request-id": "req-late-error" } });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(upstreamText); // passed through untouched
    await p.logging.flush();
    expect(await readLog(p.logDir, "errors", day())).toMatchObject([
      { kind: "upstream", requestId: "req-late-error", status: 200, error: "error inside the answer: 502: Provider disconnected mid-answer" },
    ]);
  });

  test("a client that leaves a stream is not an upstream error", async () => {
    const p = await start();
    const upstream = controlledStream();
    fake.replyOnce(() => upstream.response);
    upstream.send(sseChunk("first"));
    const client = new AbortController();
    const recorded = nextRecord(p);
    const response = await fetch(`${p.url}/v1/chat/completions`, {
      method: "POST",
      body: chatBody({ stream: true }),
      headers: { "content-type": "application/json", authorization: `Bearer ${clientBearer}` },
      signal: client.signal,
    });
    const reader = response.body!.getReader();
    await reader.read();
    client.abort();
    expect((await recorded).aborted).toBe(true);
    await upstream.cancelled;
    await p.logging.flush();
    expect(await readLog(p.logDir, "requests", day())).toMatchObject([{ aborted: true, error: "the client closed the request" }]);
    expect(await readLog(p.logDir, "errors", day())).toEqual([]);
  });

  test("an internal exception is logged with its stack", async () => {
    const breaking = breakingFetch();
    const p = await start({ overrides: { fetch: breaking.fetch } });
    breaking.breakNext();
    const response = await chat(p, { headers: { "x-request-id": "req-internal" } });
    expect(response.status).toBe(500);
    expect(await response.json()).toMatchObject({ error: { type: "internal_error", code: "internal_error" } });
    await p.logging.flush();
    const [line, ...rest] = await readLog(p.logDir, "errors", day());
    expect(rest).toEqual([]);
    expect(line).toMatchObject({ kind: "internal", requestId: "req-internal" });
    expect(typeof line?.message).toBe("string");
    // The stack names where it broke (the request run, since the attempt loop left forward.ts).
    expect(String(line?.stack)).toContain("src/upstream/request-run.ts");
  });
});

describe("standard output", () => {
  test("one short human line per request", async () => {
    const p = await start();
    expect((await chat(p)).status).toBe(200);
    fake.replyOnce(() => errorReply(400, "bad request"));
    expect((await chat(p)).status).toBe(400);
    await p.logging.flush();
    const lines = p.output.out.split("\n").filter((line) => line !== "");
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(new RegExp(`^2026-11-2[45]T\\S+Z 200 POST /v1/chat/completions openai/gpt-4o-mini ${idA} 1 try \\d+ ms 8 tok$`));
    expect(lines[1]).toMatch(new RegExp(`^2026-11-2[45]T\\S+Z 400 POST /v1/chat/completions openai/gpt-4o-mini ${idA} 1 try \\d+ ms : upstream answered 400: bad request$`));
    expect(p.output.err).toBe("");
  });

  test.each([
    ["debug", { ok: true, failed: true, internal: true }],
    ["info", { ok: true, failed: true, internal: true }],
    ["warn", { ok: false, failed: true, internal: true }],
    ["error", { ok: false, failed: false, internal: true }],
  ] as const)("LOG_LEVEL=%s filters the human lines", async (level, shown) => {
    const breaking = breakingFetch();
    const p = await start({ config: { LOG_LEVEL: level, MAX_ATTEMPTS: 1 }, overrides: { fetch: breaking.fetch } });
    expect((await chat(p)).status).toBe(200);
    fake.replyOnce(() => errorReply(500, "provider down"));
    expect((await chat(p)).status).toBe(500);
    breaking.breakNext();
    expect((await chat(p)).status).toBe(500);
    await p.logging.flush();
    expect(p.output.out.includes(" 200 POST ")).toBe(shown.ok);
    expect(p.output.err.includes(" 500 POST ")).toBe(shown.failed); // a 5xx is a warning: stderr
    expect(p.output.err.includes(" error ")).toBe(shown.internal);
    // Whatever the level, the files get everything.
    expect(await readLog(p.logDir, "requests", day())).toHaveLength(2);
  });

  test("key warnings (cooldown, disabled) go to stderr, other key events to stdout", async () => {
    const p = await start({ config: { FAILURE_THRESHOLD: 1 } });
    fake.replyOnce(() => errorReply(429, "slow down"), () => errorReply(401, "User not found."));
    expect((await chat(p)).status).toBe(200);
    clock += 61_000;
    expect((await chat(p)).status).toBe(200);
    await p.logging.flush();
    expect(p.output.err).toContain(` key.cooldown ${idA} until `);
    expect(p.output.err).toContain(` key.disabled ${idB}: `);
    expect(p.output.out).toContain(` key.failure ${idB}`);
    expect(p.output.out).toContain(` key.recovered ${idA}`);
  });
});

describe("secrets", () => {
  test("no full key and no client Authorization value appears in any log file or in the output", async () => {
    const freshKey = "sk-or-v1-test-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee";
    const breaking = breakingFetch();
    const p = await start({
      config: { PROXY_API_KEYS: [clientBearer], ADMIN_TOKEN: adminToken, LOG_BODIES: true, LOG_LEVEL: "debug", FAILURE_THRESHOLD: 1, MAX_ATTEMPTS: 3 },
      overrides: { fetch: breaking.fetch },
    });
    // Served, rate limited, key failure and disable, upstream error, stream, late error, internal error.
    fake.replyOnce(() => errorReply(429, "slow down"), () => errorReply(401, "User not found."));
    expect((await chat(p)).status).toBe(200);
    fake.replyOnce(() => errorReply(502, "provider down"));
    expect((await chat(p)).status).toBe(200);
    fake.replyOnce(() => eventStream(`${sseChunk("partial")}${lateErrorChunk}`));
    await (await chat(p, { body: chatBody({ stream: true }) })).text();
    breaking.breakNext();
    expect((await chat(p)).status).toBe(500);
    // A wrong client key is refused, and the admin API adds and removes a key.
    expect((await chat(p, { headers: { authorization: `Bearer ${keyA}` } })).status).toBe(401);
    const admin = (method: string, path: string, body?: unknown) =>
      fetch(`${p.url}/admin${path}`, {
        method,
        headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    expect((await admin("POST", "/keys", { key: freshKey, verify: false })).status).toBe(201);
    expect((await admin("DELETE", `/keys/${keyIdOf(freshKey)}`)).status).toBe(204);
    await p.logging.flush();
    const files = await logFiles(p.logDir);
    expect(files).toEqual([`errors-${day()}.log`, `keys-${day()}.log`, `requests-${day()}.log`]);
    const secrets = [...testKeys, freshKey, clientBearer, adminToken];
    expectNoSecrets(await allLogText(p.logDir), secrets, "the log files");
    expectNoSecrets(p.output.out, secrets, "standard output");
    expectNoSecrets(p.output.err, secrets, "standard error");
    // The files did get the traffic: ids stand where keys would be.
    const text = await allLogText(p.logDir);
    for (const id of [idA, idB, keyIdOf(freshKey)]) expect(text).toContain(id);
  });
});
