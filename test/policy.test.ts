import { describe, expect, test } from "bun:test";
import { classify, parseResetInstant, parseResetsAt, parseRetryAfter, readErrorBody, resetFrom } from "../src/upstream/policy.ts";
import type { Outcome } from "../src/domain/outcome.ts";

const now = Date.parse("2026-11-25T12:00:00.000Z");
const minute = 60_000;

describe("reset parsing", () => {
  test.each([
    ["a 13-digit reset is epoch milliseconds", String(now + minute), now + minute],
    ["a 10-digit reset is epoch seconds", String((now + minute) / 1000), now + minute],
    ["a small number is seconds from now", "30", now + 30_000],
    ["a reset in the past falls back to the default", String(now - minute), undefined],
    ["a reset more than 48 h ahead falls back to the default", String(now + 49 * 3600_000), undefined],
    ["milliseconds multiplied by 1000 (the original design's bug) fall back to the default", String((now + minute) * 1000), undefined],
    ["garbage falls back to the default", "soon", undefined],
    ["an empty value falls back to the default", "", undefined],
  ])("%s", (_rule, raw, expected) => {
    expect(parseResetInstant(raw, now)).toBe(expected);
  });

  test.each([
    ["Retry-After in seconds", "120", now + 120_000],
    ["Retry-After as an HTTP date", new Date(now + 90_000).toUTCString(), now + 90_000],
    ["Retry-After in the past falls back to the default", new Date(now - 90_000).toUTCString(), undefined],
    ["Retry-After that is not a number or date falls back to the default", "later", undefined],
  ])("%s", (_rule, raw, expected) => {
    expect(parseRetryAfter(raw, now)).toBe(expected);
  });

  test("the header reset wins over the body's copy, which wins over Retry-After", () => {
    const headers = new Headers({ "x-ratelimit-reset": String(now + minute), "retry-after": "5" });
    const body = { metadataHeaders: { "x-ratelimit-reset": String(now + 2 * minute) } };
    expect(resetFrom(headers, body, now, 1000)).toEqual({ until: now + minute, source: "header" });
    expect(resetFrom(new Headers({ "retry-after": "5" }), body, now, 1000)).toEqual({ until: now + 2 * minute, source: "body" });
    expect(resetFrom(new Headers({ "retry-after": "5" }), {}, now, 1000)).toEqual({ until: now + 5000, source: "retry-after" });
    expect(resetFrom(new Headers(), {}, now, 1000)).toEqual({ until: now + 1000, source: "default" });
  });

  test("the error body's metadata headers are read whatever their case", () => {
    const facts = readErrorBody(
      JSON.stringify({ error: { code: 429, message: "Rate limit exceeded: free-models-per-day", metadata: { headers: { "X-RateLimit-Reset": String(now + minute) } } } }),
    );
    expect(facts).toEqual({ message: "Rate limit exceeded: free-models-per-day", metadataHeaders: { "x-ratelimit-reset": String(now + minute) }, code: 429 });
    expect(readErrorBody("<html>Bad gateway</html>")).toEqual({});
  });
});

describe("what an upstream status means", () => {
  const outcomeOf = (status: number, message?: string, headers: Record<string, string> = {}) =>
    classify({ status, headers: new Headers(headers), body: message ? { message } : {}, now, defaultCooldownMs: minute }).kind;

  test.each<[number, string]>([
    [200, "ok"],
    [400, "request-error"],
    [401, "key-failure"],
    [402, "payment"],
    [403, "request-error"],
    [404, "request-error"],
    [408, "upstream-error"],
    [413, "request-error"],
    [422, "request-error"],
    [429, "rate-limited"],
    [500, "upstream-error"],
    [502, "upstream-error"],
    [503, "upstream-error"],
    [524, "upstream-error"],
  ])("status %d is %s", (status, kind) => {
    expect<string>(outcomeOf(status)).toBe(kind);
  });

  test("a 403 saying a key limit is exceeded is that key's spending cap, never a failure of the key; a moderation 403 is the request's own", () => {
    expect(outcomeOf(403, "Key limit exceeded")).toBe("payment");
    expect(outcomeOf(403, "Your input was flagged for moderation")).toBe("request-error");
  });

  test("a 429 without reset information cools down for the default", () => {
    expect(classify({ status: 429, headers: new Headers(), now, defaultCooldownMs: minute })).toEqual({ kind: "rate-limited", scope: "key", modelClass: "all", until: now + minute, source: "default" });
  });

  test("a success whose headers say nothing remains cools down until its reset", () => {
    const headers = new Headers({ "x-ratelimit-remaining": "0", "x-ratelimit-reset": String(now + 5 * minute) });
    expect(classify({ status: 200, headers, now, defaultCooldownMs: minute })).toEqual({
      kind: "ok",
      exhausted: { until: now + 5 * minute, source: "header" },
    });
    expect(classify({ status: 200, headers: new Headers({ "x-ratelimit-remaining": "3" }), now, defaultCooldownMs: minute })).toEqual({ kind: "ok" });
  });
});

