import type { Outcome, ResetSource } from "../domain/outcome.ts";
import { nextUtcMidnight } from "../domain/time-text.ts";
import { paymentOutcome } from "./payment-causes.ts";

/**
 * What an upstream answer means for the key that carried it, decided from the status, the
 * headers and (for errors only) the small error body. Everything about rate-limit resets is
 * parsed here and nowhere else (a spending cap's `resets_at` too). Facts: docs/openrouter.md ("Limits
 * belong to the account", "Errors", "402 and 403 by cause", "Availability").
 */

/** How long a model rests on an account after a privacy 404: settings change rarely, people can clear it. */
export const PRIVACY_REST_MS = 3_600_000;
/** How long a model rests on an account after its provider's own 429 without a reset. */
export const PROVIDER_REST_MS = 30_000;
/** How long a shared-capacity 429 without a reset asks the client to wait. */
export const SHARED_CAPACITY_WAIT_MS = 5_000;

type Verdict = "request-error" | "key-failure" | "upstream-error" | "rate-limited" | "payment";

/**
 * Status → verdict. Statuses not listed: other 4xx are the request's, other 5xx the upstream's.
 * The original design counted every failure against the key; here an outage (5xx) blames
 * nobody, so an OpenRouter incident cannot disable every key at once.
 */
const statusVerdicts = new Map<number, Verdict>([
  [400, "request-error" /* bad parameters, unknown model, context too long */],
  [401, "key-failure" /* invalid, disabled or expired key */],
  [402, "payment" /* by cause: in flight, this request, a spending cap, the account's credits */],
  [403, "request-error" /* moderation, guardrail or region refusal; a spending cap is money: below */],
  [404, "request-error" /* no such route or model */],
  [408, "upstream-error" /* Request Timeout */],
  [413, "request-error" /* Payload Too Large */],
  [422, "request-error" /* Unprocessable Entity */],
  [429, "rate-limited" /* Too Many Requests */],
]);

const MAX_RESET_AHEAD_MS = 48 * 3600 * 1000;

export interface ErrorBodyFacts {
  message?: string;
  /** `error.metadata.headers`, where OpenRouter repeats the rate-limit headers. */
  metadataHeaders?: Record<string, string>;
  /** `error.metadata.limit_source`, e.g. "openrouter_shared_capacity". */
  limitSource?: string;
  /** `error.metadata.reason`, e.g. "weight_exceeds_budget" on a 402. */
  reason?: string;
  /** `error.metadata.provider_name`: set when a provider (not OpenRouter) refused. */
  providerName?: string;
  /** The account behind the key (`user_id`), where the body names it. */
  userId?: string;
  /** `error.code`: a number or a string. */
  code?: number | string;
  /** `resets_at` (ISO time) of a spending cap's 402/403: when the budget resets. */
  resetsAt?: string;
  /** `error.availability`: why a model could not be served, in OpenRouter's words. */
  availability?: { code: string; retryAfter?: number };
}

/** Reads the few facts the policy needs from an upstream error body; tolerant of any shape. */
export function readErrorBody(text: string): ErrorBodyFacts {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return {};
  }
  return errorFactsOf(parsed);
}

/** The same facts from an error answer already parsed (read once, where it was parsed for another reason). */
export function errorFactsOf(parsed: unknown): ErrorBodyFacts {
  const error = field(parsed, "error");
  const message = field(error, "message");
  const metadata = field(error, "metadata");
  const headers = field(metadata, "headers");
  const metadataHeaders: Record<string, string> = {};
  if (headers && typeof headers === "object") {
    for (const [name, value] of Object.entries(headers)) {
      if (typeof value === "string" || typeof value === "number") metadataHeaders[name.toLowerCase()] = String(value);
    }
  }
  const code = field(error, "code");
  const availability = field(error, "availability");
  const availabilityCode = text(field(availability, "code"));
  const retryAfter = field(availability, "retry_after");
  return {
    message: text(message),
    metadataHeaders: Object.keys(metadataHeaders).length > 0 ? metadataHeaders : undefined,
    limitSource: text(field(metadata, "limit_source")),
    reason: text(field(metadata, "reason")),
    providerName: text(field(metadata, "provider_name")) || undefined,
    userId: text(field(parsed, "user_id") ?? field(metadata, "user_id")) || undefined,
    code: typeof code === "number" || typeof code === "string" ? code : undefined,
    resetsAt: text(field(metadata, "resets_at") ?? field(error, "resets_at")),
    availability: availabilityCode === undefined ? undefined : { code: availabilityCode, ...(typeof retryAfter === "number" ? { retryAfter } : {}) },
  };
}

const text = (value: unknown): string | undefined => (typeof value === "string" ? value : undefined);

function field(value: unknown, name: string): unknown {
  return value !== null && typeof value === "object" ? (value as Record<string, unknown>)[name] : undefined;
}

/**
 * An `X-RateLimit-Reset` value as an instant (epoch ms), or undefined when it cannot be trusted.
 * OpenRouter sends epoch milliseconds; a 10-digit value is epoch seconds (the original design
 * multiplied milliseconds by 1000 and rested keys for centuries). A small number is read as
 * seconds from now. A reset in the past or more than 48 h ahead falls back to the default.
 */
