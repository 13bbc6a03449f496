/**
 * What an upstream answer means for the key that carried it, decided from the status, the
 * headers and (for errors only) the small error body. Everything about rate-limit resets is
 * parsed here and nowhere else. Facts: ../shared/openrouter-api.md ("Rate limits", "Errors").
 */

export type ResetSource = "header" | "body" | "retry-after" | "default";

export type Outcome =
  /** Served. `exhausted` is set when the headers say nothing remains until a reset. */
  | { kind: "ok"; exhausted?: { until: number; source: ResetSource } }
  /** 429: the key rests until `until`, then another key is tried. */
  | { kind: "rate-limited"; until: number; source: ResetSource; message?: string }
  /** The key itself is bad (invalid, out of credits): a consecutive failure is counted. */
  | { kind: "key-failure"; reason: string }
  /** The request's own fault: passed back as it came, the key is not marked. */
  | { kind: "request-error" }
  /** OpenRouter or a provider failed (5xx, 408, connection): retried, the key is not blamed. */
  | { kind: "upstream-error"; reason: string };

type Verdict = "request-error" | "key-failure" | "upstream-error" | "rate-limited";

/**
 * Status → verdict. Statuses not listed: other 4xx are the request's, other 5xx the upstream's.
 * The original design counted every failure against the key; here an outage (5xx) blames
 * nobody, so an OpenRouter incident cannot disable every key at once.
 */
const statusVerdicts = new Map<number, Verdict>([
  [400, "request-error" /* bad parameters, unknown model, context too long */],
  [401, "key-failure" /* invalid, disabled or expired key */],
  [402, "key-failure" /* not enough credits on the key or account */],
  [403, "request-error" /* moderation or guardrail refusal; "Key limit exceeded" is handled below */],
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
}

/** Reads the few facts the policy needs from an upstream error body; tolerant of any shape. */
export function readErrorBody(text: string): ErrorBodyFacts {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return {};
  }
  const error = field(parsed, "error");
  const message = field(error, "message");
  const headers = field(field(error, "metadata"), "headers");
  const metadataHeaders: Record<string, string> = {};
  if (headers && typeof headers === "object") {
    for (const [name, value] of Object.entries(headers)) {
      if (typeof value === "string" || typeof value === "number") metadataHeaders[name.toLowerCase()] = String(value);
    }
  }
  return {
    ...(typeof message === "string" ? { message } : {}),
    ...(Object.keys(metadataHeaders).length > 0 ? { metadataHeaders } : {}),
  };
}

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
}

export function classify({ status, headers, body = {}, now, defaultCooldownMs }: ClassifyInput): Outcome {
  if (status < 400) {
    // Proactive rest: a success that says nothing remains would be followed by a wasted 429.
    if (headers.get("x-ratelimit-remaining")?.trim() === "0") {
      return { kind: "ok", exhausted: resetFrom(headers, {}, now, defaultCooldownMs) };
    }
    return { kind: "ok" };
  }
  const verdict = statusVerdicts.get(status) ?? (status >= 500 ? "upstream-error" : "request-error");
  const quoted = body.message ? `: ${body.message}` : "";
  switch (verdict) {
    case "rate-limited":
      return {
        kind: "rate-limited",
        ...resetFrom(headers, body, now, defaultCooldownMs),
        ...(body.message ? { message: body.message } : {}),
      };
    case "key-failure":
      return { kind: "key-failure", reason: `upstream answered ${status}${quoted}` };
    case "upstream-error":
      return { kind: "upstream-error", reason: `upstream answered ${status}${quoted}` };
    case "request-error":
      // OpenRouter has been seen answering 403 "Key limit exceeded": that one exhausts the key.
      if (status === 403 && /key limit/i.test(body.message ?? "")) {
        return { kind: "key-failure", reason: `upstream answered 403${quoted}` };
      }
      return { kind: "request-error" };
  }
}
