/**
 * A client's counters and the limits checked against them.
 *
 * Windows are fixed and aligned to UTC: the minute (`--rpm`, `--tpm`) is the clock minute
 * (12:34:00.000–12:34:59.999), the day is the UTC day, the month the UTC calendar month. Fixed
 * windows make `Retry-After` exact (the next boundary), survive a restart as three small records in
 * the keys file, and can be shared as plain atomic increments. The cost: up to twice `--rpm`
 * requests can pass within one minute straddling a boundary (N at 12:34:59, N more at 12:35:00).
 *
 * Requests are counted when admitted, before anything goes upstream; tokens and cost when the
 * answer has ended (its `usage`), in the window of that moment. A request that starts under a
 * limit may end over it: the next one is refused.
 */

export type WindowKind = "minute" | "day" | "month";

export interface WindowCount {
  /** Epoch milliseconds of the window's start. */
  start: number;
  requests: number;
  tokens: number;
  /** USD, from the answers' `usage.cost`. */
  cost: number;
}

export interface ClientUsage {
  minute: WindowCount;
  day: WindowCount;
  month: WindowCount;
}

export interface ClientLimits {
  rpm?: number;
  rpd?: number;
  tpm?: number;
  usdPerDay?: number;
  usdPerMonth?: number;
}

export interface Refusal {
  code: "client_rate_limited" | "client_budget_exceeded";
  /** When the client may send again (epoch milliseconds): the latest boundary among the limits hit. */
  until: number;
  /** What was hit, in words, e.g. "3 requests per minute". */
  reasons: string[];
}

const MINUTE = 60_000;
const DAY = 86_400_000;

export function windowStart(kind: WindowKind, at: number): number {
  if (kind === "minute") return Math.floor(at / MINUTE) * MINUTE;
  if (kind === "day") return Math.floor(at / DAY) * DAY;
  const date = new Date(at);
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1);
}

export function windowEnd(kind: WindowKind, at: number): number {
  if (kind === "minute") return windowStart("minute", at) + MINUTE;
  if (kind === "day") return windowStart("day", at) + DAY;
  const date = new Date(at);
  return Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1);
}

export function emptyUsage(at: number): ClientUsage {
  return {
    minute: { start: windowStart("minute", at), requests: 0, tokens: 0, cost: 0 },
    day: { start: windowStart("day", at), requests: 0, tokens: 0, cost: 0 },
    month: { start: windowStart("month", at), requests: 0, tokens: 0, cost: 0 },
  };
}

/** The window in force at `at`, emptied first if an older one was held. */
export function currentWindow(usage: ClientUsage, kind: WindowKind, at: number): WindowCount {
  const window = usage[kind];
  const start = windowStart(kind, at);
  if (window.start !== start) {
    window.start = start;
    window.requests = 0;
    window.tokens = 0;
    window.cost = 0;
  }
  return window;
}

/** The limits hit at `at`, if any. Budgets outrank rate limits: they decide the code and the wait. */
export function refusalFor(limits: ClientLimits, usage: ClientUsage, at: number): Refusal | undefined {
  const minute = currentWindow(usage, "minute", at);
  const day = currentWindow(usage, "day", at);
  const month = currentWindow(usage, "month", at);
  const budget: Array<[number, string]> = [];
  const rate: Array<[number, string]> = [];
  if (limits.usdPerMonth !== undefined && month.cost >= limits.usdPerMonth) budget.push([windowEnd("month", at), `$${limits.usdPerMonth} per month`]);
  if (limits.usdPerDay !== undefined && day.cost >= limits.usdPerDay) budget.push([windowEnd("day", at), `$${limits.usdPerDay} per day`]);
  if (limits.rpd !== undefined && day.requests >= limits.rpd) rate.push([windowEnd("day", at), `${limits.rpd} requests per day`]);
  if (limits.rpm !== undefined && minute.requests >= limits.rpm) rate.push([windowEnd("minute", at), `${limits.rpm} requests per minute`]);
  if (limits.tpm !== undefined && minute.tokens >= limits.tpm) rate.push([windowEnd("minute", at), `${limits.tpm} tokens per minute`]);
  const hits = budget.length > 0 ? budget : rate;
  if (hits.length === 0) return undefined;
  // Every limit hit must have reset before a retry can pass: the latest boundary is the truthful wait.
  const until = Math.max(...[...budget, ...rate].map(([end]) => end));
  return { code: budget.length > 0 ? "client_budget_exceeded" : "client_rate_limited", until, reasons: hits.map(([, what]) => what) };
}

/** Counts an admitted request in every window. */
export function countRequest(usage: ClientUsage, at: number): void {
  currentWindow(usage, "minute", at).requests++;
  currentWindow(usage, "day", at).requests++;
  currentWindow(usage, "month", at).requests++;
}

/** Adds an answer's tokens and cost to every window. */
export function chargeUsage(usage: ClientUsage, tokens: number, cost: number, at: number): void {
  for (const kind of ["minute", "day", "month"] as const) {
    const window = currentWindow(usage, kind, at);
    window.tokens += tokens;
    window.cost += cost;
  }
}
