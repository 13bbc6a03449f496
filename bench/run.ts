/**
 * Benchmark orchestrator: `bun run bench/run.ts [--quick] [--help]`.
 *
 * Starts a mock OpenRouter (bench/mock-upstream.ts), the bare pass-through (bench/pass-through.ts,
 * the floor) and the proxy (command from BENCH_PROXY_CMD, default ./dist/openrouter-proxy), each a
 * separate process, then measures sections (a)-(f) against each in turn and prints one table with
 * (section (g), the proxy with REDIS_URL against its keys file, runs after them: bench/lib/redis-section.ts)
 * every proxy figure as a ratio to the pass-through's from the same run. Results also go to
 * bench/results/<date>.json. See bench/README.md.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { parseArgs } from "node:util";
import type { LoadResult } from "./loadgen.ts";
import type { StreamClientConfig, StreamOpenEvent, StreamResult } from "./stream-client.ts";
import { type Child, commandArgv, cpuMs, envOf, forEachLine, freePort, killTree, machineBusy, readReadyLine, rssBytes, sleep, waitForOk } from "./lib/proc.ts";
import { median, type Percentiles } from "./lib/stats.ts";
import { countFileWrites } from "./lib/file-writes.ts";
import { redisSection } from "./lib/redis-section.ts";
import { renderTable, type Row } from "./lib/table.ts";

const BENCH_DIR = import.meta.dir;
const ROOT = dirname(BENCH_DIR);
const BUN = process.execPath;
const HOST = "127.0.0.1";
const MB = 1024 * 1024;

// ------------------------------------------------------------------ options

const HELP = `usage: bun run bench/run.ts [options]

  --quick                  every section at tiny scale (also BENCH_QUICK=1); no thresholds
  --duration <s>           (a) seconds per target                      [10, quick 1]
  --connections <n>        (a) wrk connections                         [64, quick 16]
  --latency-duration <s>   (b) seconds per target on one connection    [5, quick 1]
  --warmup <s>             warm-up seconds before each wrk measurement [2, quick 0 = none]
  --streams <n>            (c) concurrent streams                      [500, quick 20]
  --chunks <n>             (c) chunks per stream                       [50, quick 5]
  --chunk-delay <ms>       (c) mock delay between chunks               [20]
  --stream-rounds <n>      (c) rounds per target, interleaved; medians [5, quick 1]
  --hold-streams <n>       (d) streams held open for the RSS reading   [1000, quick 20]
  --models-duration <s>    (e) seconds per target                      [5, quick 1]
  --models-connections <n> (e) wrk connections                         [16, quick 4]
  --startup-runs <n>       (f) spawns per binary, median reported      [5, quick 2]
  --threads <n>            wrk threads                                 [1]
  --loadgen <auto|wrk|bun> load generator                              [auto: wrk if installed]
  --only <a,b,...>         run only these sections ((g): the proxy with REDIS_URL against the
                           keys file, bench/redis-proxy.ts; skipped without redis-server)
  --fetch-limit <n>        BUN_CONFIG_MAX_HTTP_REQUESTS for the pass-through [4096]
  --pin                    taskset: pass-through/proxy on CPU 1, everything else on CPU 0
                           (less scheduling noise; off by default, all processes share both cores)
  --out <file>             results JSON path            [bench/results/<date>.json]
  --keep-temp              keep the temp folder (keys.json, logs)

env: BENCH_PROXY_CMD  proxy command [./dist/openrouter-proxy], run from the repo root with
                      PORT, HOST, OPENROUTER_BASE_URL, KEYS_FILE and LOG_DIR set
     BENCH_CLIENT_AUTH  Authorization header clients send to the proxy [Bearer sk-client-bench]`;

interface Options {
  quick: boolean;
  durationS: number;
  connections: number;
  latencyDurationS: number;
  warmupS: number;
  streams: number;
  chunks: number;
  chunkDelayMs: number;
  streamRounds: number;
  holdStreams: number;
  modelsDurationS: number;
  modelsConnections: number;
  startupRuns: number;
  threads: number;
  loadgen: "auto" | "wrk" | "bun";
  only: Set<string>;
  fetchLimit: number;
  out: string | undefined;
  keepTemp: boolean;
  pin: boolean;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    args: Bun.argv.slice(2),
    options: {
      quick: { type: "boolean", default: false },
      duration: { type: "string" },
      connections: { type: "string" },
      "latency-duration": { type: "string" },
      warmup: { type: "string" },
      streams: { type: "string" },
      chunks: { type: "string" },
      "chunk-delay": { type: "string" },
      "stream-rounds": { type: "string" },
      "hold-streams": { type: "string" },
      "models-duration": { type: "string" },
      "models-connections": { type: "string" },
      "startup-runs": { type: "string" },
      threads: { type: "string" },
      loadgen: { type: "string", default: "auto" },
      only: { type: "string" },
      "fetch-limit": { type: "string" },
      out: { type: "string" },
      "keep-temp": { type: "boolean", default: false },
      pin: { type: "boolean", default: false },
      help: { type: "boolean", default: false },
    },
  });
  if (values.help) {
    console.log(HELP);
    process.exit(0);
  }
  const quick = values.quick || process.env.BENCH_QUICK === "1";
  const num = (raw: string | undefined, full: number, small: number, min: number, max: number, name: string): number => {
    if (raw === undefined) return quick ? small : full;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${name} must be a number in [${min}, ${max}], got ${raw}`);
    return n;
  };
  const loadgen = values.loadgen;
  if (loadgen !== "auto" && loadgen !== "wrk" && loadgen !== "bun") throw new Error(`--loadgen must be auto, wrk or bun`);
  const sections = "abcdefg";
  const only = new Set((values.only ?? "a,b,c,d,e,f,g").split(",").map((s) => s.trim().toLowerCase()));
  for (const s of only) if (!sections.includes(s) || s.length !== 1) throw new Error(`--only takes letters from a-g, got ${s}`);
  return {
    quick,
    durationS: Math.round(num(values.duration, 10, 1, 1, 120, "duration")),
    connections: num(values.connections, 64, 16, 1, 1000, "connections"),
    latencyDurationS: Math.round(num(values["latency-duration"], 5, 1, 1, 60, "latency-duration")),
    warmupS: Math.round(num(values.warmup, 2, 0, 0, 30, "warmup")),
    streams: num(values.streams, 500, 20, 1, 5000, "streams"),
    chunks: num(values.chunks, 50, 5, 1, 1000, "chunks"),
    chunkDelayMs: num(values["chunk-delay"], 20, 20, 0, 1000, "chunk-delay"),
    streamRounds: Math.round(num(values["stream-rounds"], 5, 1, 1, 20, "stream-rounds")),
    holdStreams: num(values["hold-streams"], 1000, 20, 1, 5000, "hold-streams"),
    modelsDurationS: Math.round(num(values["models-duration"], 5, 1, 1, 60, "models-duration")),
    modelsConnections: num(values["models-connections"], 16, 4, 1, 1000, "models-connections"),
    startupRuns: num(values["startup-runs"], 5, 2, 1, 50, "startup-runs"),
    threads: num(values.threads, 1, 1, 1, 16, "threads"),
    loadgen,
    only,
    fetchLimit: num(values["fetch-limit"], 4096, 4096, 1, 65_535, "fetch-limit"),
    out: values.out,
    keepTemp: values["keep-temp"],
    pin: values.pin,
  };
}

// ------------------------------------------------------------------ processes

/** With --pin: targets run on CPU 1, the mock, load generators, stream client and this script on CPU 0. */
let pinning = false;
const onLoadCpu = (argv: string[]): string[] => (pinning ? ["taskset", "-c", "0", ...argv] : argv);
const onTargetCpu = (argv: string[]): string[] => (pinning ? ["taskset", "-c", "1", ...argv] : argv);

