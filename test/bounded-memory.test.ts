/**
 * One answer can be gigabytes; the proxy's memory for it must not be. The proxy runs as its own
 * process so its resident size can be read from /proc while a 1 GiB answer passes through it.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { killAllProxies, residentBytes, startProxyProcess, type ProxyProcess } from "./helpers/proxy-process.ts";
import { tempDir, testKeys } from "./helpers/test-proxy.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

/** A JSON answer of `size` bytes made on the fly from one 1 MiB buffer: `{"data":"xxxx…"}`. */
function hugeJson(size: number, status = 200): Response {
  const open = new TextEncoder().encode('{"data":"');
  const close = new TextEncoder().encode('"}');
  const filler = new Uint8Array(MiB).fill(0x78);
  let left = size - open.byteLength - close.byteLength;
  let started = false;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (!started) {
        started = true;
        controller.enqueue(open);
        return;
      }
      if (left <= 0) {
        controller.enqueue(close);
        controller.close();
        return;
      }
      const piece = Math.min(left, filler.byteLength);
      controller.enqueue(piece === filler.byteLength ? filler : filler.subarray(0, piece));
      left -= piece;
    },
  });
  return new Response(body, { status, headers: { "content-type": "application/json" } });
}

let upstreamRequests = 0;
let nextAnswer: () => Response = () => hugeJson(GiB);
const upstream = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  idleTimeout: 0,
  fetch(request) {
    // GET /key at startup (account discovery) gets a small answer; the chat requests the big one.
    if (new URL(request.url).pathname.endsWith("/key")) return Response.json({ data: { label: "k", usage: 0, limit: null } });
    upstreamRequests++;
    return nextAnswer();
  },
});
let folder: Awaited<ReturnType<typeof tempDir>>;
let proxy: ProxyProcess;

beforeAll(async () => {
  folder = await tempDir();
  await writeFile(join(folder.dir, "keys.json"), JSON.stringify({ keys: testKeys.map((key) => ({ key })) }));
  proxy = await startProxyProcess({
    cwd: folder.dir,
    env: {
      OPENROUTER_BASE_URL: `http://127.0.0.1:${upstream.port}/api/v1`,
      KEYS_FILE: join(folder.dir, "keys.json"),
      LOG_DIR: join(folder.dir, "logs"),
      LOG_LEVEL: "warn",
      RETRY_BACKOFF_MS: "0",
    },
  });
});
afterAll(async () => {
  await killAllProxies();
  await upstream.stop(true);
  await folder.cleanup();
});

/** Reads a whole answer, keeping only its size and its last bytes. */
async function drain(response: Response): Promise<{ bytes: number; tail: string }> {
  let bytes = 0;
  let last: Uint8Array = new Uint8Array(0);
  for await (const chunk of response.body as ReadableStream<Uint8Array>) {
    bytes += chunk.byteLength;
    last = chunk;
  }
  return { bytes, tail: new TextDecoder().decode(last.subarray(-2)) };
}

/** The highest resident size of the proxy while `work` runs, sampled every 20 ms. */
async function peakResident<T>(work: Promise<T>): Promise<{ result: T; peak: number }> {
  let peak = residentBytes(proxy.pid);
  let running = true;
  const sampler = (async () => {
    while (running) {
      peak = Math.max(peak, residentBytes(proxy.pid));
      await Bun.sleep(20); // sampling a level, not waiting for an event
    }
  })();
  try {
    return { result: await work, peak };
  } finally {
    running = false;
    await sampler;
  }
}

const chat = () =>
  fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
  });

describe("bounded memory per answer", () => {
  test("a 1 GiB answer reaches the client complete while the proxy grows by less than 64 MB", async () => {
    nextAnswer = () => hugeJson(GiB);
    const before = residentBytes(proxy.pid);
    const { result, peak } = await peakResident(chat().then(async (response) => ({ status: response.status, ...(await drain(response)) })));
    expect(result).toEqual({ status: 200, bytes: GiB, tail: '"}' });
    expect(peak - before).toBeLessThan(64 * MiB);
  }, 120_000);

  test("four 1 GiB answers at once: the proxy grows by less than 128 MB", async () => {
    nextAnswer = () => hugeJson(GiB);
    const before = residentBytes(proxy.pid);
    const all = Promise.all([1, 2, 3, 4].map(() => chat().then(async (response) => ({ status: response.status, ...(await drain(response)) }))));
    const { result, peak } = await peakResident(all);
    for (const each of result) expect(each).toEqual({ status: 200, bytes: GiB, tail: '"}' });
    expect(peak - before).toBeLessThan(128 * MiB);
  }, 300_000);

  test("a 256 MiB error answer is read only in part while retried, and the last one reaches the client whole", async () => {
    nextAnswer = () => hugeJson(256 * MiB, 500);
    const before = residentBytes(proxy.pid);
    const seenBefore = upstreamRequests;
    const { result, peak } = await peakResident(chat().then(async (response) => ({ status: response.status, ...(await drain(response)) })));
    expect(upstreamRequests - seenBefore).toBe(3); // MAX_ATTEMPTS, each on another key
    expect(result).toEqual({ status: 500, bytes: 256 * MiB, tail: '"}' });
    expect(peak - before).toBeLessThan(64 * MiB);
  }, 120_000);
});