describe("402 by cause, never by the status alone", () => {
  const payment = (metadata: Record<string, string> | undefined, message: string, model: string, headers: Record<string, string> = {}) =>
    classify({
      status: 402,
      headers: new Headers(headers),
      body: readErrorBody(JSON.stringify({ error: { message, code: 402, ...(metadata ? { metadata } : {}) } })),
      now,
      defaultCooldownMs: minute,
      model,
    });
  const PAID = "openai/gpt-4o-mini";
  const FREE = "meta-llama/llama-3.3-70b-instruct:free";
  test.each([
    ["limit_source openrouter_in_flight_budget is in flight", { limit_source: "openrouter_in_flight_budget" }, "x", PAID, {}, "in-flight"],
    ["reason in_flight_budget_exhausted is in flight", { reason: "in_flight_budget_exhausted" }, "x", PAID, {}, "in-flight"],
    ["any 402 with Retry-After is in flight", { limit_source: "openrouter_credits" }, "Insufficient credits", PAID, { "retry-after": "3" }, "in-flight"],
    ["reason weight_exceeds_budget is the request's own", { reason: "weight_exceeds_budget", limit_source: "openrouter_credits" }, "x", PAID, {}, "request-too-big"],
    ["a message saying the request would exceed the credits is the request's own", undefined, "This request would exceed your available credits", PAID, {}, "request-too-big"],
    ["limit_source openrouter_key_limit is the key's cap", { limit_source: "openrouter_key_limit" }, "Key limit exceeded", PAID, {}, "key-limit"],
    ["limit_source openrouter_credits on a paid model is the account's credits", { limit_source: "openrouter_credits" }, "Insufficient credits", PAID, {}, "credits"],
    ["an unlabelled 402 on a paid model is the account's credits", undefined, "Payment required", PAID, {}, "credits"],
    ["a 402 on a free model is a negative balance", { limit_source: "openrouter_credits" }, "Insufficient credits", FREE, {}, "negative-balance"],
  ])("%s", (_rule, metadata, message, model, headers, cause) => {
    expect(payment(metadata, message, model, headers)).toMatchObject({ kind: "payment", cause });
  });

  test("an in-flight 402 carries the announced wait, and no other 402 carries one", () => {
    expect(payment({ limit_source: "openrouter_in_flight_budget" }, "x", PAID, { "retry-after": "2" })).toMatchObject({ until: now + 2000, source: "retry-after" });
    const untilOf = (outcome: Outcome) => (outcome.kind === "payment" ? outcome.until : "not a payment");
    expect(untilOf(payment({ limit_source: "openrouter_in_flight_budget" }, "x", PAID))).toBeUndefined();
    expect(untilOf(payment({ limit_source: "openrouter_credits" }, "x", PAID))).toBeUndefined();
  });

  test("a privacy 404 rests the model, any other 404 is the request's own", () => {
    const notFound = (message: string) =>
      classify({ status: 404, headers: new Headers(), body: readErrorBody(JSON.stringify({ error: { message, code: 404 } })), now, defaultCooldownMs: minute, model: "x/y" });
    expect(notFound("No endpoints found matching your data policy (Free model publication)")).toMatchObject({ kind: "privacy", model: "x/y" });
    expect(notFound("Model not found")).toEqual({ kind: "request-error" });
  });
});

/**
 * The cause table (src/upstream/payment-causes.ts and the availability table in policy.ts), one
 * row at a time, with the bodies OpenRouter sends (shared/openrouter-api.md, "Newer facts").
 */