export function parseResetInstant(raw: string | null | undefined, now: number): number | undefined {
  if (raw === null || raw === undefined) return undefined;
  const value = Number(raw.trim());
  if (raw.trim() === "" || !Number.isFinite(value) || value <= 0) return undefined;
  const until = value >= 1e12 ? value : value >= 1e9 ? value * 1000 : now + value * 1000;
  return plausible(until, now);
}

/** `Retry-After`: seconds, or an HTTP date (RFC 9110 §10.2.3). */
export function parseRetryAfter(raw: string | null | undefined, now: number): number | undefined {
  if (raw === null || raw === undefined || raw.trim() === "") return undefined;
  const trimmed = raw.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return plausible(now + Number(trimmed) * 1000, now);
  const date = Date.parse(trimmed);
  return Number.isNaN(date) ? undefined : plausible(date, now);
}

/** How far ahead a spending cap's `resets_at` is believed: a monthly budget resets within a month. */
const MAX_BUDGET_RESET_AHEAD_MS = 32 * 86_400_000;

/** A spending cap's `resets_at` (an ISO time) as an instant; undefined when absent, past or implausibly far. */
export function parseResetsAt(raw: string | undefined, now: number): number | undefined {
  if (raw === undefined) return undefined;
  const until = Date.parse(raw);
  return Number.isNaN(until) || until <= now || until - now > MAX_BUDGET_RESET_AHEAD_MS ? undefined : until;
}

function plausible(until: number, now: number): number | undefined {
  return until > now && until - now <= MAX_RESET_AHEAD_MS ? Math.ceil(until) : undefined;
}

/** Where a rest ends: the headers' reset, the body's copy of it, Retry-After, else the default. */
export function resetFrom(
  headers: Headers,
  body: ErrorBodyFacts,
  now: number,
  defaultMs: number,
): { until: number; source: ResetSource } {
  const fromHeader = parseResetInstant(headers.get("x-ratelimit-reset"), now);
  if (fromHeader !== undefined) return { until: fromHeader, source: "header" };
  const fromBody = parseResetInstant(body.metadataHeaders?.["x-ratelimit-reset"], now);
  if (fromBody !== undefined) return { until: fromBody, source: "body" };
  const fromRetryAfter = parseRetryAfter(headers.get("retry-after"), now);
  if (fromRetryAfter !== undefined) return { until: fromRetryAfter, source: "retry-after" };
  return { until: now + defaultMs, source: "default" };
}

export interface ClassifyInput {
  status: number;
  headers: Headers;
  /** The error body's facts; only read for statuses ≥ 400. */
  body?: ErrorBodyFacts;
  now: number;
  defaultCooldownMs: number;
  /** The model the request asked for: limits on free models and on one model depend on it. */
  model?: string;
}

/** No error body (a success, or one not read): one object for every such call. */
const NO_FACTS: ErrorBodyFacts = Object.freeze({});

export function classify({ status, headers, body = NO_FACTS, now, defaultCooldownMs, model }: ClassifyInput): Outcome {
  if (status < 400) {
    // Proactive rest: a success that says nothing remains would be followed by a wasted 429.
    if (headers.get("x-ratelimit-remaining")?.trim() === "0") {
      return { kind: "ok", exhausted: resetFrom(headers, NO_FACTS, now, defaultCooldownMs) };
    }
    return { kind: "ok" };
  }
  // OpenRouter's own word on why a model could not be served outranks the status and any message text.
  const available = body.availability === undefined ? undefined : availabilityOutcome(body.availability, headers, body, now, model);
  if (available !== undefined) return available;
  const verdict = statusVerdicts.get(status) ?? (status >= 500 ? "upstream-error" : "request-error");
  const quoted = body.message ? `: ${body.message}` : "";
  switch (verdict) {
    case "rate-limited":
      return rateLimit(headers, body, now, defaultCooldownMs, model);
    case "payment":
      return paymentOutcome(status, body, announcedBy(headers, body, now), model) ?? { kind: "request-error" };
    case "key-failure":
      return { kind: "key-failure", reason: `upstream answered ${status}${quoted}` };
    case "upstream-error":
      return { kind: "upstream-error", reason: `upstream answered ${status}${quoted}` };
    case "request-error":
      // A spending cap may answer 403 as well as 402: money, never a fault of the request or the key.
      if (status === 403) return paymentOutcome(status, body, announcedBy(headers, body, now), model) ?? { kind: "request-error" };
      if (status === 404 && /no endpoints found matching your data policy/i.test(body.message ?? "")) return privacyRest(body.message, now, model);
      return { kind: "request-error" };
  }
}

const announcedBy = (headers: Headers, body: ErrorBodyFacts, now: number) => ({
  retryAfter: parseRetryAfter(headers.get("retry-after"), now),
  resetsAt: parseResetsAt(body.resetsAt, now),
});

const privacyRest = (message: string | undefined, now: number, model: string | undefined): Outcome => ({ kind: "privacy", model, until: now + PRIVACY_REST_MS, message: message || undefined });

