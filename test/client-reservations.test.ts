/**
 * Budgets and token limits under concurrency: an admitted request holds its estimated worst case
 * (its reservation: the prompt estimated from the body's size, `max_tokens` at the model's prices
 * in the models catalog) until it ends, and its real usage then replaces it. Real proxies on a fake
 * OpenRouter that serves a priced catalog at GET /models; with Redis, two proxies on one real
 * redis-server. Every answer and log line is scanned for pool and client keys.
 */
import { describe, expect, test } from "bun:test";
import { adminClient, adminToken, answerCosting, runKeyPrintingCli } from "./helpers/clients.ts";
import { catalogModel, errorReply, type FakeRequest } from "./helpers/fake-openrouter.ts";
import { hasRedis, useRedisServer } from "./helpers/redis-suite.ts";
import { useSuite } from "./helpers/suite.ts";
import { eventually, requestsDone, startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";
import type { Config } from "../src/config.ts";

const secrets: string[] = [...testKeys, adminToken];
const { fake, log, cleanups, folder } = useSuite({ secrets });
const { redis } = useRedisServer({ optional: true });

/** $3 per million prompt tokens, $15 per million output tokens: 400 output tokens reserve $0.006. */
const PRICEY = "test/pricey-model";
const catalog = [catalogModel(PRICEY, 3, 15), catalogModel("test/cheap-model", 0.1, 0.4)];
/** 2026-12-04T12:00:40Z: the day ends 11 h 59 min 20 s later. */
const T0 = Date.parse("2026-12-04T12:00:40Z");
const SECONDS_TO_MIDNIGHT = (Date.parse("2026-12-05T00:00:00Z") - T0) / 1000;

interface Harness {
  proxy: TestProxy;
  admin: ReturnType<typeof adminClient>;
  chat(key: string, body?: Record<string, unknown>): Promise<{ status: number; json: { error?: { code: string; type: string; message: string } }; headers: Headers }>;
}

async function start({ config = {}, dir, now }: { config?: Partial<Config>; dir?: string; now?: () => number } = {}): Promise<Harness> {
  const proxy = await startTestProxy({
    upstream: fake.url,
    ...(dir ? { dir, keys: null } : {}),
    config: { ADMIN_TOKEN: adminToken, ...config },
    overrides: { modelCatalog: true, catalogTickMs: 0, ...(now ? { now } : {}) },
  });
  cleanups.push(async () => {
    log.record(proxy.output.out, proxy.output.err);
    await (dir ? proxy.stop(0) : proxy.close());
  });
  return {
    proxy,
    admin: adminClient(proxy.url, log, secrets),
    async chat(key, body = {}) {
      const response = await fetch(`${proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
        body: JSON.stringify({ model: PRICEY, max_tokens: 400, messages: [{ role: "user", content: "hi" }], ...body }),
      });
      const text = await response.text();
      log.record(text);
      return { status: response.status, json: text.startsWith("{") ? JSON.parse(text) : {}, headers: response.headers };
    },
  };
}

const upstreamChats = () => fake.requests.filter((request) => request.path === "/chat/completions").length;

/**
 * Sends `count` requests at once through `proxies` (in turn) while the upstream holds every answer
 * until each request has either reached it or been refused: the hardest case for a budget, every
 * admitted request in flight together. Answers cost `cost`. Returns the statuses and the refusals.
 */
async function concurrentBurst(harnesses: Harness[], key: string, count: number, cost: number) {
  let arrived = 0;
  let releaseAll!: () => void;
  const released = new Promise<void>((resolve) => (releaseAll = resolve));
  const arrive = () => {
    if (++arrived === count) releaseAll();
  };
  fake.reply(async (request: FakeRequest) => {
    if (request.path !== "/chat/completions") return errorReply(404, "not here");
    arrive();
    await released;
    return answerCosting(cost, 420);
  });
  const results = await Promise.all(
    Array.from({ length: count }, async (_, index) => {
      const answer = await (harnesses[index % harnesses.length] as Harness).chat(key);
      if (answer.status !== 200) arrive();
      return answer;
    }),
  );
  return { served: results.filter((result) => result.status === 200).length, refused: results.filter((result) => result.status !== 200) };
}

test("50 concurrent requests that each cost $0.005 (max_tokens 400 at $15 per million output tokens) against --usd-per-day 0.01: at most 4 are served", async () => {
  fake.serveCatalog(catalog);
  const harness = await start({ now: () => T0 });
  const key = await harness.admin.add("bot", { usdPerDay: 0.01 });
  await harness.proxy.catalog?.tick();
  expect(harness.proxy.catalog?.size()).toBe(2);
  // A small whole answer is settled before it is sent (its record completes then): no wait after.
  const { served, refused } = await concurrentBurst([harness], key, 50, 0.005);
  expect(served).toBeGreaterThanOrEqual(1);
  expect(served).toBeLessThanOrEqual(4);
  expect(upstreamChats()).toBe(served);
  for (const refusal of refused) {
    expect(refusal.status).toBe(429);
    expect(refusal.json.error).toMatchObject({ code: "client_budget_exceeded", type: "insufficient_quota" });
    expect(Number(refusal.headers.get("retry-after"))).toBe(SECONDS_TO_MIDNIGHT);
  }
  const [view] = (await harness.admin.call("GET", "/clients")).json.clients as Array<{ usage: { today: { cost: number; requests: number } } }>;
  expect(view?.usage.today.cost).toBeCloseTo(0.005 * served, 9);
  expect(view?.usage.today.cost).toBeLessThanOrEqual(0.01);
});

test("a request whose reservation does not fit in what is left of the day is refused with Retry-After to the day's end, and nothing is sent upstream", async () => {
  fake.serveCatalog(catalog);
  const harness = await start({ now: () => T0 });
  const key = await harness.admin.add("bot", { usdPerDay: 0.01 });
  await harness.proxy.catalog?.tick();
  fake.reply(() => answerCosting(0.005));
  expect((await harness.chat(key)).status).toBe(200); // $0.005 spent, $0.005 left
  const sent = upstreamChats();
  const refused = await harness.chat(key); // holds up to 400 × $15/M + the prompt ≈ $0.0061
  expect(refused.status).toBe(429);
  expect(refused.json.error).toMatchObject({ code: "client_budget_exceeded", type: "insufficient_quota" });
  expect(refused.json.error?.message).toContain("$0.01 per day ($0.0050 left; this request holds up to $0.0061");
  expect(Number(refused.headers.get("retry-after"))).toBe(SECONDS_TO_MIDNIGHT);
  expect(upstreamChats()).toBe(sent);
  // A smaller max_tokens holds less, and fits.
  expect((await harness.chat(key, { max_tokens: 100 })).status).toBe(200);
  expect(upstreamChats()).toBe(sent + 1);
});

test("a settle replaces the reservation by the real cost: a request refused while another is in flight fits once it has ended", async () => {
  fake.serveCatalog(catalog);
  const harness = await start({ now: () => T0 });
  const key = await harness.admin.add("bot", { usdPerDay: 0.01 });
  await harness.proxy.catalog?.tick();
  let finish!: () => void;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const reached = fake.nextRequest();
  fake.replyOnce(async () => {
    await finished;
    return answerCosting(0.001);
  });
  const first = harness.chat(key); // holds ≈ $0.0061 while it runs
  await reached;
  const whileInFlight = await harness.chat(key);
  expect(whileInFlight.status).toBe(429); // $0.0061 + $0.0061 > $0.01
  expect(whileInFlight.json.error?.code).toBe("client_budget_exceeded");
  const ended = requestsDone(harness.proxy, 1);
  finish();
  expect((await first).status).toBe(200);
  await ended;
  fake.reply(() => answerCosting(0.001));
  expect((await harness.chat(key)).status).toBe(200); // $0.001 spent + $0.0061 held fits in $0.01
  expect(upstreamChats()).toBe(2);
});

test("--tpm reserves the prompt estimate (body bytes / 4) and max_tokens, 4,096 when the body names none", async () => {
  const harness = await start({ now: () => T0 });
  const key = await harness.admin.add("tokens", { tpm: 3000 });
  fake.reply(() => answerCosting(0, 420));
  const unbounded = await harness.chat(key, { max_tokens: undefined }); // 4,096 + the prompt > 3,000
  expect(unbounded.status).toBe(429);
  expect(unbounded.json.error?.code).toBe("client_rate_limited");
  expect(unbounded.json.error?.message).toContain("3000 tokens per minute (3000 left; this request holds up to 41");
  expect(unbounded.json.error?.message).toContain("a smaller max_tokens is needed");
  expect(Number(unbounded.headers.get("retry-after"))).toBe(20);
  expect(upstreamChats()).toBe(0);
  for (const max_tokens of [1000, 1000, 500]) expect((await harness.chat(key, { max_tokens })).status).toBe(200); // 420 each once settled
  expect((await harness.chat(key, { max_tokens: 1900 })).status).toBe(429); // 1,260 used + 1,900 + the prompt > 3,000
  expect(upstreamChats()).toBe(3);
});

test("the catalog is fetched at start through a pool key, and its prices are kept per token by model id", async () => {
  const dir = await folder();
  await Bun.write(`${dir}/keys.json`, JSON.stringify({ keys: testKeys.map((key) => ({ key })) }));
  const added = await runKeyPrintingCli(["add-client", "bot", "--usd-per-day", "0.01"], { cwd: dir, env: { KEYS_FILE: `${dir}/keys.json` }, log, secrets });
  expect(added.code).toBe(0);
  fake.serveCatalog(catalog);
  const harness = await start({ dir });
  await harness.proxy.catalog?.tick(); // the fetch started at start: this waits for it
  const fetched = fake.requests.filter((request) => request.path === "/models");
  expect(fetched).toHaveLength(1);
  expect(fetched[0]?.method).toBe("GET");
  expect(testKeys).toContain(fetched[0]?.key ?? "");
  expect(harness.proxy.catalog?.priceOf(PRICEY)).toEqual({ prompt: 3 / 1_000_000, completion: 15 / 1_000_000 });
  expect(harness.proxy.catalog?.priceOf(`${PRICEY}:nitro`)).toEqual({ prompt: 3 / 1_000_000, completion: 15 / 1_000_000 });
  expect(harness.proxy.catalog?.priceOf("test/unlisted")).toBeUndefined();
  // Not again before the hour is up.
  await harness.proxy.catalog?.tick();
  expect(fake.requests.filter((request) => request.path === "/models")).toHaveLength(1);
});

test("without a catalog (GET /models failing) no request fails for it: an unpriced model reserves the client's own average cost, $0 at first", async () => {
  fake.serveCatalog(() => errorReply(500, "catalog down"));
  const harness = await start({ now: () => T0 });
  const key = await harness.admin.add("bot", { usdPerDay: 0.01 });
  await harness.proxy.catalog?.tick();
  expect(fake.requests.filter((request) => request.path === "/models")).toHaveLength(1);
  expect(harness.proxy.catalog?.size()).toBe(0);
  // Said once, in the errors log and on stderr; never to a client.
  await harness.proxy.logging.flush();
  expect(harness.proxy.output.err).toContain(`error model prices: ${fake.url}/models answered 500; budgets reserve each client's average cost per model until they load`);
  fake.reply(() => answerCosting(0.004));
  expect((await harness.chat(key)).status).toBe(200); // no average yet: holds $0, spends $0.004
  expect((await harness.chat(key)).status).toBe(200); // holds the average, $0.004: $0.008 after
  const refused = await harness.chat(key); // $0.008 + $0.004 > $0.01
  expect(refused.status).toBe(429);
  expect(refused.json.error?.code).toBe("client_budget_exceeded");
  expect(upstreamChats()).toBe(2);
});

describe.skipIf(!hasRedis)("with Redis", () => {
  test("two proxy instances on one Redis hold the same bound: at most 4 of 50 concurrent $0.005 requests are served against --usd-per-day 0.01", async () => {
    fake.serveCatalog(catalog);
    const config = { REDIS_URL: redis.url, REDIS_PREFIX: `reserve-${crypto.randomUUID().slice(0, 8)}:` };
    const a = await start({ config });
    const b = await start({ config });
    const key = await a.admin.add("bot", { usdPerDay: 0.01 });
    await eventually(() => b.proxy.clients.directory.byName("bot") !== undefined, { what: "the client on the second instance" });
    await Promise.all([a.proxy.catalog?.tick(), b.proxy.catalog?.tick()]);
    expect([a.proxy.catalog?.size(), b.proxy.catalog?.size()]).toEqual([2, 2]);
    const { served, refused } = await concurrentBurst([a, b], key, 50, 0.005);
    expect(served).toBeGreaterThanOrEqual(1);
    expect(served).toBeLessThanOrEqual(4);
    expect(upstreamChats()).toBe(served);
    for (const refusal of refused) {
      expect(refusal.status).toBe(429);
      expect(refusal.json.error?.code).toBe("client_budget_exceeded");
      expect(Number(refusal.headers.get("retry-after"))).toBeGreaterThanOrEqual(1);
    }
    // Every reservation was released when its request ended: nothing is held in Redis any more.
    const created = b.proxy.clients.directory.byName("bot")?.record.createdAt;
    const dayKey = `${config.REDIS_PREFIX}client:bot:${created}:day:${Math.floor(Date.now() / 86_400_000) * 86_400_000}`;
    await eventually(async () => Number(await redis.cli("HGET", dayKey, "reservedCost")) === 0 && Number(await redis.cli("HGET", dayKey, "cost")) > 0, { what: "the settled counts in Redis" });
    expect(Number(await redis.cli("HGET", dayKey, "cost"))).toBeCloseTo(0.005 * served, 9);
  }, 30_000);
});
