/**
 * What a shared-state call costs against a local redis-server (issue 14): `bun run bench/redis-calls.ts [--quick]`.
 * One connection, calls one after another (latency), then 64 in flight (throughput), for:
 *   - PING through Bun's client directly (the floor),
 *   - PING through the supervised connection (its timeout and breaker),
 *   - a free-model slot reservation (the Lua script, EVALSHA),
 *   - a counter batch of 10 keys (the idempotent script).
 * Prints p50/p99 in microseconds and calls per second. Not a CI gate: numbers depend on the machine.
 */
import { RedisClient } from "bun";
import { loadavg } from "node:os";
import { createRedisConnection } from "../src/store/redis/connection.ts";
import { createCounterBatcher } from "../src/store/redis/change-writer.ts";
import { redisKeys } from "../src/store/redis/redis-keys.ts";
import { sharedStateScripts } from "../src/store/redis/scripts.ts";
import { startRedisServer } from "../test/helpers/redis-server.ts";
import { summarize } from "./lib/stats.ts";

const quick = process.argv.includes("--quick") || process.env.BENCH_QUICK === "1";
const SEQUENTIAL = quick ? 500 : 20_000;
const CONCURRENT = quick ? 2_000 : 100_000;
const IN_FLIGHT = 64;

const redis = await startRedisServer();
const raw = new RedisClient(redis.url);
await raw.connect();
const connection = createRedisConnection({ url: redis.url, timeoutMs: 1_000 });
await connection.ready;
const keys = redisKeys("bench:");
const scripts = sharedStateScripts(connection, keys);
const batcher = createCounterBatcher({ keys, instanceId: crypto.randomUUID() });
let account = 0;

const cases: Array<[string, () => Promise<unknown>]> = [
  ["PING, Bun's client", () => raw.send("PING", [])],
  ["PING, supervised", () => connection.send("PING", [])],
  // A new account each time, with no limit known: every call increments (the worst case's work).
  ["reserve free slot", () => scripts.reserveFreeSlot({ account: `a${account++ % 1000}`, day: "2026-12-04" })],
  [
    "counter batch, 10 keys",
    () => {
      for (let k = 0; k < 10; k++) batcher.add(`k${k}`, { requests: 1, successes: 1, tokens: 100, cost: 0.0001 }, Date.now());
      const write = batcher.take();
      return write ? connection.write(write) : Promise.resolve();
    },
  ],
];

const rows: string[] = [];
for (const [name, call] of cases) {
  for (let i = 0; i < 200; i++) await call(); // warm-up (loads the scripts)
  const latencies: number[] = [];
  for (let i = 0; i < SEQUENTIAL; i++) {
    const started = performance.now();
    await call();
    latencies.push((performance.now() - started) * 1000);
  }
  const stats = summarize(latencies);
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (next++ < CONCURRENT) await call();
    }),
  );
  const perSecond = CONCURRENT / ((performance.now() - started) / 1000);
  rows.push(`| ${name} | ${stats.p50.toFixed(0)} | ${stats.p99.toFixed(0)} | ${Math.round(perSecond).toLocaleString("en-US")} |`);
}

console.log(`redis-server ${(await redis.cli("INFO", "server")).match(/redis_version:(\S+)/)?.[1] ?? "?"}, Bun ${Bun.version}, load average ${loadavg()[0]?.toFixed(1)}${quick ? ", --quick" : ""}`);
console.log("| call | p50 µs (one at a time) | p99 µs | calls/s (64 in flight) |\n| --- | --- | --- | --- |");
for (const row of rows) console.log(row);
if (connection.refused > 0 || connection.dropped > 0) console.log(`refused ${connection.refused}, dropped ${connection.dropped}`);
raw.close();
await connection.close();
await redis.stop();
