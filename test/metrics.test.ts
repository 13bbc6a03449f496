/**
 * `GET /metrics` (Prometheus text format 0.0.4) and the `Server-Timing` header on proxied answers.
 * The exposition is parsed strictly: a line the format does not allow fails the test.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { chatCompletion, errorReply, sseText } from "./helpers/fake-openrouter.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, testKeys, type TestProxy, type TestProxyOptions } from "./helpers/test-proxy.ts";

const [keyA, keyB] = testKeys as [string, string, string];
const [idA, idB] = [keyIdOf(keyA), keyIdOf(keyB)];
const adminToken = "admin-token-metrics-5b7e";

let clock = Date.parse("2026-11-25T10:00:00.000Z");
const now = () => clock;

const { fake, cleanups } = useSuite({ reply: () => chatCompletion("hello") });
afterEach(() => {
  clock = Date.parse("2026-11-25T10:00:00.000Z");
});

async function start(options: Partial<TestProxyOptions> = {}): Promise<TestProxy> {
  const proxy = await startTestProxy({ upstream: fake.url, ...options, overrides: { now, ...options.overrides } });
  cleanups.push(() => proxy.close());
  return proxy;
}

const chatBody = (extra: Record<string, unknown> = {}) => JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }], ...extra });

function chat(p: TestProxy, body = chatBody()) {
  return fetch(`${p.url}/v1/chat/completions`, { method: "POST", body, headers: { "content-type": "application/json", authorization: "Bearer client" } });
}

const eventStream = (text: string) => new Response(text, { headers: { "content-type": "text/event-stream" } });

// ---- A strict reader of the Prometheus text exposition format (0.0.4) ----

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

interface Exposition {
  samples: Sample[];
  /** Family name → its TYPE. */
  types: Map<string, string>;
}

const metricName = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const labelPair = '([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\\\\n]|\\\\[\\\\"n])*)"';
const floatValue = "[+-]?(?:\\d+(?:\\.\\d*)?|\\.\\d+)(?:[eE][+-]?\\d+)?|[+-]?Inf|NaN";
const sampleLine = new RegExp(`^(${metricName})(?:\\{((?:${labelPair})(?:,${labelPair})*)?\\})? (${floatValue})(?: -?\\d+)?$`);
const helpLine = new RegExp(`^# HELP (${metricName}) .*$`);
const typeLine = new RegExp(`^# TYPE (${metricName}) (counter|gauge|histogram|summary|untyped)$`);
const histogramSuffixes = ["_bucket", "_sum", "_count"];

function parseExposition(text: string): Exposition {
  expect(text.endsWith("\n")).toBe(true);
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.slice(0, -1).split("\n")) {
    if (line.startsWith("#")) {
      const type = typeLine.exec(line);
      if (type) {
        if (types.has(type[1] as string)) throw new Error(`a second TYPE line for ${type[1]}`);
        types.set(type[1] as string, type[2] as string);
      } else if (!helpLine.test(line)) throw new Error(`not a HELP or TYPE line: ${JSON.stringify(line)}`);
      continue;
    }
    const match = sampleLine.exec(line);
    if (!match) throw new Error(`not a sample line (name{labels} value): ${JSON.stringify(line)}`);
    const name = match[1] as string;
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? "").matchAll(new RegExp(labelPair, "g"))) labels[pair[1] as string] = pair[2] as string;
    const valueText = match.at(-1) as string;
    const value = valueText.endsWith("Inf") ? (valueText.startsWith("-") ? -Infinity : Infinity) : Number(valueText);
    // Every sample belongs to a family declared before it (a histogram's by its suffixes).
    const family = types.has(name) ? name : histogramSuffixes.map((suffix) => (name.endsWith(suffix) ? name.slice(0, -suffix.length) : "")).find((base) => types.get(base) === "histogram");
    if (!family) throw new Error(`sample ${name} has no TYPE line before it`);
    samples.push({ name, labels, value });
  }
  return { samples, types };
}

/** The value of the sample with exactly these labels; undefined when there is none. */
function valueOf({ samples }: Exposition, name: string, labels: Record<string, string> = {}): number | undefined {
  const wanted = JSON.stringify(Object.entries(labels).sort());
  return samples.find((sample) => sample.name === name && JSON.stringify(Object.entries(sample.labels).sort()) === wanted)?.value;
}

