/**
 * The proxy with REDIS_URL against the proxy on its keys file (issue 14): `bun run bench:redis`.
 *
 * Starts a local redis-server (no persistence), the mock upstream (bench/mock-upstream.ts) and the
 * proxy from source twice in turn: once on a keys file, once with REDIS_URL (the same keys,
 * imported by the instance at startup). Measures, each several rounds interleaved:
 * - paid-model throughput: closed-loop load (bench/loadgen.ts) for `--duration` seconds on
 *   `--connections` connections; paid requests never call Redis, so this is the cost of the rest
 *   (the change writer, counters batched each second);
 * - a free-model request's latency, one at a time: with REDIS_URL each one first reserves its slot
 *   (one Lua call), so the difference at p50/p99 is what the reservation adds.
 * Prints a table and one `BENCH_JSON {...}` line.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { runLoad } from "./loadgen.ts";
import { freePort, killTree, readReadyLine, waitForOk, type Child } from "./lib/proc.ts";
import { percentileSorted } from "./lib/stats.ts";

const ROOT = dirname(import.meta.dir);
const { values } = parseArgs({
  options: { duration: { type: "string", default: "5" }, connections: { type: "string", default: "32" }, rounds: { type: "string", default: "3" }, free: { type: "string", default: "400" } },
});
const durationMs = Number(values.duration) * 1000;
const connections = Number(values.connections);
const rounds = Number(values.rounds);
const freeRequests = Number(values.free);

const redisBinary = Bun.which("redis-server");
if (redisBinary === null) {
  console.error("redis-server is not installed (apt-get install -y redis-server)");
  process.exit(2);
}
const dir = mkdtempSync(join(tmpdir(), "orp-bench-redis-"));
const children: Child[] = [];

async function main(): Promise<void> {
  const redisPort = freePort();
  const redis = Bun.spawn([redisBinary as string, "--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], { stdout: "ignore", stderr: "ignore" });
  children.push(redis);
  const mock = Bun.spawn([process.execPath, join(ROOT, "bench/mock-upstream.ts")], { env: { ...process.env, PORT: "0", HOST: "127.0.0.1" }, stdout: "pipe", stderr: "inherit" });
  children.push(mock);
  const mockPort = Number((await readReadyLine(mock, 10_000)).port);
  await waitForRedis(redisPort);

  const keysFile = join(dir, "keys.json");
  writeFileSync(keysFile, JSON.stringify({ keys: Array.from({ length: 4 }, (_, i) => `sk-or-v1-bench-${String(i).repeat(40)}`) }));
  const results: Record<"file" | "redis", { rps: number[]; free: number[] }> = { file: { rps: [], free: [] }, redis: { rps: [], free: [] } };
  for (let round = 0; round < rounds; round++) {
    for (const mode of ["file", "redis"] as const) {
      const port = freePort();
      const env: Record<string, string> = {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: dir,
        OPENROUTER_BASE_URL: `http://127.0.0.1:${mockPort}/api/v1`,
        KEYS_FILE: keysFile,
        LOG_DIR: join(dir, `logs-${mode}`),
        LOG_LEVEL: "error",
        ...(mode === "redis" ? { REDIS_URL: `redis://127.0.0.1:${redisPort}`, REDIS_PREFIX: `bench${round}:` } : {}),
      };
      const proxy = Bun.spawn([process.execPath, "--no-env-file", "run", join(ROOT, "src/main.ts"), "serve", "--port", String(port), "--host", "127.0.0.1"], { cwd: dir, env, stdout: "ignore", stderr: "inherit" });
      children.push(proxy);
      const base = `http://127.0.0.1:${port}`;
      await waitForOk(`${base}/readyz`, performance.now(), 15_000, 20, proxy);
      const body = (model: string) => JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] });
      // Warm-up, then the paid-model throughput.
      await runLoad({ url: `${base}/v1/chat/completions`, method: "POST", headers: { "content-type": "application/json" }, body: body("openai/gpt-4o-mini"), connections, durationMs: 1_000 });
      const load = await runLoad({ url: `${base}/v1/chat/completions`, method: "POST", headers: { "content-type": "application/json" }, body: body("openai/gpt-4o-mini"), connections, durationMs });
      results[mode].rps.push(load.requests / (load.duration_us / 1e6));
      // Free-model latency, one request at a time.
      for (let i = 0; i < freeRequests; i++) {
        const started = performance.now();
        const response = await fetch(`${base}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: body("meta-llama/llama-3.3-70b-instruct:free") });
        await response.arrayBuffer();
        if (response.status === 200) results[mode].free.push(performance.now() - started);
      }
      await killTree(proxy);
    }
  }

  const median = (list: number[]): number => [...list].sort((a, b) => a - b)[Math.floor(list.length / 2)] ?? 0;
  const pct = (list: number[], p: number): number => percentileSorted(Float64Array.from(list).sort(), p);
  const file = { rps: median(results.file.rps), p50: pct(results.file.free, 50), p99: pct(results.file.free, 99) };
  const redisRow = { rps: median(results.redis.rps), p50: pct(results.redis.free, 50), p99: pct(results.redis.free, 99) };
  const row = (name: string, r: typeof file) => `| ${name.padEnd(24)} | ${r.rps.toFixed(0).padStart(8)} | ${r.p50.toFixed(2).padStart(8)} | ${r.p99.toFixed(2).padStart(8)} |`;
  console.log(`load average ${loadavg().map((x) => x.toFixed(1)).join(" ")}; ${rounds} rounds, ${connections} connections, ${durationMs / 1000} s each; ${freeRequests} free requests per round`);
  console.log("| proxy                    | paid req/s | free p50 ms | free p99 ms |");
  console.log(row("keys file", file));
  console.log(row("REDIS_URL (local redis)", redisRow));
  console.log(`paid throughput with Redis: ${((redisRow.rps / file.rps) * 100).toFixed(1)} % of the file store's; free-model reservation adds ${(redisRow.p50 - file.p50).toFixed(2)} ms at p50, ${(redisRow.p99 - file.p99).toFixed(2)} ms at p99`);
  console.log(`BENCH_JSON ${JSON.stringify({ file, redis: redisRow, paidRps: { file: results.file.rps, redis: results.redis.rps } })}`);
}

async function waitForRedis(port: number): Promise<void> {
  const { RedisClient } = await import("bun");
  for (let i = 0; i < 200; i++) {
    try {
      const client = new RedisClient(`redis://127.0.0.1:${port}`);
      await client.send("PING", []);
      client.close();
      return;
    } catch {
      await Bun.sleep(25);
    }
  }
  throw new Error("redis-server did not answer");
}

try {
  await main();
} finally {
  for (const child of children.reverse()) await killTree(child);
  rmSync(dir, { recursive: true, force: true });
}
