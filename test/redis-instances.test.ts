/**
 * Several proxy processes on one pool through a real redis-server (issue 14), each rule a test:
 * the instances are `bun run src/main.ts serve` with REDIS_URL, the upstream a fake on loopback,
 * the CLI the real one. Every wait is on something observable (an admin view, a count), never a
 * fixed sleep.
 */
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { readFileSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { RedisClient } from "bun";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { runCli } from "./helpers/cli.ts";
import { startFakeAccounts, type FakeAccounts } from "./helpers/fake-accounts.ts";
import { chatCompletion, errorReply, startFakeOpenRouter, type FakeOpenRouter } from "./helpers/fake-openrouter.ts";
import type { ProxyProcess } from "./helpers/proxy-process.ts";
import { hasRedis, useRedisProxies } from "./helpers/redis-suite.ts";
import { eventually, testKeys } from "./helpers/test-proxy.ts";

const ADMIN = "admin-token-for-redis-tests-0123456789";
// Every instance here hands out its keys round-robin (ROTATION), unlike the other Redis suites.
const { redis, dir, log, freshPrefix, envFor, cli, startInstances } = useRedisProxies({ prefixStem: "t", admin: ADMIN, env: { ROTATION: "round-robin" } });

interface KeyViewLite {
  id: string;
  status: string;
}

async function keysOf(instance: ProxyProcess): Promise<KeyViewLite[]> {
  const response = await fetch(`${instance.url}/admin/keys`, { headers: { authorization: `Bearer ${ADMIN}` } });
  const body = (await response.json()) as { keys: KeyViewLite[] };
  return body.keys;
}

async function statusEverywhere(instances: ProxyProcess[], keyId: string): Promise<Array<string | undefined>> {
  return Promise.all(instances.map(async (instance) => (await keysOf(instance)).find((key) => key.id === keyId)?.status));
}

async function chat(instance: ProxyProcess, model = "openai/gpt-4o-mini", content = "hi"): Promise<Response> {
  return fetch(`${instance.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content }] }),
  });
}

describe.skipIf(!hasRedis)("several instances through Redis", () => {
  test("add-key / remove-key with REDIS_URL reach every instance within 1 s", async () => {
    const fake = startFakeOpenRouter();
    try {
      const env = envFor(freshPrefix(), fake.url);
      const instances = await startInstances(3, env);
      const added = await cli(env, "add-key", testKeys[0] as string, "--label", "shared");
      expect(added.code).toBe(0);
      const id = keyIdOf(testKeys[0] as string);
      const addedAt = Date.now();
      await eventually(async () => (await statusEverywhere(instances, id)).every((status) => status === "active"), { timeoutMs: 1_000, what: "the added key on every instance" });
      expect(Date.now() - addedAt).toBeLessThanOrEqual(1_000);

      const removed = await cli(env, "remove-key", id);
      expect(removed.code).toBe(0);
      await eventually(async () => (await statusEverywhere(instances, id)).every((status) => status === undefined), { timeoutMs: 1_000, what: "the removal on every instance" });
    } finally {
      await fake.stop();
    }
  }, 30_000);

  test("a 429 seen by instance A: B and C never use that key before its reset (after at most the one request each had in flight)", async () => {
    const fake: FakeOpenRouter = startFakeOpenRouter();
    const [limited, other] = [testKeys[0] as string, testKeys[1] as string];
    let limitedAt = Infinity;
    /** The 429's place among the requests the upstream received. */
    let limitedIndex = -1;
    const reset = Date.now() + 120_000;
    fake.reply((request) => {
      if (request.key === limited && limitedAt === Infinity && request.body.includes("from-A")) {
        limitedAt = Date.now();
        limitedIndex = fake.requests.indexOf(request);
        return errorReply(429, "Rate limit exceeded", { headers: { "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": String(reset) } });
      }
      return chatCompletion("ok");
    });
    try {
      const env = envFor(freshPrefix(), fake.url);
      expect((await cli(env, "add-key", limited)).code).toBe(0);
      expect((await cli(env, "add-key", other)).code).toBe(0);
      const [a, b, c] = (await startInstances(3, env)) as [ProxyProcess, ProxyProcess, ProxyProcess];
      await eventually(async () => (await keysOf(c)).length === 2, { what: "both keys on C" });
      // Where the upstream's request log stood when A's cooldown went out on the change channel,
      // heard as B and C hear it.
      let publishedAt = -1;
      const listener = new RedisClient(redis.url);
      await listener.subscribe(`${env.REDIS_PREFIX}changes`, (message) => {
        if (publishedAt < 0 && message.includes('"kind":"key-cooldown"')) publishedAt = fake.requests.length;
      });

      // B and C under load while A meets the 429: each may have one request on the key in flight.
      let running = true;
      const load = async (instance: ProxyProcess) => {
        while (running) expect((await chat(instance)).status).toBe(200);
      };
      const loads = [load(b), load(c)];
      while (limitedAt === Infinity) expect((await chat(a, undefined, "from-A")).status).toBe(200);
      // A's retry went to the other key: the 429 is learned; now B and C run on for a while.
      const after = fake.requests.length;
      await eventually(() => fake.requests.length >= after + 60, { what: "60 more requests from B and C" });
      running = false;
      await Promise.all(loads);

      // Once A's cooldown is on the channel: at most one request each from B and C that was already on its way.
      listener.close();
      expect(limitedIndex).toBeGreaterThanOrEqual(0);
      expect(publishedAt).toBeGreaterThan(limitedIndex);
      const sinceThe429 = fake.requests.slice(publishedAt).filter((request) => request.key === limited);
      expect(sinceThe429.length).toBeLessThanOrEqual(2);
      for (const instance of [a, b, c]) expect((await keysOf(instance)).find((key) => key.id === keyIdOf(limited))?.status).toBe("cooling");
      expect(await redis.cli("ZSCORE", `${env.REDIS_PREFIX}key:cooldown`, keyIdOf(limited))).toBe(String(reset));
    } finally {
      await fake.stop();
    }
  }, 30_000);

  test("five 401s spread over three instances disable the key everywhere; enable-key through any instance or the CLI re-enables it everywhere within 1 s", async () => {
    const fake = startFakeOpenRouter();
    const [broken, good] = [testKeys[0] as string, testKeys[1] as string];
    let brokenAnswers401 = true;
    fake.reply((request) => (request.key === broken && brokenAnswers401 && request.path.endsWith("/chat/completions") ? errorReply(401, "User not found.") : chatCompletion("ok")));
    try {
      const env = envFor(freshPrefix(), fake.url);
      expect((await cli(env, "add-key", broken)).code).toBe(0);
      expect((await cli(env, "add-key", good)).code).toBe(0);
      const instances = (await startInstances(3, env)) as [ProxyProcess, ProxyProcess, ProxyProcess];
      const brokenId = keyIdOf(broken);
      const brokenCalls = () => fake.requests.filter((request) => request.key === broken && request.path.endsWith("/chat/completions")).length;
      // 2 + 2 + 1: no instance alone sees FAILURE_THRESHOLD (5) failures.
      for (const [instance, upTo] of [
        [instances[0], 2],
        [instances[1], 4],
        [instances[2], 5],
      ] as const) {
        while (brokenCalls() < upTo) expect((await chat(instance)).status).toBe(200);
      }
      expect(brokenCalls()).toBe(5);
      await eventually(async () => (await statusEverywhere(instances, brokenId)).every((status) => status === "disabled"), { timeoutMs: 1_000, what: "the key disabled everywhere" });
      for (const instance of instances) for (let i = 0; i < 4; i++) expect((await chat(instance)).status).toBe(200);
      expect(brokenCalls()).toBe(5);

      // Re-enabled by the CLI: everywhere within 1 s.
      brokenAnswers401 = false;
      const enabled = await cli(env, "enable-key", brokenId);
      expect(enabled.code).toBe(0);
      await eventually(async () => (await statusEverywhere(instances, brokenId)).every((status) => status === "active"), { timeoutMs: 1_000, what: "the CLI's enable everywhere" });

      // Broken again, disabled again, then re-enabled through instance B's admin API.
      brokenAnswers401 = true;
      const before = brokenCalls();
      for (let round = 0; brokenCalls() < before + 5; round++) expect((await chat(instances[round % 3] as ProxyProcess)).status).toBe(200);
      await eventually(async () => (await statusEverywhere(instances, brokenId)).every((status) => status === "disabled"), { timeoutMs: 1_000, what: "disabled again everywhere" });
      brokenAnswers401 = false;
      const viaAdmin = await fetch(`${instances[1].url}/admin/keys/${brokenId}/enable`, { method: "POST", headers: { authorization: `Bearer ${ADMIN}` } });
      expect(viaAdmin.status).toBe(200);
      await eventually(async () => (await statusEverywhere(instances, brokenId)).every((status) => status === "active"), { timeoutMs: 1_000, what: "the admin API's enable everywhere" });
    } finally {
      await fake.stop();
    }
  }, 40_000);

  test("an account with a daily free limit of 10 across 3 instances under concurrent load receives at most 10 free requests (plus at most one teaching 429)", async () => {
    const accounts: FakeAccounts = startFakeAccounts({ accounts: [{ id: "user_free", keys: [testKeys[0] as string, testKeys[1] as string], freePerDay: 10, freePerMinute: 1_000 }] });
    try {
      const env = envFor(freshPrefix(), accounts.url);
      expect((await cli(env, "add-key", testKeys[0] as string)).code).toBe(0);
      expect((await cli(env, "add-key", testKeys[1] as string)).code).toBe(0);
      const instances = await startInstances(3, env);
      // The discovery lease holder has asked GET /key about both keys (add-key asked once each too).
      await eventually(() => accounts.calls.filter((call) => call.kind === "key-info").length >= 2 + 2, { what: "the discovery holder's GET /key" });
      const answers = await Promise.all(Array.from({ length: 45 }, (_, i) => chat(instances[i % 3] as ProxyProcess, "meta-llama/llama-3.3-70b-instruct:free")));
      const statuses = answers.map((answer) => answer.status);
      const free = accounts.chatCalls().filter((call) => call.account === "user_free");
      expect(free.filter((call) => call.kind === "served").length).toBeLessThanOrEqual(10);
      expect(free.filter((call) => call.kind === "free-per-day").length).toBeLessThanOrEqual(1);
      expect(free.length).toBeLessThanOrEqual(11);
      expect(statuses.filter((status) => status === 200).length).toBe(free.filter((call) => call.kind === "served").length);
      expect(statuses.every((status) => status === 200 || status === 429)).toBe(true);
    } finally {
      await accounts.stop();
    }
  }, 40_000);
});

describe.skipIf(!hasRedis)("Redis down never stops serving", () => {
  const count = (text: string, pattern: RegExp): number => text.split("\n").filter((line) => pattern.test(line)).length;

  test("Redis killed under load: zero failed client requests, /readyz and /metrics say degraded, stdout says it once at start and once at end; restarted: the instances converge (a cooldown set while it was down is in Redis afterwards)", async () => {
    const fake = startFakeOpenRouter();
    const [cooled, other] = [testKeys[0] as string, testKeys[1] as string];
    let coolNext = false;
    let cooledAt = -1;
    const reset = Date.now() + 300_000;
    let running = true;
    let redisDown = false;
    fake.reply((request) => {
      if (coolNext && request.key === cooled && request.path.endsWith("/chat/completions")) {
        coolNext = false;
        cooledAt = fake.requests.indexOf(request);
        return errorReply(429, "Rate limit exceeded", { headers: { "X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": String(reset) } });
      }
      return chatCompletion("ok");
    });
    try {
      // No line per request: on a quiet machine the load prints more than the megabyte of stdout a
      // ProxyProcess keeps, and the Redis lines counted below would scroll out of it.
      const env = envFor(freshPrefix(), fake.url, { LOG_LEVEL: "warn" });
      expect((await cli(env, "add-key", cooled)).code).toBe(0);
      expect((await cli(env, "add-key", other)).code).toBe(0);
      const instances = (await startInstances(2, env)) as [ProxyProcess, ProxyProcess];
      const statuses: number[] = [];
      const load = async (instance: ProxyProcess) => {
        while (running) statuses.push((await chat(instance)).status);
      };
      const loads = instances.map(load);
      await eventually(() => statuses.length >= 20, { what: "load on both instances" });

      redisDown = true;
      await redis.kill();
      const readyz = async (instance: ProxyProcess) => (await (await fetch(`${instance.url}/readyz`)).json()) as { status: string; redis?: string };
      await eventually(async () => (await Promise.all(instances.map(readyz))).every((ready) => ready.status === "degraded" && ready.redis === "degraded"), { what: "/readyz degraded" });
      for (const instance of instances) expect(await (await fetch(`${instance.url}/metrics`, { headers: { authorization: `Bearer ${ADMIN}` } })).text()).toContain('openrouter_proxy_shared_state{state="degraded"} 1');
      // A cooldown learned while Redis is away.
      coolNext = true;
      await eventually(() => cooledAt >= 0, { what: "the 429 while Redis is down" });
      const servedWhileDown = statuses.length;
      await eventually(() => statuses.length >= servedWhileDown + 20, { what: "more requests while Redis is down" });

      await redis.restart();
      redisDown = false;
      for (const instance of instances) await instance.waitForStdout(/Redis reachable again/, 10_000);
      const prefix = env.REDIS_PREFIX as string;
      await eventually(async () => (await redis.cli("ZSCORE", `${prefix}key:cooldown`, keyIdOf(cooled))) === String(reset), { timeoutMs: 10_000, what: "the cooldown in Redis" });
      await eventually(async () => (await redis.cli("HLEN", `${prefix}keys`)) === "2", { timeoutMs: 10_000, what: "the key list back in Redis" });
      await eventually(async () => (await statusEverywhere(instances, keyIdOf(cooled))).every((status) => status === "cooling"), { timeoutMs: 10_000, what: "both instances agree the key cools" });
      running = false;
      await Promise.all(loads);

      expect(statuses.length).toBeGreaterThan(40);
      expect(statuses.filter((status) => status !== 200)).toEqual([]);
      for (const instance of instances) {
        const lines = instance.stdout().split("\n").filter((line) => /Redis/.test(line));
        expect({ unreachable: count(instance.stdout(), /Redis unreachable/), back: count(instance.stdout(), /Redis reachable again/), lines }).toEqual({ unreachable: 1, back: 1, lines });
        expect((await readyz(instance)).status).toBe("ready");
      }
      // The same lines are in the errors log, as JSON, one start and one end from each instance.
      const errorsLog = async () => (await readdir(env.LOG_DIR as string)).filter((name) => name.startsWith("errors-")).map((name) => readFileSync(join(env.LOG_DIR as string, name), "utf8")).join("");
      const sharedLines = async () => (await errorsLog()).split("\n").filter((line) => line.includes('"kind":"shared-store')).map((line) => (JSON.parse(line) as { kind: string }).kind).sort();
      await eventually(async () => (await sharedLines()).length >= 4, { what: "the Redis lines in the errors log" });
      expect(await sharedLines()).toEqual(["shared-store", "shared-store", "shared-store-recovered", "shared-store-recovered"]);
      // Converged: neither instance sends the key anything more before its reset.
      const converged = fake.requests.length;
      for (const instance of instances) for (let i = 0; i < 4; i++) expect((await chat(instance)).status).toBe(200);
      expect(fake.requests.slice(converged).filter((request) => request.key === cooled).length).toBe(0);
    } finally {
      running = false;
      if (redisDown) await redis.restart();
      await fake.stop();
    }
  }, 60_000);

  test("Redis paused (SIGSTOP) for 5 s: requests still complete within the Redis timeout plus normal latency; none hangs", async () => {
    const accounts = startFakeAccounts({ accounts: [{ id: "user_pause", keys: [testKeys[0] as string, testKeys[1] as string], freePerDay: 1_000, freePerMinute: 1_000, credits: 100 }] });
    try {
      const env = envFor(freshPrefix(), accounts.url);
      expect((await cli(env, "add-key", testKeys[0] as string)).code).toBe(0);
      expect((await cli(env, "add-key", testKeys[1] as string)).code).toBe(0);
      const instances = await startInstances(2, env);
      const timed = async (instance: ProxyProcess, model: string) => {
        const started = performance.now();
        const response = await chat(instance, model);
        const ms = performance.now() - started;
        return { status: response.status, ms };
      };
      // Normal latency, Redis answering.
      const normal = await Promise.all(instances.flatMap((instance) => [timed(instance, "openai/gpt-4o-mini"), timed(instance, "meta-llama/llama-3.3-70b-instruct:free")]));
      const normalMs = Math.max(...normal.map((each) => each.ms));
      redis.pause();
      const pausedAt = performance.now();
      const during: Array<{ status: number; ms: number }> = [];
      try {
        while (performance.now() - pausedAt < 5_000) {
          during.push(...(await Promise.all(instances.flatMap((instance) => [timed(instance, "openai/gpt-4o-mini"), timed(instance, "meta-llama/llama-3.3-70b-instruct:free")]))));
          // Paced (not waiting for anything): the account's 1,000 free requests a minute must last the 5 s.
          await Bun.sleep(25);
        }
      } finally {
        redis.resume();
      }
      expect(during.length).toBeGreaterThan(8);
      expect(during.filter((each) => each.status !== 200)).toEqual([]);
      // The Redis timeout is 250 ms; a free request waits for one reservation at most.
      const slowest = Math.max(...during.map((each) => each.ms));
      expect(slowest).toBeLessThan(250 + normalMs + 500);
    } finally {
      await accounts.stop();
    }
  }, 60_000);
});

describe.skipIf(!hasRedis)("moving keys between a keys file and Redis", () => {
  test("import-keys FILE merges by key id into Redis (every instance has them); export-keys FILE writes Redis's list back into a keys file with mode 0600", async () => {
    const fake = startFakeOpenRouter();
    try {
      const env = envFor(freshPrefix(), fake.url);
      const instance = (await startInstances(1, env))[0] as ProxyProcess;
      expect((await cli(env, "add-key", testKeys[0] as string, "--no-verify")).code).toBe(0);
      const file = join(dir, "import-me.json");
      await Bun.write(file, JSON.stringify({ keys: [{ key: testKeys[0], label: "in both" }, { key: testKeys[1], label: "only in the file" }] }));
      const imported = await cli(env, "import-keys", file);
      expect(imported.code).toBe(0);
      expect(imported.stdout).toContain("imported 1 key from");
      expect(imported.stdout).toContain("1 already there");
      expect(await redis.cli("HLEN", `${env.REDIS_PREFIX}keys`)).toBe("2");
      await eventually(async () => (await keysOf(instance)).length === 2, { timeoutMs: 1_000, what: "the imported key on the running instance" });

      const out = join(dir, "exported.json");
      const exported = await cli(env, "export-keys", out);
      expect(exported.code).toBe(0);
      const written = (await Bun.file(out).json()) as { keys: Array<{ key: string; label?: string }> };
      expect(written.keys.map((entry) => entry.key).sort()).toEqual([testKeys[0], testKeys[1]].sort() as string[]);
      expect(written.keys.find((entry) => entry.key === testKeys[1])?.label).toBe("only in the file");
      expect((await Bun.file(out).stat()).mode & 0o777).toBe(0o600);
      // The secrets went to the file, never to the terminal.
      for (const key of testKeys) expect(exported.stdout + exported.stderr + imported.stdout + imported.stderr).not.toContain(key);
    } finally {
      await fake.stop();
    }
  }, 30_000);

  test("import-keys and export-keys without REDIS_URL exit 2 naming the variable", async () => {
    const plain = { KEYS_FILE: join(dir, "plain.json") };
    for (const command of ["import-keys", "export-keys"]) {
      const result = await runCli([command, join(dir, "x.json")], { cwd: dir, env: plain, log });
      expect(result.code).toBe(2);
      expect(result.stderr).toContain("REDIS_URL");
    }
  });

  test("when Redis holds no keys and KEYS_FILE exists, the first instance imports it once (under a lease) and says so", async () => {
    const fake = startFakeOpenRouter();
    try {
      const env = envFor(freshPrefix(), fake.url);
      await Bun.write(env.KEYS_FILE as string, JSON.stringify({ keys: [testKeys[0], testKeys[1]] }));
      const instances = await startInstances(3, env);
      await eventually(async () => (await Promise.all(instances.map(keysOf))).every((keys) => keys.length === 2), { what: "both keys on every instance" });
      const said = instances.filter((instance) => /imported 2 keys from/.test(instance.stdout()));
      expect(said.length).toBe(1);
      expect(await redis.cli("HLEN", `${env.REDIS_PREFIX}keys`)).toBe("2");
      for (const instance of instances) expect((await chat(instance)).status).toBe(200);
    } finally {
      await fake.stop();
    }
  }, 30_000);
});

describe.skipIf(!hasRedis)("secrets in Redis", () => {
  test("with KEYS_ENCRYPTION_KEY the secrets in Redis are sealed (enc:v1:…), instances serve with them, and an instance with a wrong key stops with one line naming KEYS_ENCRYPTION_KEY", async () => {
    const fake = startFakeOpenRouter();
    try {
      const key = Buffer.alloc(32, 7).toString("base64");
      const env = envFor(freshPrefix(), fake.url, { KEYS_ENCRYPTION_KEY: key });
      expect((await cli(env, "add-key", testKeys[0] as string, "--no-verify")).code).toBe(0);
      const stored = await redis.cli("HGET", `${env.REDIS_PREFIX}keys`, keyIdOf(testKeys[0] as string));
      expect(stored).toContain("enc:v1:");
      expect(stored).not.toContain(testKeys[0] as string);
      const instance = (await startInstances(1, env))[0] as ProxyProcess;
      expect((await chat(instance)).status).toBe(200);
      expect(fake.requests.at(-1)?.key).toBe(testKeys[0] as string);

      const wrong = await runCli(["serve", "--port", "0", "--host", "127.0.0.1"], { cwd: dir, env: { ...env, KEYS_ENCRYPTION_KEY: Buffer.alloc(32, 9).toString("base64") }, log, limitMs: 10_000 });
      expect(wrong.code).not.toBe(0);
      expect(wrong.stderr).toContain("KEYS_ENCRYPTION_KEY");
      expect(wrong.stderr.trim().split("\n").length).toBe(1);
      expect(wrong.stderr).not.toContain(key);
    } finally {
      await fake.stop();
    }
  }, 30_000);
});

describe.skipIf(!hasRedis)("a person's enable-key and the shared rests", () => {
  test("enable-key with REDIS_URL ends the account's rests in Redis (not its free-model class, where a known daily limit lives), so no resync brings them back", async () => {
    const accounts = startFakeAccounts({ accounts: [{ id: "user_rest", keys: [testKeys[0] as string], credits: 100 }] });
    try {
      const env = envFor(freshPrefix(), accounts.url);
      expect((await cli(env, "add-key", testKeys[0] as string)).code).toBe(0);
      const prefix = env.REDIS_PREFIX as string;
      const until = String(Date.now() + 3_600_000);
      await redis.cli("ZADD", `${prefix}account:rest`, until, "user_rest|class:paid", until, "user_rest|class:free", until, "user_other|class:paid");
      const id = keyIdOf(testKeys[0] as string);
      expect((await cli(env, "enable-key", id)).code).toBe(0);
      expect(await redis.cli("ZSCORE", `${prefix}account:rest`, "user_rest|class:paid")).toBe("");
      expect(await redis.cli("ZSCORE", `${prefix}account:rest`, "user_rest|class:free")).toBe(until);
      expect(await redis.cli("ZSCORE", `${prefix}account:rest`, "user_other|class:paid")).toBe(until);
    } finally {
      await accounts.stop();
    }
  }, 30_000);
});