const children = new Set<Child>();
const log = (msg: string): void => {
  process.stderr.write(`» ${msg}\n`);
};
const warnings: string[] = [];
const warn = (msg: string): void => {
  warnings.push(msg);
  log(`warning: ${msg}`);
};

/** The environment every child starts from: ours, minus proxies and anything that could send traffic elsewhere. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v === undefined || /^(https?|all|no)_proxy$/i.test(k) || k.startsWith("OPENROUTER_") || k.startsWith("BENCH_")) continue;
    env[k] = v;
  }
  env.NO_PROXY = "127.0.0.1,localhost";
  return env;
}

function spawnLogged(argv: string[], env: Record<string, string>, logBase: string): Child {
  const child = Bun.spawn(argv, {
    cwd: ROOT,
    env,
    stdin: "ignore",
    stdout: Bun.file(`${logBase}.out.log`),
    stderr: Bun.file(`${logBase}.err.log`),
  });
  children.add(child);
  return child;
}

async function stopChild(child: Child): Promise<void> {
  await killTree(child);
  children.delete(child);
}

interface Target {
  name: "mock" | "pass-through" | "proxy";
  /** base URL clients use, without trailing slash: .../v1 or .../api/v1 */
  base: string;
  auth: string;
  child: Child;
}

// ------------------------------------------------------------------ load generation

interface LoadGen {
  kind: "wrk" | "bun";
  describe: string;
}

function detectLoadGen(choice: Options["loadgen"]): LoadGen {
  const wrk = Bun.which("wrk");
  if (wrk !== null && choice !== "bun") {
    const v = Bun.spawnSync([wrk, "-v"]);
    const version = (`${v.stdout.toString()}${v.stderr.toString()}`.split("\n")[0] ?? "wrk").replace(/\s*Copyright.*$/, "").trim();
    return { kind: "wrk", describe: `${version} at ${wrk}, Lua scripts in bench/wrk/` };
  }
  if (choice === "wrk") throw new Error("--loadgen wrk but wrk is not installed: apt-get update && apt-get install -y wrk");
  if (wrk === null) {
    warn("wrk is not installed (apt-get update && apt-get install -y wrk); using the Bun fallback bench/loadgen.ts, which costs more CPU");
  }
  return { kind: "bun", describe: "Bun fallback (bench/loadgen.ts); install wrk for lower overhead: apt-get update && apt-get install -y wrk" };
}

const CHAT_BODY = JSON.stringify({
  model: "openai/gpt-4o-mini",
  stream: false,
  max_tokens: 64,
  temperature: 0.2,
  messages: [
    { role: "system", content: "You are a concise assistant." },
    { role: "user", content: "What is the capital of France? Answer in two sentences." },
  ],
});

