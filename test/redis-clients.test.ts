/**
 * Client keys on several proxy processes sharing one real redis-server (issue 15 with REDIS_URL),
 * each rule a test: the instances are `bun run src/main.ts serve`, the client subcommands the real
 * CLI, the upstream a fake on loopback. Waits are on observable things (an answer's status, a line
 * on stdout, a count in Redis), never a fixed sleep.
 */
import { describe, expect, test } from "bun:test";
import { startFakeOpenRouter } from "./helpers/fake-openrouter.ts";
import type { ProxyProcess } from "./helpers/proxy-process.ts";
import { hasRedis, useRedisProxies } from "./helpers/redis-suite.ts";
import { eventually, testKeys } from "./helpers/test-proxy.ts";

const ADMIN = "admin-token-for-redis-client-tests-0123456789";
const { redis, freshPrefix, envFor, cli, startInstances } = useRedisProxies({ prefixStem: "c", admin: ADMIN });

/** add-client through the CLI; its key is the one line on stdout. */
async function addClient(env: Record<string, string>, name: string, ...flags: string[]): Promise<string> {
  const added = await cli(env, "add-client", name, ...flags);
  expect(added.code).toBe(0);
  const key = added.stdout.trim();
  expect(key).toStartWith("sk-orp-");
  return key;
}