/**
 * `error.availability.code` (docs/openrouter.md, "Availability"): each code once, what it means.
 * A code not listed says nothing the status and message do not: they decide.
 */
const availabilityVerdicts = new Map<string, "shared-capacity" | "privacy" | "request-error">([
  ["capacity_exhausted", "shared-capacity" /* the model's capacity, for everyone: another key does not help */],
  ["privacy_restricted", "privacy" /* this account's data policy excludes every provider: another account may serve */],
  ["no_endpoints", "request-error" /* the model has no provider now: the same on every account */],
  ["free_variant_ended", "request-error" /* the :free variant is gone */],
  ["model_deprecated", "request-error"],
  ["region_restricted", "request-error" /* where the request comes from, not which key */],
]);

function availabilityOutcome(availability: NonNullable<ErrorBodyFacts["availability"]>, headers: Headers, body: ErrorBodyFacts, now: number, model: string | undefined): Outcome | undefined {
  const message = body.message || undefined;
  switch (availabilityVerdicts.get(availability.code)) {
    case "shared-capacity": {
      // `retry_after` is in seconds; without it, the headers' reset as for any shared-capacity 429.
      const announced = availability.retryAfter === undefined ? undefined : parseRetryAfter(String(availability.retryAfter), now);
      const { until, source } = announced === undefined ? resetFrom(headers, body, now, SHARED_CAPACITY_WAIT_MS) : { until: announced, source: "body" as const };
      return { kind: "shared-capacity", until, source, message };
    }
    case "privacy":
      return privacyRest(message, now, model);
    case "request-error":
      return { kind: "request-error" };
    case undefined:
      return undefined;
  }
}

/**
 * Which 429 this is, in OpenRouter's terms (docs/openrouter.md, "Limits belong to the account"):
 * - "free-models-per-day": the account's daily free-model quota is used up until 00:00 UTC;
 * - "free-models-per-min": the account's per-minute free-model limit;
 * - shared capacity of a popular free model: nobody's key is to blame;
 * - a provider's own 429 ("Provider returned error"): that model rests on this account;
 * - anything else: the key rests (the core rule).
 */
function rateLimit(
  headers: Headers,
  body: ErrorBodyFacts,
  now: number,
  defaultCooldownMs: number,
  model: string | undefined,
): Outcome {
  const text = body.message ?? "";
  const message = body.message || undefined;
  const limitHeader = headers.get("x-ratelimit-limit") ?? body.metadataHeaders?.["x-ratelimit-limit"];
  if (body.limitSource === "openrouter_shared_capacity" || /shared capacity|high demand|limit_rpm\//i.test(text)) {
    const { until, source } = resetFrom(headers, body, now, SHARED_CAPACITY_WAIT_MS);
    return { kind: "shared-capacity", until, source, message };
  }
  if (/free-models-per-day/i.test(text)) {
    const dailyLimit = limitHeader !== undefined && /^\d+$/.test(limitHeader.trim()) ? Number(limitHeader) : undefined;
    return freeDayUsedUp(resetFrom(headers, body, now, nextUtcMidnight(now) - now), message, dailyLimit);
  }
  if (/free-models-per-min/i.test(text)) {
    const { until, source } = resetFrom(headers, body, now, 60_000 - (now % 60_000));
    return { kind: "rate-limited", scope: "account", modelClass: "free", cause: "free-per-min", until, source, message };
  }
  if (body.providerName !== undefined || /provider returned error/i.test(text)) {
    const { until, source } = resetFrom(headers, body, now, PROVIDER_REST_MS);
    return { kind: "rate-limited", scope: "model", modelClass: "all", cause: "provider", model, until, source, message };
  }
  const { until, source } = resetFrom(headers, body, now, defaultCooldownMs);
  return { kind: "rate-limited", scope: "key", modelClass: "all", until, source, message };
}

/**
 * The account's daily free-model quota is used up: its free class rests until the reset (00:00
 * UTC), and the limit, when known, is learned. What OpenRouter's free-models-per-day 429 means, and
 * what a refused free-model reservation means (store/redis/shared-pool.ts): one outcome for both.
 */
export function freeDayUsedUp(reset: { until: number; source: ResetSource }, message: string | undefined, dailyLimit: number | undefined): Extract<Outcome, { kind: "rate-limited" }> {
  return { kind: "rate-limited", scope: "account", modelClass: "free", cause: "free-per-day", until: reset.until, source: reset.source, message, dailyLimit };
}

/**
 * The paths that spend a key on a model. A 401/403 anywhere else (a management or account
 * endpoint a normal key may not use) is passed back and never counts against the key, so no
 * client can disable the pool by asking for what its keys are not allowed to see.
 */
const inferencePaths = new Set(["/chat/completions", "/completions", "/embeddings", "/responses", "/messages"]);

/** An error answer to a request for `path` (below the API root): `classify`, and the rule above. */
export function classifyError(path: string, input: Omit<ClassifyInput, "model"> & { model: string | undefined }): Outcome {
  if ((input.status === 401 || input.status === 403) && !inferencePaths.has(path)) return { kind: "request-error" };
  return classify(input);
}
