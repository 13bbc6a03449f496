/**
 * A day of traffic on an injected clock: 6 keys in 3 accounts behind the real proxy, against a
 * mock upstream that enforces OpenRouter's free-model limits per account (helpers/fake-accounts.ts).
 * It counts the upstream requests wasted on quotas the proxy already knew to be used up, and
 * compares with a plain per-key rotator run through the same schedule.
 *
 * What counts as wasted (scored by the mock, WasteScore in helpers/fake-accounts.ts): a 429 on an
 * account limit (free-models-per-min, free-models-per-day) when that account had already been
 * answered a 429 for the same limit with the same reset, or, for the daily limit, when the
 * account's daily limit had already been announced (GET /key, or an earlier daily 429's
 * X-RateLimit-Limit). The first 429 of each per-minute window is not wasted: nothing announces
 * it before it happens.
 *
 * The plain per-key rotator is the same proxy with every key on its own account (no GET /key)
 * and the mock's answers stripped of what the policy reads (no user_id, no "free-models-per-…",
 * no limit_source): every 429 becomes a per-key cooldown until the announced X-RateLimit-Reset.
 */
import { afterEach, expect, test } from "bun:test";
import { startFakeAccounts, type FakeAccountSpec, type FakeAccounts, type WasteScore } from "./helpers/fake-accounts.ts";
import { startTestProxy, type TestProxy } from "./helpers/test-proxy.ts";

const orKey = (name: string) => `sk-or-v1-${"s".repeat(50)}-${name}`;
const accounts: FakeAccountSpec[] = [
  { id: "user_one", keys: [orKey("1a"), orKey("1b")], freePerDay: 1000, credits: 100 }, // has bought credits
  { id: "user_two", keys: [orKey("2a"), orKey("2b")], freePerDay: 50, freeUsedToday: 20, credits: 100 }, // used elsewhere this morning
  { id: "user_three", keys: [orKey("3a"), orKey("3b")], freePerDay: 50, credits: 100 },
];
const FREE_MODELS = ["meta-llama/llama-3.3-70b-instruct:free", "deepseek/deepseek-chat-v3-0324:free"];
const PAID_MODEL = "openai/gpt-4o-mini";

/** 06:00 UTC; the simulated day runs past midnight, when the daily limits reset. */
const START = Date.UTC(2026, 2, 1, 6, 0, 0);
const DAY = 86_400_000;

/** mulberry32: a small seeded generator, so both runs see the same traffic. */
function random(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Arrival {
  at: number;
  model: string;
}

/** Bursts of 10 to 50 requests a second or two apart (over the per-minute limit), 4 to 20 minutes apart; four in five for free models. */
function schedule(): Arrival[] {
  const next = random(20260301);
  const arrivals: Arrival[] = [];
  let at = START;
  while (at < START + DAY) {
    const burst = 10 + Math.floor(next() * 41);
    for (let i = 0; i < burst; i++) {
      at += 500 + Math.floor(next() * 2500);
      const model = next() < 0.8 ? (FREE_MODELS[Math.floor(next() * FREE_MODELS.length)] as string) : PAID_MODEL;
      arrivals.push({ at, model });
    }
    at += 4 * 60_000 + Math.floor(next() * 16 * 60_000);
  }
  return arrivals;
}

interface RunResult {
  upstream: number;
  served: number;
  /** Client requests the proxy answered 429 itself, without asking the upstream. */
  answeredLocally: number;
  score: WasteScore;
  dailyLimit429s: number;
  /** Of the wasted ones, how many were on the daily limit (the rest: per-minute). */
  wastedDaily: number;
}

const running: Array<{ fake: FakeAccounts; proxy?: TestProxy }> = [];
afterEach(async () => {
  for (const { fake, proxy } of running.splice(0)) {
    await proxy?.close();
    await fake.stop();
  }
});

async function run(arrivals: readonly Arrival[], variant: "proxy" | "plain"): Promise<RunResult> {
  const clock = { now: START };
  const fake = startFakeAccounts({ accounts, now: () => clock.now, plain: variant === "plain" });
  const entry: { fake: FakeAccounts; proxy?: TestProxy } = { fake };
  running.push(entry);
  const proxy = await startTestProxy({
    upstream: fake.url,
    keys: accounts.flatMap((account) => account.keys),
    config: { LOG_LEVEL: "error" },
    overrides: {
      now: () => clock.now,
      discoverAccounts: variant === "proxy",
      // Waits pass on the simulated clock, not the real one.
      sleep: async (ms) => {
        clock.now += ms;
      },
    },
  });
  entry.proxy = proxy;
  await proxy.discovery;

  let served = 0;
  let answeredLocally = 0;
  for (const arrival of arrivals) {
    clock.now = Math.max(clock.now, arrival.at);
    const before = fake.chatCalls().length;
    const response = await fetch(`${proxy.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer client" },
      body: JSON.stringify({ model: arrival.model, messages: [{ role: "user", content: "hi" }] }),
    });
    await response.arrayBuffer();
    if (response.status === 200) served++;
    else if (fake.chatCalls().length === before) answeredLocally++;
  }
  const calls = fake.chatCalls();
  return {
    upstream: calls.length,
    served,
    answeredLocally,
    score: fake.score(),
    dailyLimit429s: calls.filter((call) => call.kind === "free-per-day").length,
    wastedDaily: calls.filter((call) => call.kind === "free-per-day" && call.wasted).length,
  };
}

test("a simulated day over 6 keys in 3 accounts: once a limit is known, no upstream request is wasted on it", async () => {
  const arrivals = schedule();
  expect(arrivals.length).toBeGreaterThan(2000);
  const proxy = await run(arrivals, "proxy");
  const plain = await run(arrivals, "plain");

  console.log(
    `simulation: ${proxy.upstream} upstream requests, wasted on known-exhausted quotas: proxy ${proxy.score.wasted}, plain per-key rotator ${plain.score.wasted}`,
  );
  console.log(
    `simulation detail: ${arrivals.length} client requests over 24 h; ` +
      `proxy: ${proxy.upstream} upstream, ${proxy.served} served, ${proxy.answeredLocally} answered 429 without the upstream, ` +
      `${proxy.score.firstLearned} first-learned 429s, ${proxy.dailyLimit429s} daily-limit 429s; ` +
      `plain: ${plain.upstream} upstream, ${plain.served} served, ${plain.answeredLocally} answered 429 without the upstream, ` +
      `${plain.score.firstLearned} first-learned 429s, ${plain.dailyLimit429s} daily-limit 429s (${plain.wastedDaily} of the wasted were daily, ${plain.score.wasted - plain.wastedDaily} per-minute)`,
  );

  expect(proxy.score.wasted).toBe(0);
  // The limits were known from GET /key and counted: no daily-limit 429 at all, across midnight too.
  expect(proxy.dailyLimit429s).toBe(0);
  // The comparison means something: the plain rotator does waste requests on the same traffic.
  expect(plain.score.wasted).toBeGreaterThan(0);
  expect(proxy.served).toBeGreaterThanOrEqual(plain.served);
}, 20_000);