async function load(gen: LoadGen, opts: Options, t: Target, kind: "chat" | "models", connections: number, seconds: number): Promise<LoadResult> {
  const url = `${t.base}/${kind === "chat" ? "chat/completions" : "models"}`;
  const env = { ...baseEnv(), BENCH_CLIENT_AUTH: t.auth, BUN_CONFIG_MAX_HTTP_REQUESTS: String(Math.max(256, connections * 2)) };
  const argv =
    gen.kind === "wrk"
      ? ["wrk", `-t${Math.min(opts.threads, connections)}`, `-c${connections}`, `-d${seconds}s`, "--timeout", "10s", "-s", join(BENCH_DIR, "wrk", `${kind}.lua`), url]
      : [
          BUN,
          "run",
          join(BENCH_DIR, "loadgen.ts"),
          JSON.stringify({
            url,
            method: kind === "chat" ? "POST" : "GET",
            headers: kind === "chat" ? { authorization: t.auth, "content-type": "application/json" } : { authorization: t.auth },
            body: kind === "chat" ? CHAT_BODY : undefined,
            connections,
            durationMs: seconds * 1000,
          }),
        ];
  const child = Bun.spawn(onLoadCpu(argv), { cwd: ROOT, env, stdin: "ignore", stdout: "pipe", stderr: "pipe" });
  children.add(child);
  let result: LoadResult | undefined;
  const out: string[] = [];
  try {
    await forEachLine(child, seconds * 1000 + 20_000, (line) => {
      if (line.startsWith("BENCH_JSON ")) result = JSON.parse(line.slice("BENCH_JSON ".length)) as LoadResult;
      else if (out.length < 40) out.push(line);
    });
  } finally {
    children.delete(child);
  }
  if (result === undefined) {
    const err = await new Response(child.stderr instanceof ReadableStream ? child.stderr : null).text();
    throw new Error(`${gen.kind} against ${url} printed no result:\n${out.join("\n")}\n${err}`);
  }
  const e = result.errors;
  const bad = e.connect + e.read + e.write + e.status + e.timeout;
  if (bad > 0) warn(`${t.name} ${kind}: ${bad} errors out of ${result.requests} requests ${JSON.stringify(e)}`);
  return result;
}

const reqPerS = (r: LoadResult): number => r.requests / (r.duration_us / 1e6);
const ms = (us: number): number => us / 1000;

