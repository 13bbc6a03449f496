import { describe, expect, test } from "bun:test";
import { classify, parseResetInstant, parseRetryAfter, readErrorBody, resetFrom } from "../src/upstream/policy.ts";
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

  test("a 403 saying the key limit is exceeded blames the key, not the request", () => {
    expect(outcomeOf(403, "Key limit exceeded")).toBe("key-failure");
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
