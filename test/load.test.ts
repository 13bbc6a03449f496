/**
 * Load, the short version CI runs (`bun run soak` runs the full sizes: test/soak/soak.ts): the
 * proxy as its own process (`bun run src/main.ts serve`, so its resident size and descriptors can
 * be read from /proc), streams over raw sockets, and a steady rate of plain requests, all against
 * a mock upstream that records what it sent.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { readLog } from "./helpers/log-files.ts";
import { percentile, startLoadUpstream, steadyRequests, streamOverSocket, type LoadUpstream, type StreamOutcome } from "./helpers/load.ts";
import { descriptorKinds, killAllProxies, residentBytes, startProxyProcess, type ProxyProcess } from "./helpers/proxy-process.ts";
import { tempDir, testKeys } from "./helpers/test-proxy.ts";

const STREAMS = 100;
const STREAM_SECONDS = 5;
const CHUNK_INTERVAL_MS = 250;
const PER_SECOND = 50;

let upstream: LoadUpstream;
let child: ProxyProcess;
let folder: Awaited<ReturnType<typeof tempDir>>;
let logDir: string;

beforeAll(async () => {
  upstream = startLoadUpstream();
  folder = await tempDir();
  logDir = join(folder.dir, "logs");
  await writeFile(join(folder.dir, "keys.json"), JSON.stringify({ keys: testKeys.map((key, index) => ({ key, label: `load-${index}` })) }));
  child = await startProxyProcess({
    cwd: folder.dir,
    // No BUN_CONFIG_MAX_HTTP_REQUESTS here: `serve` must raise it itself.
    env: { OPENROUTER_BASE_URL: upstream.url, KEYS_FILE: join(folder.dir, "keys.json"), LOG_DIR: logDir, LOG_LEVEL: "warn" },
  });
});
afterAll(async () => {
  await killAllProxies();
  await upstream.stop();
  await folder.cleanup();
});

/** Descriptors that load must not add to: files (logs, the keys file), pipes, sockets other than
 * TCP (the child's stdio), the listener. */
const stableKinds = ["file", "pipe", "anon_inode", "socket-other", "tcp-LISTEN"];

/** Streams checked against the mock's record: the ids of those that are not 200, complete and identical. */
function badStreams(outcomes: StreamOutcome[]): string[] {
  const bad: string[] = [];
  for (const outcome of outcomes) {
    const sent = upstream.sent(outcome.id);
    if (outcome.status !== 200 || !outcome.complete || sent === undefined || outcome.body !== sent) {
      bad.push(`${outcome.id}: status ${outcome.status}, complete ${outcome.complete}, ${outcome.error ?? ""} received ${outcome.body.length} bytes, mock sent ${sent?.length ?? "nothing"}`);
    }
    upstream.forget(outcome.id);
  }
  return bad;
}

async function round(name: string): Promise<{ outcomes: StreamOutcome[]; rate: Awaited<ReturnType<ReturnType<typeof steadyRequests>["stop"]>> }> {
  const rate = steadyRequests(child.url, PER_SECOND, name);
  const chunks = (STREAM_SECONDS * 1000) / CHUNK_INTERVAL_MS;
  const outcomes = await Promise.all(
    Array.from({ length: STREAMS }, (_, i) => streamOverSocket(child.port, { id: `${name}-${i}`, chunks, intervalMs: CHUNK_INTERVAL_MS }, STREAM_SECONDS * 1000 + 10_000)),
  );
  return { outcomes, rate: await rate.stop() };
}

test(`${STREAMS} concurrent streams held for ${STREAM_SECONDS} s plus ${PER_SECOND} non-streamed requests a second: no proxy error, every stream complete and byte-identical to what the mock sent, no descriptor leaked`, async () => {
  // After startup's own connections (GET /key for each key) have come and gone.
  let before = descriptorKinds(child.pid);
  for (let tries = 0; tries < 10; tries++) {
    await Bun.sleep(100);
    const again = descriptorKinds(child.pid);
    if (JSON.stringify(again) === JSON.stringify(before) && !before["tcp-SYN_SENT"]) break;
    before = again;
  }
  const rssBefore = residentBytes(child.pid);
  const { outcomes, rate } = await round("first");
  expect(badStreams(outcomes)).toEqual([]);
  expect(rate.failures).toEqual([]);
  expect(rate.ok).toBe(rate.sent);
  expect(rate.sent).toBeGreaterThanOrEqual(PER_SECOND * STREAM_SECONDS * 0.9);
  await Bun.sleep(400); // the log flushes every 200 ms
  // Closed connections take a moment to go; a sample can also catch a socket mid-creation.
  const settled = (kinds: Record<string, number>) => stableKinds.every((kind) => (kinds[kind] ?? 0) === (before[kind] ?? 0)) && !kinds["tcp-CLOSE_WAIT"];
  let after = descriptorKinds(child.pid);
  for (let tries = 0; tries < 10 && !settled(after); tries++) {
    await Bun.sleep(200);
    after = descriptorKinds(child.pid);
  }
  console.log(
    `load: ${STREAMS} streams × ${STREAM_SECONDS} s complete; ${rate.ok}/${rate.sent} requests, p50 ${percentile(rate.latenciesMs, 50).toFixed(1)} ms, p99 ${percentile(rate.latenciesMs, 99).toFixed(1)} ms; first stream bytes p99 ${percentile(outcomes.map((o) => o.firstByteMs ?? Infinity), 99).toFixed(0)} ms; resident ${(rssBefore / 2 ** 20).toFixed(0)} → ${(residentBytes(child.pid) / 2 ** 20).toFixed(0)} MiB; descriptors ${JSON.stringify(before)} → ${JSON.stringify(after)}`,
  );
  // Nothing went to the errors log, and nothing of the proxy's own went to stderr.
  const day = new Date().toISOString().slice(0, 10);
  expect(await readLog(logDir, "errors", day)).toEqual([]);
  expect(child.stderr()).toBe("");
  // Keep-alive pools (test → proxy, proxy → mock) stay open, so established connections are not
  // compared; a leaked connection would sit in CLOSE_WAIT (its peer closed it, the proxy never did).
  expect(after["tcp-CLOSE_WAIT"] ?? 0).toBe(0);
  for (const kind of stableKinds) expect({ kind, count: after[kind] ?? 0 }).toEqual({ kind, count: before[kind] ?? 0 });
}, 30_000);

test("serve raises BUN_CONFIG_MAX_HTTP_REQUESTS itself, so 400 streams opened at once all start at once (past Bun's default of 256)", async () => {
  const environ = await readFile(`/proc/${child.pid}/environ`, "latin1");
  expect(environ.split("\0")).toContain("BUN_CONFIG_MAX_HTTP_REQUESTS=4096");
  const outcomes = await Promise.all(Array.from({ length: 400 }, (_, i) => streamOverSocket(child.port, { id: `wide-${i}`, chunks: 6, intervalMs: 500 }, 15_000)));
  expect(badStreams(outcomes)).toEqual([]);
  // With the default limit the 257th upstream request would wait for a stream to end (3 s).
  const slowest = Math.max(...outcomes.map((outcome) => outcome.firstByteMs ?? Infinity));
  expect(slowest).toBeLessThan(2000);
}, 30_000);