async function chat(instance: ProxyProcess, key: string): Promise<Response> {
  return fetch(`${instance.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
  });
}

async function statusOf(instance: ProxyProcess, key: string): Promise<number> {
  const response = await chat(instance, key);
  await response.arrayBuffer();
  return response.status;
}

/** Fixed one-minute windows: a sequence that must fall in one minute starts at least `needMs` before its end. */
async function awayFromMinuteEnd(needMs = 15_000): Promise<void> {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < needMs) await Bun.sleep(left + 50);
}

describe.skipIf(!hasRedis)("client keys through Redis", () => {
  test("a removed or rotated-away key gets 401 at once, also on another instance with Redis", async () => {
    const fake = startFakeOpenRouter();
    try {
      const env = envFor(freshPrefix(), fake.url);
      expect((await cli(env, "add-key", testKeys[0] as string, "--no-verify")).code).toBe(0);
      const oldKey = await addClient(env, "alice");
      // Another client stays: with none left, client keys are no longer in use (the proxy is open on loopback).
      await addClient(env, "keeper");
      const [a, b] = (await startInstances(2, env)) as [ProxyProcess, ProxyProcess];
      expect(await statusOf(a, oldKey)).toBe(200);
      expect(await statusOf(b, oldKey)).toBe(200);

      const rotated = await cli(env, "rotate-client", "alice");
      expect(rotated.code).toBe(0);
      const newKey = rotated.stdout.trim();
      const rotatedAt = Date.now();
      await eventually(async () => (await statusOf(a, oldKey)) === 401 && (await statusOf(b, oldKey)) === 401, { timeoutMs: 1_000, what: "the rotated-away key refused on both instances" });
      expect(Date.now() - rotatedAt).toBeLessThanOrEqual(1_000);
      const refused = await chat(b, oldKey);
      expect(refused.status).toBe(401);
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe("invalid_api_key");
      expect(await statusOf(a, newKey)).toBe(200);
      expect(await statusOf(b, newKey)).toBe(200);

      expect((await cli(env, "remove-client", "alice")).code).toBe(0);
      const removedAt = Date.now();
      await eventually(async () => (await statusOf(a, newKey)) === 401 && (await statusOf(b, newKey)) === 401, { timeoutMs: 1_000, what: "the removed client's key refused on both instances" });
      expect(Date.now() - removedAt).toBeLessThanOrEqual(1_000);
      // Nothing refused ever reached the upstream with a client key.
      expect(fake.requests.every((request) => !request.key.startsWith("sk-orp-"))).toBe(true);
    } finally {
      await fake.stop();
    }
  }, 30_000);

  test("client records live in Redis: every subcommand and every instance sees the same clients", async () => {
    const fake = startFakeOpenRouter();
    try {
      const env = envFor(freshPrefix(), fake.url);
      expect((await cli(env, "add-key", testKeys[0] as string, "--no-verify")).code).toBe(0);
      const [a, b] = (await startInstances(2, env)) as [ProxyProcess, ProxyProcess];
      const key = await addClient(env, "bob", "--models", "openai/*");
      // No keys file holds the client: Redis does.
      expect(await Bun.file(env.KEYS_FILE as string).exists()).toBe(false);
      await eventually(async () => (await statusOf(a, key)) === 200 && (await statusOf(b, key)) === 200, { timeoutMs: 1_000, what: "the new client on both instances" });
      expect((await cli(env, "set-client", "bob", "--models", "anthropic/*")).code).toBe(0);
      await eventually(async () => (await statusOf(a, key)) === 403 && (await statusOf(b, key)) === 403, { timeoutMs: 1_000, what: "the narrowed models on both instances" });
      const listed = await cli(env, "list-clients", "--json");
      expect(listed.code).toBe(0);
      const clients = (JSON.parse(listed.stdout) as { clients: Array<{ name: string; models?: string[] }> }).clients;
      expect(clients.map((client) => client.name)).toEqual(["bob"]);
      expect(clients[0]?.models).toEqual(["anthropic/*"]);
      // The admin API of one instance changes the clients of all.
      const patched = await fetch(`${a.url}/admin/clients/bob`, { method: "PATCH", headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" }, body: JSON.stringify({ models: null }) });
      expect(patched.status).toBe(200);
      await eventually(async () => (await statusOf(b, key)) === 200, { timeoutMs: 1_000, what: "the admin API's change on the other instance" });
      // A second add of the same name loses: one client, one key.
      expect((await cli(env, "add-client", "bob")).code).toBe(1);
    } finally {
      await fake.stop();
    }
  }, 30_000);

  test("client keys in KEYS_FILE are imported into Redis once, when it holds none", async () => {
    const fake = startFakeOpenRouter();
    try {
      const env = envFor(freshPrefix(), fake.url);
      const { REDIS_URL: _url, ...fileEnv } = env;
      // Made before Redis was used: the client lives in the keys file.
      const key = await addClient(fileEnv, "grace", "--rpm", "50");
      expect(await Bun.file(env.KEYS_FILE as string).text()).toContain('"grace"');
      expect((await cli(env, "add-key", testKeys[0] as string, "--no-verify")).code).toBe(0);
      const [a, b] = (await startInstances(2, env)) as [ProxyProcess, ProxyProcess];
      expect(await statusOf(a, key)).toBe(200);
      expect(await statusOf(b, key)).toBe(200);
      // Two instances started together: one imported, the other found them there.
      expect((a.stdout() + b.stdout()).match(/imported 1 from/g)).toHaveLength(1);
      expect(await redis.cli("HEXISTS", `${env.REDIS_PREFIX}clients`, "grace")).toBe("1");
      const listed = JSON.parse((await cli(env, "list-clients", "--json")).stdout) as { clients: Array<{ name: string; limits: { rpm: number | null } }> };
      expect(listed.clients.map((client) => [client.name, client.limits.rpm])).toEqual([["grace", 50]]);
    } finally {
      await fake.stop();
    }
  }, 30_000);

  test("a client subcommand that cannot reach Redis says so in one line, changes nothing and never prints the URL's password", async () => {
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const deadPort = probe.port;
    probe.stop(true);
    const env: Record<string, string> = { ...envFor(freshPrefix(), "http://127.0.0.1:9"), REDIS_URL: `redis://user:pw-sekrit-123@127.0.0.1:${deadPort}` };
    for (const args of [["add-client", "henry"], ["list-clients"], ["remove-client", "henry"]]) {
      const result = await cli(env, ...args);
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`cannot reach Redis at redis://`);
      expect(result.stderr.trim().split("\n")).toHaveLength(1);
      expect(result.stdout + result.stderr).not.toContain("pw-sekrit-123");
      expect(result.stdout).not.toContain("sk-orp-");
    }
    expect(await Bun.file(env.KEYS_FILE as string).exists()).toBe(false);
  }, 30_000);

  test("Redis unreachable at startup: the client keys in KEYS_FILE are served from memory", async () => {
    const fake = startFakeOpenRouter();
    const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const deadPort = probe.port;
    probe.stop(true);
    try {
      const env: Record<string, string> = { ...envFor(freshPrefix(), fake.url), REDIS_URL: `redis://127.0.0.1:${deadPort}` };
      const { REDIS_URL: _url, ...fileEnv } = env;
      expect((await cli(fileEnv, "add-key", testKeys[0] as string, "--no-verify")).code).toBe(0);
      const key = await addClient(fileEnv, "ivy", "--models", "openai/*");
      const [instance] = (await startInstances(1, env)) as [ProxyProcess];
      expect(instance.stdout()).toContain("serving the client keys in");
      expect(await statusOf(instance, key)).toBe(200);
      expect(await statusOf(instance, "sk-orp-not-a-client-key-0123456789abcdef")).toBe(401);
      const other = await fetch(`${instance.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
        body: JSON.stringify({ model: "anthropic/claude-3.5-haiku", messages: [{ role: "user", content: "hi" }] }),
      });
      expect(other.status).toBe(403);
    } finally {
      await fake.stop();
    }
  }, 30_000);

  test("two instances sharing Redis enforce one --rpm together", async () => {
    const fake = startFakeOpenRouter();
    try {
      const env = envFor(freshPrefix(), fake.url);
      expect((await cli(env, "add-key", testKeys[0] as string, "--no-verify")).code).toBe(0);
      const key = await addClient(env, "carol", "--rpm", "3");
      const [a, b] = (await startInstances(2, env)) as [ProxyProcess, ProxyProcess];
      await awayFromMinuteEnd();
      const minute = Math.floor(Date.now() / 60_000);
      expect(await statusOf(a, key)).toBe(200);
      expect(await statusOf(b, key)).toBe(200);
      expect(await statusOf(a, key)).toBe(200);
      const fourth = await chat(b, key);
      expect(Math.floor(Date.now() / 60_000)).toBe(minute);
      expect(fourth.status).toBe(429);
      const retryAfter = Number(fourth.headers.get("retry-after"));
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(60);
      expect(((await fourth.json()) as { error: { code: string } }).error.code).toBe("client_rate_limited");
      expect(await statusOf(a, key)).toBe(429);
      // Three reached the upstream, not six.
      expect(fake.requests.filter((request) => request.path.endsWith("/chat/completions"))).toHaveLength(3);
    } finally {
      await fake.stop();
    }
  }, 90_000);

  test("with Redis, a budget spent through one instance refuses the next request on another, and every view shows the shared counts", async () => {
    const fake = startFakeOpenRouter();
    fake.reply(() =>
      Response.json({
        id: "gen-cost",
        object: "chat.completion",
        created: 1_780_000_000,
        model: "openai/gpt-4o-mini",
        choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
        usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8, cost: 0.02 },
      }),
    );
    try {
      const env = envFor(freshPrefix(), fake.url);
      expect((await cli(env, "add-key", testKeys[0] as string, "--no-verify")).code).toBe(0);
      const key = await addClient(env, "frank", "--usd-per-day", "0.01");
      const [a, b] = (await startInstances(2, env)) as [ProxyProcess, ProxyProcess];
      expect(await statusOf(a, key)).toBe(200);
      // The cost is added when the answer ends, in the background: the CLI reads it from Redis.
      type Listed = { clients: Array<{ name: string; usage: { today: { requests: number; tokens: number; cost: number } } }> };
      const today = async () => ((JSON.parse((await cli(env, "list-clients", "--json")).stdout) as Listed).clients.find((client) => client.name === "frank")?.usage.today);
      await eventually(async () => (await today())?.cost === 0.02, { timeoutMs: 3_000, what: "the cost in Redis" });
      expect(await today()).toEqual({ requests: 1, tokens: 8, cost: 0.02 });
      const refused = await chat(b, key);
      expect(refused.status).toBe(429);
      const body = (await refused.json()) as { error: { code: string; type: string } };
      expect(body.error).toMatchObject({ code: "client_budget_exceeded", type: "insufficient_quota" });
      // The other instance's admin view shows what was spent through the first.
      const adminToday = async () => {
        const response = await fetch(`${b.url}/admin/clients`, { headers: { authorization: `Bearer ${ADMIN}` } });
        return ((await response.json()) as Listed).clients.find((client) => client.name === "frank")?.usage.today;
      };
      await eventually(async () => (await adminToday())?.cost === 0.02, { timeoutMs: 5_000, what: "the shared counts on the other instance" });
      expect(fake.requests.filter((request) => request.path.endsWith("/chat/completions"))).toHaveLength(1);
    } finally {
      await fake.stop();
    }
  }, 30_000);

  test("Redis down: clients are served from memory, counted locally, and the counts replay when it is back", async () => {
    const fake = startFakeOpenRouter();
    try {
      const env = envFor(freshPrefix(), fake.url);
      expect((await cli(env, "add-key", testKeys[0] as string, "--no-verify")).code).toBe(0);
      const limited = await addClient(env, "dora", "--rpm", "3");
      const open = await addClient(env, "eve");
      const createdAt = (name: string) => cli(env, "list-clients", "--json").then((listed) => Date.parse((JSON.parse(listed.stdout) as { clients: Array<{ name: string; createdAt: string }> }).clients.find((client) => client.name === name)?.createdAt ?? ""));
      const [doraCreated, eveCreated] = [await createdAt("dora"), await createdAt("eve")];
      expect(Number.isNaN(doraCreated) || Number.isNaN(eveCreated)).toBe(false);
      const [instance] = (await startInstances(1, env)) as [ProxyProcess];
      await awayFromMinuteEnd(30_000);
      const minuteStart = Math.floor(Date.now() / 60_000) * 60_000;

      await redis.kill();
      await instance.waitForStdout(/Redis unreachable/, 10_000);
      // Served from memory: the limited client up to its limit, then refused; the other freely.
      expect(await statusOf(instance, limited)).toBe(200);
      expect(await statusOf(instance, limited)).toBe(200);
      expect(await statusOf(instance, limited)).toBe(200);
      expect(await statusOf(instance, limited)).toBe(429);
      expect(await statusOf(instance, open)).toBe(200);
      expect(await statusOf(instance, open)).toBe(200);

      // Back empty (no persistence): the counts made while it was away are replayed into it, and
      // the clients it lost are put back by the instance that held them.
      await redis.restart();
      await instance.waitForStdout(/Redis reachable again/, 15_000);
      const counted = async (name: string, created: number) => Number((await redis.cli("HGET", `${env.REDIS_PREFIX}client:${name}:${created}:minute:${minuteStart}`, "requests")) || 0);
      await eventually(async () => (await counted("dora", doraCreated)) === 3 && (await counted("eve", eveCreated)) === 2, { timeoutMs: 5_000, what: "the replayed counts in Redis" });
      await eventually(async () => (await redis.cli("HEXISTS", `${env.REDIS_PREFIX}clients`, "dora")) === "1", { timeoutMs: 10_000, what: "the clients put back" });
      // Shared again: the limited client stays refused this minute.
      expect(await statusOf(instance, limited)).toBe(429);
    } finally {
      await fake.stop();
    }
  }, 120_000);
});