async function runStreamClient(cfg: StreamClientConfig, onOpen?: (e: StreamOpenEvent) => Promise<void>): Promise<StreamResult> {
  const child = Bun.spawn(onLoadCpu([BUN, "run", join(BENCH_DIR, "stream-client.ts"), JSON.stringify(cfg)]), {
    cwd: ROOT,
    env: baseEnv(),
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  children.add(child);
  let result: StreamResult | undefined;
  try {
    await forEachLine(child, cfg.timeoutMs + 15_000, async (line) => {
      if (!line.startsWith("{")) return;
      const ev = JSON.parse(line) as StreamOpenEvent | StreamResult;
      if (ev.event === "open") await onOpen?.(ev);
      else result = ev;
    });
  } finally {
    children.delete(child);
  }
  if (result === undefined) {
    const err = await new Response(child.stderr instanceof ReadableStream ? child.stderr : null).text();
    throw new Error(`stream-client against ${cfg.url} printed no result:\n${err.slice(0, 2000)}`);
  }
  return result;
}

// ------------------------------------------------------------------ checks

async function sanityCheck(t: Target, opts: Options): Promise<void> {
  const headers = { authorization: t.auth, "content-type": "application/json" };
  const res = await fetch(`${t.base}/chat/completions`, { method: "POST", headers, body: CHAT_BODY, signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  if (res.status !== 200 || !text.includes('"usage"')) {
    throw new Error(`${t.name}: POST ${t.base}/chat/completions answered ${res.status}: ${text.slice(0, 300)}`);
  }
  const models = await fetch(`${t.base}/models`, { headers: { authorization: t.auth }, signal: AbortSignal.timeout(5000) });
  const size = (await models.arrayBuffer()).byteLength;
  if (models.status !== 200 || size < 100_000) throw new Error(`${t.name}: GET ${t.base}/models answered ${models.status} with ${size} bytes`);
  const stream = await fetch(`${t.base}/chat/completions`, {
    method: "POST",
    headers: { ...headers, "x-mock-chunks": "3", "x-mock-delay-ms": "1" },
    body: JSON.stringify({ model: "openai/gpt-4o-mini", stream: true, messages: [{ role: "user", content: "hi" }] }),
    signal: AbortSignal.timeout(10_000),
  });
  const sse = await stream.text();
  const events = sse.split("\n\n").filter((e) => e.startsWith("data:"));
  if (stream.status !== 200 || !sse.includes("data: [DONE]")) throw new Error(`${t.name}: stream answered ${stream.status}: ${sse.slice(0, 300)}`);
  if (events.length !== 3 + 3) {
    warn(
      `${t.name} does not seem to forward the x-mock-chunks/x-mock-delay-ms request headers (${events.length - 3} chunks instead of 3); ` +
        `(c) still works (the mock's defaults are ${opts.chunks} chunks ${opts.chunkDelayMs} ms apart) but (d) streams may end before the reading`,
    );
  }
}

// ------------------------------------------------------------------ main

interface Results {
  idleRss: Partial<Record<Target["name"], number>>;
  afterARss: Partial<Record<Target["name"], number>>;
  holdRss: Partial<Record<Target["name"], { rss: number; open: StreamOpenEvent | undefined; result: StreamResult }>>;
  a: Partial<Record<Target["name"], { load: LoadResult; cpuMs: number; cpuUsPerReq: number; keysFileWrites: number }>>;
  b: Partial<Record<Target["name"], LoadResult>>;
  /** per target: the median over rounds of each figure */
  c: Partial<Record<Target["name"], StreamResult>>;
  cRounds: Partial<Record<Target["name"], StreamResult[]>>;
  e: Partial<Record<Target["name"], LoadResult>>;
  f: Partial<Record<Target["name"], number[]>>;
}

async function main(opts: Options, tmp: string): Promise<void> {
  const started = performance.now();
  const date = new Date().toISOString().replace(/\.\d+Z$/, "Z");
  const gen = detectLoadGen(opts.loadgen);
  const proxyCmd = process.env.BENCH_PROXY_CMD ?? "./dist/openrouter-proxy";
  const proxyArgv = commandArgv(proxyCmd);
  const exe = proxyArgv[0] === "sh" ? undefined : proxyArgv[0];
  if (exe !== undefined && (exe.includes("/") ? !existsSync(resolve(ROOT, exe)) : Bun.which(exe) === null)) {
    throw new Error(`proxy command not found: ${exe} (from BENCH_PROXY_CMD=${proxyCmd}). Build it with \`bun run build\`, or point BENCH_PROXY_CMD elsewhere.`);
  }
  const clientAuth = process.env.BENCH_CLIENT_AUTH ?? "Bearer sk-client-bench";
  if (opts.pin) {
    if (cpus().length < 2 || Bun.which("taskset") === null) throw new Error("--pin needs 2+ CPUs and taskset (util-linux)");
    pinning = true;
    Bun.spawnSync(["taskset", "-a", "-p", "-c", "0", String(process.pid)]);
  }
  const busyBefore = await machineBusy(500);
  if (busyBefore > 0.15) {
    warn(`the machine was already ${Math.round(busyBefore * 100)}% busy before the bench started (other processes); expect noisy figures`);
  }

  // fake keys (each target instance gets its own copy of keys.json, in case it writes to it) and logs
  const keys = ["a", "b", "c", "d"].map((label, i) => ({ key: `sk-or-v1-bench${i}${"0123456789abcdef".repeat(4)}`, label }));
  const logs = join(tmp, "logs");
  mkdirSync(logs);

  // mock upstream
  log("starting mock upstream");
  const mockChild = Bun.spawn(onLoadCpu([BUN, "run", join(BENCH_DIR, "mock-upstream.ts")]), {
    cwd: ROOT,
    env: { ...baseEnv(), PORT: "0", HOST, MOCK_CHUNKS: String(opts.chunks), MOCK_DELAY_MS: String(opts.chunkDelayMs) },
    stdin: "ignore",
    stdout: "pipe",
    stderr: Bun.file(join(logs, "mock.err.log")),
  });
  children.add(mockChild);
  const ready = await readReadyLine(mockChild, 10_000);
  const mockPort = Number(ready.port);
  const modelsBytes = Number(ready.modelsBytes);
  const upstream = `http://${HOST}:${mockPort}/api/v1`;
  const firstKey = keys[0]?.key ?? "";
  const mock: Target = { name: "mock", base: upstream, auth: `Bearer ${firstKey}`, child: mockChild };

  const targetEnv = (port: number, dir: string): Record<string, string> => {
    const keysFile = join(dir, "keys.json");
    writeFileSync(keysFile, JSON.stringify({ keys }, null, 2));
    const logDir = join(dir, "logs");
    mkdirSync(logDir, { recursive: true });
    return { ...baseEnv(), PORT: String(port), HOST, OPENROUTER_BASE_URL: upstream, KEYS_FILE: keysFile, LOG_DIR: logDir };
  };
  const ptArgv = [BUN, "run", join(BENCH_DIR, "pass-through.ts")];
  const ptEnv = (port: number, dir: string): Record<string, string> => ({
    ...targetEnv(port, dir),
    BUN_CONFIG_MAX_HTTP_REQUESTS: String(opts.fetchLimit),
  });
  const proxyEnv = (port: number, dir: string): Record<string, string> => targetEnv(port, dir);

  const startTarget = async (name: "pass-through" | "proxy", argv: string[], env: (p: number, l: string) => Record<string, string>, tag: string): Promise<{ target: Target; startMs: number }> => {
    const port = freePort();
    const dir = join(tmp, tag);
    mkdirSync(dir, { recursive: true });
    const childEnv = env(port, dir);
    const t0 = performance.now();
    const child = spawnLogged(onTargetCpu(argv), childEnv, join(logs, tag));
    try {
      const startMs = await waitForOk(`http://${HOST}:${port}/healthz`, t0, 15_000, 2, child);
      return { target: { name, base: `http://${HOST}:${port}/v1`, auth: clientAuth, child }, startMs };
    } catch (err) {
      await stopChild(child);
      throw new Error(`${name} (${argv.join(" ")}) did not come up: ${err instanceof Error ? err.message : String(err)}; logs in ${logs}/${tag}.*.log`);
    }
  };

  log("starting pass-through and proxy");
  const pt = (await startTarget("pass-through", ptArgv, ptEnv, "pass-through")).target;
  const proxy = (await startTarget("proxy", proxyArgv, proxyEnv, "proxy")).target;
  const pair = [pt, proxy];
  const trio = [mock, pt, proxy];
  const proxyFetchLimit = envOf(proxy.child.pid, "BUN_CONFIG_MAX_HTTP_REQUESTS");

  const res: Results = { idleRss: {}, afterARss: {}, holdRss: {}, a: {}, b: {}, c: {}, cRounds: {}, e: {}, f: {} };
  const has = (s: string): boolean => opts.only.has(s);

  if (has("d")) {
    await sleep(300);
    for (const t of pair) res.idleRss[t.name] = rssBytes(t.child.pid);
  }
  for (const t of trio) await sanityCheck(t, opts);

  if (has("f")) {
    for (const [name, argv, env] of [
      ["pass-through", ptArgv, ptEnv],
      ["proxy", proxyArgv, proxyEnv],
    ] as const) {
      const times: number[] = [];
      for (let i = 0; i < opts.startupRuns; i++) {
        log(`(f) start ${name} #${i + 1}`);
        const { target, startMs } = await startTarget(name, [...argv], env, `startup-${name}-${i}`);
        times.push(startMs);
        await stopChild(target.child);
      }
      res.f[name] = times;
    }
  }

  if (has("b")) {
    for (const t of trio) {
      log(`(b) one connection -> ${t.name}, ${opts.latencyDurationS} s`);
      if (opts.warmupS > 0) await load(gen, opts, t, "chat", 1, 1);
      res.b[t.name] = await load(gen, opts, t, "chat", 1, opts.latencyDurationS);
    }
  }

  if (has("a")) {
    for (const t of pair) {
      log(`(a) ${opts.connections} connections -> ${t.name}, ${opts.warmupS} s warm-up + ${opts.durationS} s`);
      if (opts.warmupS > 0) await load(gen, opts, t, "chat", opts.connections, opts.warmupS);
      const before = cpuMs(t.child.pid);
      // The pass-through never writes its keys file; the proxy saves counters on a timer.
      const writes = countFileWrites(join(tmp, t.name, "keys.json"));
      const r = await load(gen, opts, t, "chat", opts.connections, opts.durationS);
      const used = cpuMs(t.child.pid) - before;
      const keysFileWrites = (await writes.stop()).length;
      res.a[t.name] = { load: r, cpuMs: used, cpuUsPerReq: r.requests > 0 ? (used * 1000) / r.requests : Number.NaN, keysFileWrites };
      if (has("d")) res.afterARss[t.name] = rssBytes(t.child.pid);
    }
  }

  if (has("e")) {
    for (const t of pair) {
      log(`(e) GET /models, ${opts.modelsConnections} connections -> ${t.name}, ${opts.modelsDurationS} s`);
      if (opts.warmupS > 0) await load(gen, opts, t, "models", opts.modelsConnections, 1);
      res.e[t.name] = await load(gen, opts, t, "models", opts.modelsConnections, opts.modelsDurationS);
    }
  }

  const streamCfg = (t: Target, streams: number, chunks: number, delayMs: number): StreamClientConfig => ({
    url: `${t.base}/chat/completions`,
    auth: t.auth,
    streams,
    chunks,
    delayMs,
    clockUrl: `http://${HOST}:${mockPort}/__clock`,
    mode: "complete",
    holdOpenTimeoutMs: 0,
    holdMs: 0,
    staggerMs: delayMs,
    timeoutMs: 30_000 + chunks * delayMs * 3,
  });

  if (has("c")) {
    const rounds: Partial<Record<Target["name"], StreamResult[]>> = {};
    for (const t of trio) await runStreamClient(streamCfg(t, Math.min(50, opts.streams), 5, opts.chunkDelayMs)); // warm-up
    for (let round = 0; round < opts.streamRounds; round++) {
      // rotate the order each round so no target always runs right after another one's load
      const order = [...trio.slice(round % trio.length), ...trio.slice(0, round % trio.length)];
      for (const t of order) {
        log(`(c) ${opts.streams} streams x ${opts.chunks} chunks -> ${t.name}, round ${round + 1}/${opts.streamRounds}`);
        const r = await runStreamClient(streamCfg(t, opts.streams, opts.chunks, opts.chunkDelayMs));
        if (r.failed > 0) warn(`(c) ${t.name}: ${r.failed}/${r.streams} streams failed: ${r.errors.join(" | ")}`);
        (rounds[t.name] ??= []).push(r);
      }
    }
    for (const t of trio) {
      const list = rounds[t.name] ?? [];
      res.c[t.name] = medianOfRounds(list);
      res.cRounds[t.name] = list;
    }
  }

  if (has("d")) {
    const delayMs = 100;
    const holdOpenTimeoutMs = opts.quick ? 3000 : 10_000;
    const holdMs = 800;
    const chunks = Math.ceil((holdOpenTimeoutMs + holdMs + 10_000) / delayMs);
    for (const t of pair) {
      log(`(d) ${opts.holdStreams} streams held open -> ${t.name}`);
      let peak = 0;
      let openEv: StreamOpenEvent | undefined;
      const r = await runStreamClient(
        { ...streamCfg(t, opts.holdStreams, chunks, delayMs), mode: "hold", holdOpenTimeoutMs, holdMs, staggerMs: 200, timeoutMs: holdOpenTimeoutMs + holdMs + 15_000 },
        async (ev) => {
          openEv = ev;
          for (let i = 0; i < 4; i++) {
            peak = Math.max(peak, rssBytes(t.child.pid));
            await sleep(150);
          }
        },
      );
      if (openEv !== undefined && openEv.openNow < opts.holdStreams) {
        warn(`(d) ${t.name}: only ${openEv.openNow}/${opts.holdStreams} streams were open when RSS was read (waited ${Math.round(openEv.waitedMs)} ms)`);
      }
      if (r.failed > 0) warn(`(d) ${t.name}: ${r.failed} streams failed: ${r.errors.join(" | ")}`);
      res.holdRss[t.name] = { rss: peak, open: openEv, result: r };
    }
  }

  // ---------------------------------------------------------------- report
  const rows = buildRows(opts, res, modelsBytes);
  const stats = (await (await fetch(`http://${HOST}:${mockPort}/__stats`)).json()) as { perKey: Record<string, number>; unauthorized: number };
  const keyUse = keys.map((k) => `${k.label}=${stats.perKey[`Bearer ${k.key}`] ?? 0}`).join(" ");
  const elapsedS = (performance.now() - started) / 1000;
  const cores = cpus().length;

  const lines: string[] = [];
  lines.push(`openrouter-proxy bench, ${date}${opts.quick ? " (--quick: tiny scale, smoke test only)" : ""}`);
  lines.push(`load generator: ${gen.describe}`);
  lines.push(`proxy: ${proxyCmd} | floor: bun run bench/pass-through.ts | upstream: bun run bench/mock-upstream.ts (each its own process)`);
  lines.push(
    `machine: ${cores} cores, ${Math.round(busyBefore * 100)}% busy just before the start, load avg ${loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")} at the end; ${
      opts.pin
        ? "--pin: pass-through and proxy on CPU 1, mock, load generator and stream client on CPU 0"
        : `mock, pass-through, proxy, load generator and stream client all share these ${cores} cores`
    }, so read ratios, not absolutes`,
  );
  lines.push(
    `Bun fetch caps concurrent requests at 256 unless BUN_CONFIG_MAX_HTTP_REQUESTS is set: the pass-through gets ${opts.fetchLimit}; ` +
      `the proxy process has ${proxyFetchLimit === undefined ? "it unset (it gets only its env contract on top of this shell's environment)" : `BUN_CONFIG_MAX_HTTP_REQUESTS=${proxyFetchLimit}`}`,
  );
  lines.push("");
  lines.push(renderTable(rows));
  lines.push("");
  lines.push(`upstream requests per key over the whole run (the pass-through always uses key a): ${keyUse}; unauthorized at the mock: ${stats.unauthorized}`);
  for (const w of warnings) lines.push(`warning: ${w}`);

  const outPath = opts.out ?? join(BENCH_DIR, "results", `${date.replace(/:/g, "-")}${opts.quick ? "-quick" : ""}.json`);
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(
    outPath,
    `${JSON.stringify(
      {
        date,
        quick: opts.quick,
        options: { ...opts, only: [...opts.only] },
        loadGenerator: gen,
        proxyCmd,
        proxyFetchLimit: proxyFetchLimit ?? null,
        machine: { cores, busyBefore, loadavg: loadavg() },
        elapsedS,
        rows: rows.filter((r) => r.title === undefined),
        raw: res,
        upstreamKeyUse: stats,
        warnings,
      },
      null,
      2,
    )}\n`,
  );
  lines.push(`results: ${outPath}`);
  lines.push(`took ${elapsedS.toFixed(1)} s`);
  console.log(lines.join("\n"));
}

/** One StreamResult whose every percentile is the median of that percentile over the rounds; counts are summed. */
function medianOfRounds(list: StreamResult[]): StreamResult {
  const first = list[0];
  if (first === undefined) throw new Error("no stream rounds");
  const pick = (get: (r: StreamResult) => Percentiles): Percentiles => {
    const keys = ["count", "min", "mean", "p50", "p90", "p99", "max"] as const;
    const out = { ...get(first) };
    for (const k of keys) out[k] = median(list.map((r) => get(r)[k]));
    return out;
  };
  const sum = (get: (r: StreamResult) => number): number => list.reduce((a, r) => a + get(r), 0);
  return {
    ...first,
    streams: sum((r) => r.streams),
    completed: sum((r) => r.completed),
    aborted: sum((r) => r.aborted),
    failed: sum((r) => r.failed),
    errors: list.flatMap((r) => r.errors).slice(0, 5),
    chunksReceived: sum((r) => r.chunksReceived),
    ttfcMs: pick((r) => r.ttfcMs),
    transitMs: pick((r) => r.transitMs),
    gapMs: pick((r) => r.gapMs),
    clockRttMs: median(list.map((r) => r.clockRttMs)),
    wallMs: median(list.map((r) => r.wallMs)),
  };
}

// ------------------------------------------------------------------ table rows

function buildRows(opts: Options, r: Results, modelsBytes: number): Row[] {
  const rows: Row[] = [];
  const gte = (v: number | undefined, limit: number): boolean | undefined => (v === undefined || Number.isNaN(v) ? undefined : v >= limit);
  const lte = (v: number | undefined, limit: number): boolean | undefined => (v === undefined || Number.isNaN(v) ? undefined : v <= limit);
  const lt = (v: number | undefined, limit: number): boolean | undefined => (v === undefined || Number.isNaN(v) ? undefined : v < limit);
  const ratio = (p: number | undefined, b: number | undefined): number | undefined => (p === undefined || b === undefined || b === 0 ? undefined : p / b);
  const diff = (p: number | undefined, b: number | undefined): number | undefined => (p === undefined || b === undefined ? undefined : p - b);

  const pt = r.a["pass-through"];
  const px = r.a.proxy;
  if (pt !== undefined || px !== undefined) {
    rows.push({ title: `(a) non-streamed chat completions, ${opts.connections} connections, ${opts.durationS} s each` });
    const rpsPt = pt && reqPerS(pt.load);
    const rpsPx = px && reqPerS(px.load);
    rows.push({ metric: "requests/s", passThrough: rpsPt, proxy: rpsPx, target: ">= 0.85x", meets: gte(ratio(rpsPx, rpsPt), 0.85) });
    rows.push({ metric: "latency p50", unit: "ms", passThrough: pt && ms(pt.load.latency_us.p50), proxy: px && ms(px.load.latency_us.p50) });
    rows.push({ metric: "latency p99", unit: "ms", passThrough: pt && ms(pt.load.latency_us.p99), proxy: px && ms(px.load.latency_us.p99) });
    rows.push({ metric: "CPU per request", unit: "µs", passThrough: pt?.cpuUsPerReq, proxy: px?.cpuUsPerReq, target: "<= 1.3x", meets: lte(ratio(px?.cpuUsPerReq, pt?.cpuUsPerReq), 1.3) });
    // Counters are saved at most every 5 s, so a steady load writes the keys file at most once per 5 s.
    const writesPer5s = px && (px.keysFileWrites * 5) / opts.durationS;
    rows.push({ metric: "keys-file writes per 5 s", proxy: writesPer5s, target: "<= 1", meets: opts.durationS >= 5 ? lte(writesPer5s, 1) : undefined });
  }

  if (r.b.mock !== undefined || r.b.proxy !== undefined) {
    rows.push({ title: `(b) one connection, ${opts.latencyDurationS} s each` });
    const p50 = (n: Target["name"]): number | undefined => (r.b[n] === undefined ? undefined : ms(r.b[n].latency_us.p50));
    const p99 = (n: Target["name"]): number | undefined => (r.b[n] === undefined ? undefined : ms(r.b[n].latency_us.p99));
    rows.push({ metric: "latency p50", unit: "ms", mock: p50("mock"), passThrough: p50("pass-through"), proxy: p50("proxy") });
    rows.push({ metric: "latency p99", unit: "ms", mock: p99("mock"), passThrough: p99("pass-through"), proxy: p99("proxy") });
    rows.push({ metric: "added over mock, p50", unit: "ms", passThrough: diff(p50("pass-through"), p50("mock")), proxy: diff(p50("proxy"), p50("mock")) });
    rows.push({ metric: "added over mock, p99", unit: "ms", passThrough: diff(p99("pass-through"), p99("mock")), proxy: diff(p99("proxy"), p99("mock")) });
    const a50 = diff(p50("proxy"), p50("pass-through"));
    const a99 = diff(p99("proxy"), p99("pass-through"));
    rows.push({ metric: "added over pass-through, p50", unit: "ms", proxy: a50, target: "<= 0.05 ms", meets: lte(a50, 0.05) });
    rows.push({ metric: "added over pass-through, p99", unit: "ms", proxy: a99, target: "<= 0.5 ms", meets: lte(a99, 0.5) });
  }

  if (r.c.mock !== undefined || r.c.proxy !== undefined) {
    rows.push({
      title: `(c) ${opts.streams} concurrent streams x ${opts.chunks} chunks, ${opts.chunkDelayMs} ms apart; median of ${opts.streamRounds} interleaved round(s); transit counted once all streams are open`,
    });
    const c = (n: Target["name"]): StreamResult | undefined => r.c[n];
    const t50 = c("proxy")?.ttfcMs.p50;
    const t99 = c("proxy")?.ttfcMs.p99;
    rows.push({ metric: "time to first chunk p50", unit: "ms", mock: c("mock")?.ttfcMs.p50, passThrough: c("pass-through")?.ttfcMs.p50, proxy: t50, target: "<= 1.2x", meets: lte(ratio(t50, c("pass-through")?.ttfcMs.p50), 1.2) });
    rows.push({ metric: "time to first chunk p99", unit: "ms", mock: c("mock")?.ttfcMs.p99, passThrough: c("pass-through")?.ttfcMs.p99, proxy: t99, target: "<= 1.2x", meets: lte(ratio(t99, c("pass-through")?.ttfcMs.p99), 1.2) });
    rows.push({ metric: "chunk transit (arrival - sent) p50", unit: "ms", mock: c("mock")?.transitMs.p50, passThrough: c("pass-through")?.transitMs.p50, proxy: c("proxy")?.transitMs.p50 });
    rows.push({ metric: "chunk transit (arrival - sent) p99", unit: "ms", mock: c("mock")?.transitMs.p99, passThrough: c("pass-through")?.transitMs.p99, proxy: c("proxy")?.transitMs.p99 });
    rows.push({ metric: "added per chunk over mock, p50", unit: "ms", passThrough: diff(c("pass-through")?.transitMs.p50, c("mock")?.transitMs.p50), proxy: diff(c("proxy")?.transitMs.p50, c("mock")?.transitMs.p50) });
    rows.push({ metric: "added per chunk over mock, p99", unit: "ms", passThrough: diff(c("pass-through")?.transitMs.p99, c("mock")?.transitMs.p99), proxy: diff(c("proxy")?.transitMs.p99, c("mock")?.transitMs.p99) });
    const d50 = diff(c("proxy")?.transitMs.p50, c("pass-through")?.transitMs.p50);
    const d99 = diff(c("proxy")?.transitMs.p99, c("pass-through")?.transitMs.p99);
    rows.push({ metric: "added per chunk over pass-through, p50", unit: "ms", proxy: d50, target: "< 0.1 ms", meets: lt(d50, 0.1) });
    rows.push({ metric: "added per chunk over pass-through, p99", unit: "ms", proxy: d99, target: "< 1 ms", meets: lt(d99, 1) });
    rows.push({ metric: `gap between chunks p50 (sent ${opts.chunkDelayMs} ms apart)`, unit: "ms", mock: c("mock")?.gapMs.p50, passThrough: c("pass-through")?.gapMs.p50, proxy: c("proxy")?.gapMs.p50 });
    rows.push({ metric: "gap between chunks p99", unit: "ms", mock: c("mock")?.gapMs.p99, passThrough: c("pass-through")?.gapMs.p99, proxy: c("proxy")?.gapMs.p99 });
    rows.push({ metric: "streams completed (all rounds)", mock: c("mock")?.completed, passThrough: c("pass-through")?.completed, proxy: c("proxy")?.completed });
  }

  if (opts.only.has("d")) {
    rows.push({ title: "(d) resident memory, VmRSS of the process tree" });
    const mb = (b: number | undefined): number | undefined => (b === undefined ? undefined : b / MB);
    rows.push({ metric: "idle", unit: "MB", passThrough: mb(r.idleRss["pass-through"]), proxy: mb(r.idleRss.proxy) });
    if (r.afterARss.proxy !== undefined) {
      const pa = mb(r.afterARss.proxy);
      rows.push({ metric: "after (a)", unit: "MB", passThrough: mb(r.afterARss["pass-through"]), proxy: pa, target: "<= 1.5x", meets: lte(ratio(pa, mb(r.afterARss["pass-through"])), 1.5) });
    }
    const h = r.holdRss;
    if (h.proxy !== undefined || h["pass-through"] !== undefined) {
      const hp = mb(h.proxy?.rss);
      rows.push({ metric: `with ${opts.holdStreams} streams open`, unit: "MB", passThrough: mb(h["pass-through"]?.rss), proxy: hp, target: "< 150 MB", meets: lt(hp, 150) });
      rows.push({ metric: "streams open at that reading", passThrough: h["pass-through"]?.open?.openNow, proxy: h.proxy?.open?.openNow });
    }
  }

  if (r.e.proxy !== undefined || r.e["pass-through"] !== undefined) {
    rows.push({ title: `(e) GET /v1/models (${Math.round(modelsBytes / 1024)} KB), ${opts.modelsConnections} connections, ${opts.modelsDurationS} s each` });
    const e = (n: Target["name"]): LoadResult | undefined => r.e[n];
    const ept = e("pass-through");
    const epx = e("proxy");
    rows.push({ metric: "requests/s", passThrough: ept && reqPerS(ept), proxy: epx && reqPerS(epx) });
    rows.push({ metric: "latency p99", unit: "ms", passThrough: ept && ms(ept.latency_us.p99), proxy: epx && ms(epx.latency_us.p99) });
  }

  if (r.f.proxy !== undefined || r.f["pass-through"] !== undefined) {
    rows.push({ title: `(f) spawn to first 200 from /healthz (polled every 2 ms), ${opts.startupRuns} runs` });
    const fp = r.f["pass-through"];
    const fx = r.f.proxy;
    const m = fx && median(fx);
    rows.push({ metric: "median", unit: "ms", passThrough: fp && median(fp), proxy: m, target: "< 100 ms", meets: lt(m, 100) });
    rows.push({ metric: "slowest", unit: "ms", passThrough: fp && Math.max(...fp), proxy: fx && Math.max(...fx) });
  }
  return rows;
}

// ------------------------------------------------------------------ entry

async function cleanup(): Promise<void> {
  await Promise.all([...children].map((c) => killTree(c)));
  children.clear();
}

const opts = parseOptions();
const tmp = mkdtempSync(join(tmpdir(), "openrouter-proxy-bench-"));
const capMs = opts.quick ? 120_000 : 480_000;
const watchdog = setTimeout(() => {
  log(`the whole run passed its ${capMs / 1000} s cap; stopping`);
  void cleanup().finally(() => process.exit(3));
}, capMs);
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    void cleanup().finally(() => process.exit(130));
  });
}
let code = 0;
try {
  if ([..."abcdef"].some((s) => opts.only.has(s))) await main(opts, tmp);
  // After the other sections' processes are gone: (g) starts its own.
  if (opts.only.has("g")) console.log(`\n${await redisSection(opts.quick)}`);
} catch (err) {
  console.error(`bench failed: ${err instanceof Error ? err.message : String(err)}`);
  code = 1;
} finally {
  clearTimeout(watchdog);
  await cleanup();
  if (opts.keepTemp || (code !== 0 && existsSync(join(tmp, "logs")))) log(`temp folder kept: ${tmp}`);
  else rmSync(tmp, { recursive: true, force: true });
}
process.exit(code);
