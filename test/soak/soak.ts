/**
 * The soak, full size (`bun run soak`; not a bun test file, so `bun test` never picks it up):
 *
 *   1. 1,000 concurrent streams held open for a minute plus 200 non-streamed requests a second,
 *      against the proxy as its own process (`bun run src/main.ts serve`, or a compiled binary
 *      given as the first argument): no proxy error, every stream complete and byte-identical
 *      to what the mock upstream sent.
 *   2. The same load kept up for SOAK_MINUTES (default 6, at least 5) in waves of streams: the
 *      resident size grows less than 10% after the first minute, and once the load stops and
 *      idle connections time out, the open descriptors are back where they were before.
 *
 * Settings (environment): SOAK_STREAMS (1000), SOAK_HOLD_SECONDS (60), SOAK_CHUNK_MS (1000, one
 * content chunk a second per stream), SOAK_RATE (200 a second), SOAK_MINUTES (6),
 * SOAK_RSS_LIMIT_MB (8192: the run stops early rather than let the proxy take the machine's memory).
 * Prints a JSON summary as its last line; exit status 0 when every rule held, 1 otherwise.
 */
import { writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { readLog } from "../helpers/log-files.ts";
import { percentile, startLoadUpstream, steadyRequests, streamOverSocket, type RateResult, type StreamOutcome } from "../helpers/load.ts";
import { descriptorKinds, fromSource, killAllProxies, openFdCount, residentBytes, startProxyProcess } from "../helpers/proxy-process.ts";
import { tempDir, testKeys } from "../helpers/test-proxy.ts";

const setting = (name: string, fallback: number) => Number(process.env[name] ?? fallback);
const STREAMS = setting("SOAK_STREAMS", 1000);
const HOLD_SECONDS = setting("SOAK_HOLD_SECONDS", 60);
const CHUNK_MS = setting("SOAK_CHUNK_MS", 1000);
const RATE = setting("SOAK_RATE", 200);
const MINUTES = setting("SOAK_MINUTES", 6);
const RSS_LIMIT = setting("SOAK_RSS_LIMIT_MB", 8192) * 2 ** 20;
/** After the load: longer than the proxy's idle timeout (30 s) and the mock's (10 s). */
const SETTLE_SECONDS = setting("SOAK_SETTLE_SECONDS", 35);

const MiB = (bytes: number) => Math.round(bytes / 2 ** 20);
const log = (text: string) => console.log(`${new Date().toISOString().slice(11, 19)} soak: ${text}`);

const binary = process.argv[2];
const upstream = startLoadUpstream();
const folder = await tempDir();
const logDir = join(folder.dir, "logs");
await writeFile(join(folder.dir, "keys.json"), JSON.stringify({ keys: testKeys.map((key, index) => ({ key, label: `soak-${index}` })) }));
const child = await startProxyProcess({
  cwd: folder.dir,
  command: binary ? [resolve(binary)] : fromSource(),
  env: { OPENROUTER_BASE_URL: upstream.url, KEYS_FILE: join(folder.dir, "keys.json"), LOG_DIR: logDir, LOG_LEVEL: "warn" },
});
const pid = child.pid;
const problems: string[] = [];
let stopping = false;

const failStreams = (outcomes: StreamOutcome[]): number => {
  let bad = 0;
  for (const outcome of outcomes) {
    const sent = upstream.sent(outcome.id);
    if (outcome.status !== 200 || !outcome.complete || sent === undefined || outcome.body !== sent) {
      bad++;
      if (problems.length < 20) problems.push(`stream ${outcome.id}: status ${outcome.status}, complete ${outcome.complete}, ${outcome.error ?? ""} got ${outcome.body.length} bytes, mock sent ${sent?.length ?? "nothing"}`);
    }
    upstream.forget(outcome.id);
  }
  return bad;
};

try {
  await Bun.sleep(500);
  const fdsBefore = openFdCount(pid);
  const kindsBefore = descriptorKinds(pid);
  const rssStart = residentBytes(pid);
  log(`proxy pid ${pid} (${binary ?? "bun run src/main.ts"}), ${fdsBefore} descriptors ${JSON.stringify(kindsBefore)}, ${MiB(rssStart)} MiB resident`);
  log(`${STREAMS} streams × ${HOLD_SECONDS} s (a chunk every ${CHUNK_MS} ms) in waves, plus ${RATE} requests a second, for ${MINUTES} min`);

  const started = performance.now();
  const elapsed = () => (performance.now() - started) / 1000;
  const samples: Array<{ at: number; rss: number; fds: number; open: number }> = [];
  let rssAtOneMinute: number | undefined;
  let fdsAtOneMinute: number | undefined;
  const sampler = setInterval(() => {
    if (child.hasExited()) return;
    const sample = { at: Math.round(elapsed()), rss: residentBytes(pid), fds: openFdCount(pid), open: upstream.openStreams() };
    samples.push(sample);
    if (rssAtOneMinute === undefined && sample.at >= 60) {
      rssAtOneMinute = sample.rss;
      fdsAtOneMinute = sample.fds;
    }
    if (sample.rss > RSS_LIMIT && !stopping) {
      stopping = true;
      problems.push(`resident size ${MiB(sample.rss)} MiB passed SOAK_RSS_LIMIT_MB at ${sample.at} s: stopped early`);
    }
  }, 5000);
  const reporter = setInterval(() => {
    const last = samples.at(-1);
    if (last) log(`${last.at} s: ${MiB(last.rss)} MiB resident, ${last.fds} descriptors, ${last.open} streams open at the mock`);
  }, 30_000);

  const rate = steadyRequests(child.url, RATE, "req");
  let waves = 0;
  let streamsDone = 0;
  let streamsBad = 0;
  let firstWave: { bad: number; firstBytesP99: number; wallS: number } | undefined;
  const chunks = Math.max(1, Math.round((HOLD_SECONDS * 1000) / CHUNK_MS));
  while (elapsed() < MINUTES * 60 && !stopping && !child.hasExited()) {
    const wave = waves++;
    const waveStarted = performance.now();
    const outcomes = await Promise.all(
      Array.from({ length: STREAMS }, async (_, i) => {
        // Opened over the first second, not all in one instant.
        await Bun.sleep((i / STREAMS) * 1000);
        return streamOverSocket(child.port, { id: `w${wave}-${i}`, chunks, intervalMs: CHUNK_MS }, HOLD_SECONDS * 1000 + 60_000);
      }),
    );
    const bad = failStreams(outcomes);
    streamsDone += outcomes.length - bad;
    streamsBad += bad;
    const firstBytesP99 = percentile(outcomes.map((outcome) => outcome.firstByteMs ?? Infinity), 99);
    if (wave === 0) firstWave = { bad, firstBytesP99, wallS: (performance.now() - waveStarted) / 1000 };
    log(`wave ${wave}: ${outcomes.length - bad}/${outcomes.length} streams complete and identical (first bytes p99 ${firstBytesP99.toFixed(0)} ms) after ${((performance.now() - waveStarted) / 1000).toFixed(1)} s`);
  }
  const rateResult: RateResult = await rate.stop();
  clearInterval(sampler);
  clearInterval(reporter);
  const loadSeconds = elapsed();
  const rssEnd = residentBytes(pid);
  const fdsEndOfLoad = openFdCount(pid);
  const rssMax = Math.max(...samples.map((sample) => sample.rss), rssEnd);
  if (rateResult.failures.length > 0) problems.push(...rateResult.failures.slice(0, 10).map((failure) => `request ${failure}`));

  log(`load stopped after ${loadSeconds.toFixed(0)} s; waiting ${SETTLE_SECONDS} s for idle connections to time out`);
  await Bun.sleep(SETTLE_SECONDS * 1000);
  const fdsAfter = openFdCount(pid);
  const kindsAfter = descriptorKinds(pid);
  const rssAfterSettle = residentBytes(pid);

  const day = new Date().toISOString().slice(0, 10);
  const errorLines = (await readLog(logDir, "errors", day)).length;
  const stderr = child.stderr();
  const alive = !child.hasExited();
  child.signal("SIGTERM");
  const exitCode = await child.exited;

  const growth = rssAtOneMinute === undefined ? undefined : (rssEnd - rssAtOneMinute) / rssAtOneMinute;
  const rules = {
    "no proxy error (errors log empty, nothing on stderr, exit 0 on SIGTERM)": errorLines === 0 && stderr === "" && alive && exitCode === 0,
    "every stream complete and byte-identical": streamsBad === 0 && streamsDone > 0,
    "every request answered 200 with the mock's bytes": rateResult.ok === rateResult.sent && rateResult.sent > 0,
    "soak lasted at least 5 minutes": loadSeconds >= 5 * 60,
    "resident size grew less than 10% after the first minute": growth !== undefined && growth < 0.1,
    "descriptors back to where they started, none in CLOSE_WAIT": fdsAfter <= fdsBefore && (kindsAfter["tcp-CLOSE_WAIT"] ?? 0) === 0,
  };
  const summary = {
    streamsPerWave: STREAMS,
    holdSeconds: HOLD_SECONDS,
    chunkMs: CHUNK_MS,
    ratePerSecond: RATE,
    loadSeconds: Math.round(loadSeconds),
    waves,
    streamsCompleted: streamsDone,
    streamsFailed: streamsBad,
    firstWave,
    requests: { sent: rateResult.sent, ok: rateResult.ok, p50Ms: +percentile(rateResult.latenciesMs, 50).toFixed(1), p99Ms: +percentile(rateResult.latenciesMs, 99).toFixed(1) },
    rssMiB: { start: MiB(rssStart), atOneMinute: rssAtOneMinute === undefined ? null : MiB(rssAtOneMinute), end: MiB(rssEnd), max: MiB(rssMax), afterSettle: MiB(rssAfterSettle), growthAfterFirstMinutePct: growth === undefined ? null : +(growth * 100).toFixed(1) },
    fds: { before: fdsBefore, atOneMinute: fdsAtOneMinute ?? null, endOfLoad: fdsEndOfLoad, after: fdsAfter, kindsBefore, kindsAfter },
    errorLogLines: errorLines,
    stderr: stderr.slice(0, 500),
    exitCode,
    rssSeriesMiB: samples.filter((_, index) => index % 6 === 0).map((sample) => [sample.at, MiB(sample.rss)]),
    problems,
    rules,
  };
  for (const [rule, held] of Object.entries(rules)) log(`${held ? "ok  " : "FAIL"} ${rule}`);
  console.log(JSON.stringify(summary));
  process.exitCode = Object.values(rules).every(Boolean) && problems.length === 0 ? 0 : 1;
} finally {
  await killAllProxies();
  await upstream.stop();
  await folder.cleanup();
}