describe("402 and 403 by cause, and availability codes before message text", () => {
  const PAID = "openai/gpt-4o-mini";
  const FREE = "meta-llama/llama-3.3-70b-instruct:free";
  const resetsAt = "2026-11-26T00:00:00.000Z";
  const judge = (status: number, body: unknown, headers: Record<string, string> = {}, model = PAID) =>
    classify({ status, headers: new Headers(headers), body: readErrorBody(JSON.stringify(body)), now, defaultCooldownMs: minute, model });
  const tooBig = {
    error: {
      code: 402,
      message: "This request requires more credits, or fewer max_tokens. You requested up to 100000000 tokens, but can only afford 4230. To increase, visit https://openrouter.ai/settings/credits and add more credits",
    },
  };
  const budget = (status: number, limitSource: string, resets: string | null = resetsAt) => ({
    error: { code: status, message: "Budget limit exceeded", metadata: { limit_source: limitSource, scope: "key", limit_usd: 5, spend_usd: 5.02, ...(resets === null ? {} : { resets_at: resets }) } },
  });
  const unavailable = (status: number, code: string, extra: Record<string, unknown> = {}) => ({
    error: { code: status, message: "No endpoints found matching your data policy (Free model publication)", availability: { code, fallback_models: ["openai/gpt-4o-mini"], ...extra }, error_type: "provider_overloaded" },
  });

  test("a 402 with no reason or limit_source that says the request requires more credits, or fewer max_tokens, is the request's own: nothing rests", () => {
    expect(judge(402, tooBig)).toEqual({ kind: "payment", cause: "request-too-big", status: 402, message: tooBig.error.message });
  });

  test("reason is read before limit_source: weight_exceeds_budget with limit_source openrouter_credits is the request's own, even with a Retry-After", () => {
    const body = { error: { code: 402, message: "x", metadata: { reason: "weight_exceeds_budget", limit_source: "openrouter_credits" } } };
    expect(judge(402, body, { "retry-after": "3" })).toMatchObject({ kind: "payment", cause: "request-too-big" });
  });

  test("the oversized-request message labelled only openrouter_credits is still the request's own", () => {
    expect(judge(402, { error: { ...tooBig.error, metadata: { limit_source: "openrouter_credits" } } })).toMatchObject({ cause: "request-too-big" });
  });

  test("the unlabelled in-flight message is in flight, not the request's own, though it says it would exceed", () => {
    const message = "This request would exceed your available credits given your current in-flight requests. Retry after in-flight requests settle, or add credits.";
    expect(judge(402, { error: { code: 402, message } })).toMatchObject({ kind: "payment", cause: "in-flight" });
  });

  test.each([
    [402, "openrouter_key_limit", "key-limit"],
    [403, "openrouter_key_limit", "key-limit"],
    [402, "openrouter_workspace_budget", "workspace-budget"],
    [403, "openrouter_workspace_budget", "workspace-budget"],
    [402, "openrouter_guardrail_budget", "guardrail-budget"],
    [403, "openrouter_guardrail_budget", "guardrail-budget"],
  ] as const)("a %d with limit_source %s is a spending cap (%s) until its resets_at, never a failure of the key", (status, limitSource, cause) => {
    expect(judge(status, budget(status, limitSource))).toEqual({ kind: "payment", cause, until: Date.parse(resetsAt), source: "resets_at", status, message: "Budget limit exceeded" });
  });

  test("a spending cap without resets_at (or with one in the past) carries no instant: the pool picks the key's limit_reset, else an hour", () => {
    expect(judge(403, budget(403, "openrouter_key_limit", null))).toEqual({ kind: "payment", cause: "key-limit", status: 403, message: "Budget limit exceeded" });
    expect(judge(403, budget(403, "openrouter_key_limit", "2026-11-24T00:00:00.000Z"))).not.toHaveProperty("until");
  });

  test("a 403 \"Budget limit exceeded\" without a limit_source is still the key's cap; any other 403 is the request's own", () => {
    expect(judge(403, { error: { code: 403, message: "Budget limit exceeded" } })).toMatchObject({ kind: "payment", cause: "key-limit" });
    expect(judge(403, { error: { code: 403, message: "Your input was flagged", metadata: { reasons: ["harassment"], flagged_input: "…" } } })).toEqual({ kind: "request-error" });
  });

  test("availability capacity_exhausted is the shared-capacity wait, until its retry_after", () => {
    expect(judge(429, unavailable(429, "capacity_exhausted", { retry_after: 30 }), {}, FREE)).toMatchObject({ kind: "shared-capacity", until: now + 30_000, source: "body" });
    expect(judge(429, unavailable(429, "capacity_exhausted"), {}, FREE)).toMatchObject({ kind: "shared-capacity", source: "default" });
  });

  test("availability privacy_restricted is the privacy rule (that model on that account), whatever the message says", () => {
    const body = { error: { code: 404, message: "Not available", availability: { code: "privacy_restricted", excluded_by: "data_collection" } } };
    expect(judge(404, body, {}, "x/y")).toMatchObject({ kind: "privacy", model: "x/y" });
  });

  test.each([
    [404, "no_endpoints"],
    [503, "no_endpoints"],
    [410, "free_variant_ended"],
    [404, "model_deprecated"],
    [403, "region_restricted"],
  ] as const)("a %d with availability %s is the request's own: passed back, nothing rests, though the message names a data policy", (status, code) => {
    expect(judge(status, unavailable(status, code))).toEqual({ kind: "request-error" });
  });

  test("an availability code the proxy does not know leaves the decision to the status and the message", () => {
    expect(judge(404, unavailable(404, "something_new"), {}, "x/y")).toMatchObject({ kind: "privacy" });
  });

  test("resets_at is believed up to a month ahead, not beyond", () => {
    expect(parseResetsAt(resetsAt, now)).toBe(Date.parse(resetsAt));
    expect(parseResetsAt(new Date(now + 31 * 86_400_000).toISOString(), now)).toBe(now + 31 * 86_400_000);
    expect(parseResetsAt(new Date(now + 40 * 86_400_000).toISOString(), now)).toBeUndefined();
    expect(parseResetsAt("soon", now)).toBeUndefined();
  });
});
