/**
 * What the shared client counters cost per admitted request (issue 15 with REDIS_URL), against a
 * real redis-server on loopback: a client with a limit (one atomic Redis script before the
 * request is sent) and one without (counted in memory, its increment written in the background).
 *
 *   bun bench/client-reserve.ts            (needs redis-server on PATH)
 */
import { addClient } from "../src/clients/client-admin.ts";
import { createClientDirectory, type LiveClient } from "../src/clients/client-directory.ts";
import { createClientGate } from "../src/clients/client-gate.ts";
import { parseClientSettings } from "../src/clients/client-settings.ts";
import { redisKeys } from "../src/store/redis/redis-keys.ts";
import { createRedisClientCounters } from "../src/store/redis/client-counters.ts";
import { createRedisConnection } from "../src/store/redis/connection.ts";
import { startRedisServer } from "../test/helpers/redis-server.ts";

const redis = await startRedisServer();
const connection = createRedisConnection({ url: redis.url });
await connection.ready;
const record = (name: string, settings: Record<string, unknown>) => {
  const parsed = parseClientSettings(settings);
  const edit = parsed.ok ? addClient(new Map(), name, parsed.settings, `sk-orp-${name}-bench-0123456789abcdef`, Date.now()) : undefined;
  if (!edit?.ok) throw new Error("bad client");
  return edit.client;
};
const directory = createClientDirectory(new Map([["limited", record("limited", { rpm: 1e9 })], ["open", record("open", {})]]));
const counters = createRedisClientCounters({ connection, keys: redisKeys("bench:"), directory, refreshMs: 60_000 });
const gate = createClientGate({ directory, shared: counters });
const request = { method: "POST", model: "openai/gpt-4o-mini" };

async function measure(name: string, rounds: number): Promise<void> {
  const client = directory.byName(name) as LiveClient;
  const times: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const start = Bun.nanoseconds();
    await gate.admit(client, request);
    times.push(Bun.nanoseconds() - start);
  }
  times.sort((a, b) => a - b);
  const at = (q: number) => ((times[Math.floor(q * (times.length - 1))] ?? 0) / 1000).toFixed(1);
  console.log(`${name.padEnd(8)} ${rounds} sequential admits: median ${at(0.5)} µs, p99 ${at(0.99)} µs`);
}

await measure("limited", 200); // warm-up
await measure("limited", 5000);
await measure("open", 5000);
await counters.stop();
await connection.close();
await redis.stop();
