/**
 * A client's counters and the limits checked against them.
 *
 * Windows are fixed and aligned to UTC: the minute (`--rpm`, `--tpm`) is the clock minute
 * (12:34:00.000–12:34:59.999), the day is the UTC day, the month the UTC calendar month. Fixed
 * windows make `Retry-After` exact (the next boundary), survive a restart as three small records in
 * the keys file, and can be shared as plain atomic increments. The cost: up to twice `--rpm`
 * requests can pass within one minute straddling a boundary (N at 12:34:59, N more at 12:35:00).
 *
 * Requests are counted when admitted, before anything goes upstream. Tokens and cost are held
 * back then too, as a reservation (clients/reservations.ts: the request's worst case), and when the
 * answer has ended the reservation is released and its `usage` charged, in the window of that
 * moment. A request is admitted only if its reservation fits in what the limit leaves beside what
 * was spent and what requests in flight hold: concurrent requests cannot all start under a budget
 * that only one of them fits in.
 */

export type WindowKind = "minute" | "day" | "month";

export interface WindowCount {
  /** Epoch milliseconds of the window's start. */
  start: number;
  requests: number;
  tokens: number;
  /** USD, from the answers' `usage.cost`. */
  cost: number;
  /** Held by requests still in flight (their reservations); never saved, never shown as spent. */
  reservedTokens: number;
  reservedCost: number;
}

/** What one request holds of each window while it runs. */
export interface Held {
  tokens: number;
  cost: number;
}

export const NOTHING_HELD: Held = { tokens: 0, cost: 0 };

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
    minute: emptyWindow(windowStart("minute", at)),
    day: emptyWindow(windowStart("day", at)),
    month: emptyWindow(windowStart("month", at)),
  };
}

export const emptyWindow = (start: number): WindowCount => ({ start, requests: 0, tokens: 0, cost: 0, reservedTokens: 0, reservedCost: 0 });

/** The window in force at `at`, emptied first if an older one was held. */
export function currentWindow(usage: ClientUsage, kind: WindowKind, at: number): WindowCount {
  const window = usage[kind];
  const start = windowStart(kind, at);
  if (window.start !== start) {
    window.start = start;
    window.requests = 0;
    window.tokens = 0;
    window.cost = 0;
    window.reservedTokens = 0;
    window.reservedCost = 0;
  }
  return window;
}

/** Float sums of USD (0.1 + 0.2) must not refuse a reservation that fits exactly. */
const EPSILON = 1e-9;

/**
 * The limits `wanted` (a request's reservation) does not fit in at `at`, if any: a limit is hit when
 * what was spent and what is held reach it, or when `wanted` would take them past it. Budgets
 * outrank rate limits: they decide the code and the wait.
 */
export function refusalFor(limits: ClientLimits, usage: ClientUsage, at: number, wanted: Held = NOTHING_HELD): Refusal | undefined {
  const minute = currentWindow(usage, "minute", at);
  const day = currentWindow(usage, "day", at);
  const month = currentWindow(usage, "month", at);
  const budget: Array<[number, string]> = [];
  const rate: Array<[number, string]> = [];
  const usd = (limit: number | undefined, window: WindowCount, kind: WindowKind, per: string) => {
    if (limit === undefined) return;
    const used = window.cost + window.reservedCost;
    if (used + EPSILON >= limit) budget.push([windowEnd(kind, at), `$${limit} per ${per}`]);
    else if (used + wanted.cost > limit + EPSILON) budget.push([windowEnd(kind, at), `$${limit} per ${per} (${dollars(limit - used)} left; this request holds up to ${dollars(wanted.cost)} until its usage is known${wanted.cost > limit ? ": more than the whole budget, so a smaller max_tokens is needed" : ""})`]);
  };
  usd(limits.usdPerMonth, month, "month", "month");
  usd(limits.usdPerDay, day, "day", "day");
  if (limits.rpd !== undefined && day.requests >= limits.rpd) rate.push([windowEnd("day", at), `${limits.rpd} requests per day`]);
  if (limits.rpm !== undefined && minute.requests >= limits.rpm) rate.push([windowEnd("minute", at), `${limits.rpm} requests per minute`]);
  if (limits.tpm !== undefined) {
    const used = minute.tokens + minute.reservedTokens;
    if (used >= limits.tpm) rate.push([windowEnd("minute", at), `${limits.tpm} tokens per minute`]);
    else if (used + wanted.tokens > limits.tpm) rate.push([windowEnd("minute", at), `${limits.tpm} tokens per minute (${limits.tpm - used} left; this request holds up to ${wanted.tokens}: its prompt and its max_tokens${wanted.tokens > limits.tpm ? ", more than the whole limit, so a smaller max_tokens is needed" : ""})`]);
  }
  const hits = budget.length > 0 ? budget : rate;
  if (hits.length === 0) return undefined;
  // Every limit hit must have reset before a retry can pass: the latest boundary is the truthful wait.
  const until = Math.max(...[...budget, ...rate].map(([end]) => end));
  return { code: budget.length > 0 ? "client_budget_exceeded" : "client_rate_limited", until, reasons: hits.map(([, what]) => what) };
}

/** $12.50, $0.0061: cents above a dollar, two significant digits below. */
const dollars = (usd: number) => `$${usd >= 1 ? usd.toFixed(2) : usd.toPrecision(2)}`;

const kinds = ["minute", "day", "month"] as const;

/** Counts an admitted request in every window, with what it holds until it ends. */
export function countRequest(usage: ClientUsage, at: number, held: Held = NOTHING_HELD): void {
  for (const kind of kinds) {
    const window = currentWindow(usage, kind, at);
    window.requests++;
    window.reservedTokens += held.tokens;
    window.reservedCost += held.cost;
  }
}

/**
 * A request admitted at `heldAt` has ended: what it held is released from the windows it was
 * taken from (a window that has rolled over since took it away already), and the answer's tokens
 * and cost are added to the windows of `at`.
 */
export function settleUsage(usage: ClientUsage, held: Held, heldAt: number, tokens: number, cost: number, at: number): void {
  for (const kind of kinds) {
    const window = usage[kind];
    if (window.start === windowStart(kind, heldAt)) {
      window.reservedTokens = Math.max(0, window.reservedTokens - held.tokens);
      window.reservedCost = window.reservedCost - held.cost > EPSILON ? window.reservedCost - held.cost : 0;
    }
    const charged = currentWindow(usage, kind, at);
    charged.tokens += tokens;
    charged.cost += cost;
  }
}