async function scrape(p: TestProxy, token?: string): Promise<Exposition> {
  const response = await fetch(`${p.url}/metrics`, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toStartWith("text/plain; version=0.0.4");
  return parseExposition(await response.text());
}

describe("GET /metrics", () => {
  test("the text parses as Prometheus exposition: every non-comment line is name{labels} value", async () => {
    const p = await start();
    fake.replyOnce(() => errorReply(429, "slow down"));
    expect((await chat(p)).status).toBe(200);
    fake.replyOnce(() => eventStream(sseText(["a", "b"])));
    await (await chat(p, chatBody({ stream: true, model: 'odd/"quoted"\\model' }))).text();
    const exposition = await scrape(p);
    expect(exposition.samples.length).toBeGreaterThan(20);
    // Label values are escaped: a model name with quotes and a backslash still gives valid lines.
    const odd = exposition.samples.find((sample) => sample.name === "openrouter_proxy_tokens_total" && sample.labels.model?.includes("quoted"));
    expect(odd).toMatchObject({ labels: { key_id: idB, type: "prompt" }, value: 5 });
  });

  test("the metric names are these, with these types", async () => {
    const p = await start();
    expect((await chat(p)).status).toBe(200);
    const { types } = await scrape(p);
    const expected = {
      openrouter_proxy_requests_total: "counter",
      openrouter_proxy_upstream_attempts_total: "counter",
      openrouter_proxy_retries_total: "counter",
      openrouter_proxy_keys: "gauge",
      openrouter_proxy_tokens_total: "counter",
      openrouter_proxy_cost_usd_total: "counter",
      openrouter_proxy_time_to_first_byte_seconds: "histogram",
      openrouter_proxy_request_duration_seconds: "histogram",
      openrouter_proxy_added_seconds: "histogram",
    };
    expect(Object.fromEntries(types)).toMatchObject(expected);
  });

  test("without ADMIN_TOKEN, /metrics is open", async () => {
    const p = await start();
    await scrape(p);
  });

  test("with ADMIN_TOKEN set, /metrics needs it", async () => {
    const p = await start({ config: { ADMIN_TOKEN: adminToken } });
    for (const headers of [{}, { authorization: "Bearer wrong-token-1234" }] as Array<Record<string, string>>) {
      const response = await fetch(`${p.url}/metrics`, { headers });
      expect(response.status).toBe(401);
      expect(await response.json()).toMatchObject({ error: { type: "authentication_error", code: "invalid_admin_token" } });
    }
    await scrape(p, adminToken);
  });

  test("requests by route and status move with traffic", async () => {
    const p = await start();
    const before = await scrape(p);
    expect(valueOf(before, "openrouter_proxy_requests_total", { route: "/chat/completions", status: "200" })).toBeUndefined();
    expect((await chat(p)).status).toBe(200);
    expect((await chat(p)).status).toBe(200);
    fake.replyOnce(() => errorReply(400, "bad request"));
    expect((await chat(p)).status).toBe(400);
    expect((await fetch(`${p.url}/api/v1/models`)).status).toBe(200);
    expect((await fetch(`${p.url}/v1/some/unknown/path`)).status).toBe(200); // the fake answers anything
    const after = await scrape(p);
    expect(valueOf(after, "openrouter_proxy_requests_total", { route: "/chat/completions", status: "200" })).toBe(2);
    expect(valueOf(after, "openrouter_proxy_requests_total", { route: "/chat/completions", status: "400" })).toBe(1);
    expect(valueOf(after, "openrouter_proxy_requests_total", { route: "/models", status: "200" })).toBe(1);
    // Unknown paths share one label value: a client cannot grow the label set.
    expect(valueOf(after, "openrouter_proxy_requests_total", { route: "other", status: "200" })).toBe(1);
  });

  test("upstream attempts by outcome, and retries, move with traffic", async () => {
    const p = await start({ config: { MAX_ATTEMPTS: 3 } });
    expect((await chat(p)).status).toBe(200);
    let exposition = await scrape(p);
    expect(valueOf(exposition, "openrouter_proxy_upstream_attempts_total", { outcome: "ok" })).toBe(1);
    expect(valueOf(exposition, "openrouter_proxy_retries_total")).toBe(0);
    fake.replyOnce(() => errorReply(429, "slow down"));
    expect((await chat(p)).status).toBe(200);
    fake.replyOnce(() => errorReply(500, "provider down"));
    expect((await chat(p)).status).toBe(200);
    exposition = await scrape(p);
    expect(valueOf(exposition, "openrouter_proxy_upstream_attempts_total", { outcome: "ok" })).toBe(3);
    expect(valueOf(exposition, "openrouter_proxy_upstream_attempts_total", { outcome: "rate-limited" })).toBe(1);
    expect(valueOf(exposition, "openrouter_proxy_upstream_attempts_total", { outcome: "upstream-error" })).toBe(1);
    expect(valueOf(exposition, "openrouter_proxy_retries_total")).toBe(2);
  });

  test("keys by state move with the pool: active, cooling, disabled", async () => {
    const p = await start({ config: { FAILURE_THRESHOLD: 1 } });
    const keys = async () => {
      const exposition = await scrape(p);
      return ["active", "cooling", "disabled"].map((state) => valueOf(exposition, "openrouter_proxy_keys", { state }));
    };
    expect(await keys()).toEqual([3, 0, 0]);
    fake.replyOnce(() => errorReply(429, "slow down"), () => errorReply(401, "User not found."));
    expect((await chat(p)).status).toBe(200);
    expect(await keys()).toEqual([1, 1, 1]);
    clock += 61_000; // the default cooldown is over
    expect(await keys()).toEqual([2, 0, 1]);
  });

  test("tokens and cost by model and key move with traffic, streamed or not", async () => {
    const p = await start();
    expect((await chat(p)).status).toBe(200); // usage 5 + 3, cost 0.00001
    fake.replyOnce(() => eventStream(sseText(["streamed"]))); // usage 5 + 2, cost 0.00002
    await (await chat(p, chatBody({ stream: true, model: "anthropic/claude-sonnet-4" }))).text();
    expect((await chat(p)).status).toBe(200);
    const exposition = await scrape(p);
    const tokens = (model: string, type: string) => valueOf(exposition, "openrouter_proxy_tokens_total", { model, key_id: idA, type });
    expect(tokens("openai/gpt-4o-mini", "prompt")).toBe(10);
    expect(tokens("openai/gpt-4o-mini", "completion")).toBe(6);
    expect(tokens("anthropic/claude-sonnet-4", "prompt")).toBe(5);
    expect(tokens("anthropic/claude-sonnet-4", "completion")).toBe(2);
    expect(valueOf(exposition, "openrouter_proxy_cost_usd_total", { model: "openai/gpt-4o-mini", key_id: idA })).toBeCloseTo(0.00002, 12);
    expect(valueOf(exposition, "openrouter_proxy_cost_usd_total", { model: "anthropic/claude-sonnet-4", key_id: idA })).toBeCloseTo(0.00002, 12);
  });

  test("histograms of time to first byte, total duration and the proxy's own added time count every request", async () => {
    const p = await start();
    const names = ["openrouter_proxy_time_to_first_byte_seconds", "openrouter_proxy_request_duration_seconds", "openrouter_proxy_added_seconds"];
    for (let round = 1; round <= 3; round++) {
      expect((await chat(p)).status).toBe(200);
      const exposition = await scrape(p);
      for (const name of names) {
        expect(valueOf(exposition, `${name}_count`)).toBe(round);
        expect(valueOf(exposition, `${name}_bucket`, { le: "+Inf" })).toBe(round);
        // Buckets are cumulative: never decreasing, in order of their bounds.
        const buckets = exposition.samples.filter((sample) => sample.name === `${name}_bucket`);
        const bounds = buckets.map((bucket) => (bucket.labels.le === "+Inf" ? Infinity : Number(bucket.labels.le)));
        expect(bounds).toEqual([...bounds].sort((a, b) => a - b));
        for (let index = 1; index < buckets.length; index++) expect(buckets[index]!.value).toBeGreaterThanOrEqual(buckets[index - 1]!.value);
      }
      const sum = (name: string) => valueOf(exposition, `${name}_sum`) as number;
      expect(sum("openrouter_proxy_time_to_first_byte_seconds")).toBeGreaterThan(0);
      // The proxy's own time is part of the time to first byte, which is part of the duration.
      expect(sum("openrouter_proxy_added_seconds")).toBeLessThanOrEqual(sum("openrouter_proxy_time_to_first_byte_seconds"));
      expect(sum("openrouter_proxy_time_to_first_byte_seconds")).toBeLessThanOrEqual(sum("openrouter_proxy_request_duration_seconds") + 1e-9);
    }
  });
});

describe("Server-Timing", () => {
  const timing = /^proxy;dur=(\d+(?:\.\d+)?), upstream;dur=(\d+(?:\.\d+)?)(?:, retries;dur=(\d+(?:\.\d+)?))?$/;

  test("every proxied response carries Server-Timing with the proxy's own time and the upstream's time to first byte", async () => {
    const p = await start();
    const started = performance.now();
    const response = await chat(p);
    const elapsed = performance.now() - started;
    await response.text();
    const match = timing.exec(response.headers.get("server-timing") ?? "");
    expect(match).not.toBeNull();
    const [proxyMs, upstreamMs] = [Number(match?.[1]), Number(match?.[2])];
    expect(upstreamMs).toBeGreaterThan(0);
    expect(proxyMs + upstreamMs).toBeLessThanOrEqual(elapsed);
  });

  test("a streamed answer carries Server-Timing too", async () => {
    const p = await start();
    fake.replyOnce(() => eventStream(sseText(["a"])));
    const response = await chat(p, chatBody({ stream: true }));
    await response.text();
    expect(response.headers.get("server-timing")).toMatch(timing);
  });

  test("after a retry, Server-Timing also says how long the earlier attempts took", async () => {
    const p = await start();
    fake.replyOnce(() => errorReply(429, "slow down"));
    const response = await chat(p);
    await response.text();
    const match = timing.exec(response.headers.get("server-timing") ?? "");
    expect(match?.[3]).toBeDefined();
    expect(Number(match?.[3])).toBeGreaterThan(0);
  });

  // Once a known gap (the answer passed back as it came had no Server-Timing); see answerWithLast
  // in src/upstream/request-run.ts.
  test("an upstream error passed back as it came carries Server-Timing too", async () => {
    const p = await start();
    fake.replyOnce(() => errorReply(400, "bad request"));
    const response = await chat(p);
    expect(response.status).toBe(400);
    await response.text();
    expect(response.headers.get("server-timing")).toMatch(timing);
  });
});
