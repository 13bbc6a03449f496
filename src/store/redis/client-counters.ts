/**
 * Client counters shared by every instance through Redis: atomic increments on keys naming the
 * window (redis-keys.ts), expiring after it. A counter names the window it counts, so a new window
 * starts at zero with no reset to run, and the client's creation time, so a client removed and
 * added again under the same name starts at zero too (as in the file, where counters follow name
 * and creation time). A request's reservation (clients/reservations.ts) is held in the same step
 * that admits it, and its end releases it and charges the real figure in one step too.
 *
 * Why the rpm check is an atomic reservation in Redis, and only for clients with a limit: "two
 * instances enforce one --rpm together" is exact only if the check and the count are one step
 * where all instances meet; counts shared after the fact (pub/sub, polling) let each instance
 * admit up to N in the same minute. The price is one Redis round-trip (sub-millisecond on a LAN,
 * bounded by the connection's timeout) before such a client's request is sent. A client without
 * limits has nothing to decide: it is counted in memory and its increment written without waiting.
 *
 * Redis down (breaker open, timeout): the decision is made from memory (fail open: the counts last
 * seen in Redis plus this instance's own since), the request is counted there, and the increment
 * waits in the connection's queue to be replayed when Redis is back (dropped instead when a call
 * timed out, since Redis may have applied it: a lost count, never a double one).
 */
import { countRequest, refusalFor, windowEnd, windowStart, type Held, type Refusal, type WindowKind } from "../../clients/usage-windows.ts";
import type { ClientDirectory } from "../../clients/client-directory.ts";
import type { ClientRecord } from "../../clients/client-schema.ts";
import type { SharedClientCounters } from "../../clients/shared-counters.ts";
import type { CallResult, RedisConnection } from "./connection.ts";
import type { RedisKeys } from "./redis-keys.ts";
import { evalWrite, luaScript, runScript } from "./scripts.ts";

// KEYS: minute, day, month windows. ARGV: rpm, rpd, tpm, usdPerDay, usdPerMonth ('' = none), the
// request's reservation (tokens, cost), then the three expiries. Same rules as usage-windows.ts
// refusalFor: a limit is hit when what was spent and what is held reach it, or when the
// reservation would take them past it. Admitted: the request is counted and its reservation held.
// Returns admitted (1/0) and the fifteen counts after it (windowFields of each window) as text:
// floats survive.
const RESERVE_REQUEST = luaScript(`
local function counts(key)
  local v = redis.call('HMGET', key, 'requests', 'tokens', 'cost', 'reservedTokens', 'reservedCost')
  return { tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0, tonumber(v[5]) or 0 }
end
local w = { counts(KEYS[1]), counts(KEYS[2]), counts(KEYS[3]) }
local wantTokens, wantCost = tonumber(ARGV[6]), tonumber(ARGV[7])
local function over(limit, value) return limit ~= '' and value >= tonumber(limit) end
local function wontFit(limit, used, want, eps)
  if limit == '' then return false end
  local l = tonumber(limit)
  return used + eps >= l or used + want > l + eps
end
local refused = over(ARGV[1], w[1][1]) or over(ARGV[2], w[2][1])
  or wontFit(ARGV[3], w[1][2] + w[1][4], wantTokens, 0)
  or wontFit(ARGV[4], w[2][3] + w[2][5], wantCost, 1e-9)
  or wontFit(ARGV[5], w[3][3] + w[3][5], wantCost, 1e-9)
if not refused then
  for i = 1, 3 do
    redis.call('HINCRBY', KEYS[i], 'requests', 1)
    if wantTokens > 0 then w[i][4] = redis.call('HINCRBY', KEYS[i], 'reservedTokens', ARGV[6]) end
    if wantCost > 0 then w[i][5] = tonumber(redis.call('HINCRBYFLOAT', KEYS[i], 'reservedCost', ARGV[7])) end
    redis.call('EXPIREAT', KEYS[i], ARGV[7 + i])
    w[i][1] = w[i][1] + 1
  end
end
local out = { refused and 0 or 1 }
for i = 1, 3 do for j = 1, 5 do table.insert(out, string.format('%.17g', w[i][j])) end end
return out
`);

// KEYS: minute, day, month windows. ARGV: requests, tokens, cost, reservedTokens, reservedCost
// (deltas, '0' for none), then the three expiries.
const ADD_TO_WINDOWS = luaScript(`
for i = 1, 3 do
  if ARGV[1] ~= '0' then redis.call('HINCRBY', KEYS[i], 'requests', ARGV[1]) end
  if ARGV[2] ~= '0' then redis.call('HINCRBY', KEYS[i], 'tokens', ARGV[2]) end
  if ARGV[3] ~= '0' then redis.call('HINCRBYFLOAT', KEYS[i], 'cost', ARGV[3]) end
  if ARGV[4] ~= '0' then redis.call('HINCRBY', KEYS[i], 'reservedTokens', ARGV[4]) end
  if ARGV[5] ~= '0' then redis.call('HINCRBYFLOAT', KEYS[i], 'reservedCost', ARGV[5]) end
  redis.call('EXPIREAT', KEYS[i], ARGV[5 + i])
end
return 1
`);

// A request's end, in one step. KEYS: the minute, day, month windows its reservation was held in,
// then those it is charged in (the same keys unless a window rolled over while it ran: then the
// old window's reservation is released and the new one charged). ARGV: the reservation (tokens,
// cost), the charge (tokens, cost), then the three expiries of the charged windows. A released
// reservation never leaves a count below zero (a count lost to a timeout must not go negative).
const SETTLE_REQUEST = luaScript(`
for i = 1, 3 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if ARGV[1] ~= '0' and redis.call('HINCRBY', KEYS[i], 'reservedTokens', '-' .. ARGV[1]) < 0 then
      redis.call('HSET', KEYS[i], 'reservedTokens', '0')
    end
    if ARGV[2] ~= '0' and tonumber(redis.call('HINCRBYFLOAT', KEYS[i], 'reservedCost', '-' .. ARGV[2])) < 1e-9 then
      redis.call('HSET', KEYS[i], 'reservedCost', '0')
    end
  end
  if ARGV[3] ~= '0' or ARGV[4] ~= '0' then
    if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[3 + i], 'tokens', ARGV[3]) end
    if ARGV[4] ~= '0' then redis.call('HINCRBYFLOAT', KEYS[3 + i], 'cost', ARGV[4]) end
    redis.call('EXPIREAT', KEYS[3 + i], ARGV[4 + i])
  end
end
return 1
`);

export interface RedisClientCountersOptions {
  connection: RedisConnection;
  keys: RedisKeys;
  directory: ClientDirectory;
  now?: () => number;
  /** How often the shared counts of every client are read into memory (status page, list). */
  refreshMs?: number;
}

/** Redis refused what memory, a moment later, would admit (another instance's reservation ended between): the wait is to the next minute. */
const sharedRefusal = (at: number): Refusal => ({ code: "client_rate_limited", until: windowStart("minute", at) + 60_000, reasons: ["the limits shared by every instance"] });

export function createRedisClientCounters({ connection, keys, directory, now = Date.now, refreshMs = 2_000 }: RedisClientCountersOptions): SharedClientCounters {
  const windowKeys = (record: ClientRecord, at: number) => windowKinds.map((kind) => keys.clientWindow(record.name, record.createdAt, kind, at));
  const expiries = (at: number) => windowKinds.map((kind) => String(windowExpiry(kind, at)));
  const add = (record: ClientRecord, requests: number, held: Held, at: number): void => {
    void connection.write(evalWrite(ADD_TO_WINDOWS, windowKeys(record, at), [String(requests), "0", "0", String(Math.round(held.tokens)), String(held.cost), ...expiries(at)]));
  };

  /**
   * Takes shared counts into memory. Spent counts only rise: the larger wins (this instance's own
   * may not have landed yet). What is held rises and falls: Redis's figure is the one in force.
   */
  const adoptCounts = (record: ClientRecord, kind: WindowKind, at: number, counts: WindowCounts): void => {
    const window = record.usage[kind];
    const start = windowStart(kind, at);
    if (window.start !== start) Object.assign(window, { start, requests: 0, tokens: 0, cost: 0, reservedTokens: 0, reservedCost: 0 });
    window.requests = Math.max(window.requests, counts.requests);
    window.tokens = Math.max(window.tokens, counts.tokens);
    window.cost = Math.max(window.cost, counts.cost);
    window.reservedTokens = counts.reservedTokens;
    window.reservedCost = counts.reservedCost;
  };

  const refresh = async (): Promise<void> => {
    if (connection.degraded) return;
    const at = now();
    await Promise.all(
      directory.records().map(async (record) => {
        const reads = await Promise.all(windowKeys(record, at).map((key) => connection.send("HMGET", [key, ...windowFields])));
        reads.forEach((result, index) => {
          const kind = windowKinds[index];
          if (result.ok && kind) adoptCounts(record, kind, at, countsOf(result.value));
        });
      }),
    );
  };
  let refreshing: Promise<void> | undefined;
  const timer = setInterval(() => {
    refreshing ??= refresh().finally(() => {
      refreshing = undefined;
    });
  }, refreshMs);
  timer.unref?.();

  return {
    async reserve(record, at, held): Promise<Refusal | undefined> {
      const limit = (value: number | undefined) => (value === undefined ? "" : String(value));
      const result = await runScript(connection, RESERVE_REQUEST, windowKeys(record, at), [
        limit(record.rpm),
        limit(record.rpd),
        limit(record.tpm),
        limit(record.usdPerDay),
        limit(record.usdPerMonth),
        String(Math.round(held.tokens)),
        String(held.cost),
        ...expiries(at),
      ]);
      if (result.ok && Array.isArray(result.value)) {
        const [admitted, ...counts] = result.value as unknown[];
        const width = windowFields.length;
        windowKinds.forEach((kind, index) => adoptCounts(record, kind, at, countsOf(counts.slice(index * width, index * width + width))));
        if (Number(admitted) === 1) return undefined;
        // Refused in Redis: memory now holds the same counts, so it words the same refusal.
        return refusalFor(record, record.usage, at, held) ?? sharedRefusal(at);
      }
      // Fail open: decide from memory, count there, and replay the increment later.
      const refusal = refusalFor(record, record.usage, at, held);
      if (refusal) return refusal;
      countRequest(record.usage, at, held);
      // Not sent at all (breaker open, no connection): queued for replay. Sent without an answer:
      // Redis may have counted it, so it is not sent again.
      if (!result.ok && result.failure === "open") add(record, 1, held, at);
      return undefined;
    },
    counted: (record, at) => add(record, 1, { tokens: 0, cost: 0 }, at),
    settled(record, held, heldAt, charged, at) {
      const args = [String(Math.round(held.tokens)), String(held.cost), String(Math.round(charged.tokens)), String(charged.cost), ...expiries(at)];
      void connection.write(evalWrite(SETTLE_REQUEST, [...windowKeys(record, heldAt), ...windowKeys(record, at)], args));
    },
    async stop() {
      clearInterval(timer);
      await refreshing;
    },
  };
}

const windowKinds: readonly WindowKind[] = ["minute", "day", "month"];

/** When a window's counter may go (seconds since the epoch, for EXPIREAT): a minute after it ends. */
const windowExpiry = (kind: WindowKind, at: number): number => Math.ceil(windowEnd(kind, at) / 1000) + 60;

/**
 * The fields of a window's hash, in the order `countsOf` reads them: what was spent, and what the
 * requests in flight hold (their reservations, clients/reservations.ts).
 */
const windowFields = ["requests", "tokens", "cost", "reservedTokens", "reservedCost"] as const;

interface WindowCounts {
  requests: number;
  tokens: number;
  cost: number;
  reservedTokens: number;
  reservedCost: number;
}

/** A window's counts from HMGET of `windowFields` (absent fields, and a shorter list, are 0). */
function countsOf(value: unknown): WindowCounts {
  const [requests, tokens, cost, reservedTokens, reservedCost] = Array.isArray(value) ? value : [];
  const number = (field: unknown) => {
    const parsed = Number(field ?? 0);
    return Number.isFinite(parsed) && parsed >= 0 ? parsed : 0;
  };
  return { requests: Math.floor(number(requests)), tokens: Math.floor(number(tokens)), cost: number(cost), reservedTokens: Math.floor(number(reservedTokens)), reservedCost: number(reservedCost) };
}

type StoredWindow = { start: string; requests: number; tokens: number; cost: number };

/**
 * The current windows of every client in a stored section, as the keys file writes them (so the
 * section parses as it would from the file). Entries without a readable creation time are left
 * out: the section's validation reports them.
 */
export async function readClientUsage(connection: RedisConnection, keys: RedisKeys, section: Record<string, unknown>, at: number): Promise<CallResult<Map<string, Record<WindowKind, StoredWindow>>>> {
  const reads: Array<Promise<[string, WindowKind, CallResult<unknown>]>> = [];
  for (const [name, entry] of Object.entries(section)) {
    const createdAt = Date.parse(String((entry as { createdAt?: unknown } | null)?.createdAt ?? ""));
    if (Number.isNaN(createdAt)) continue;
    for (const kind of windowKinds) {
      reads.push(connection.send("HMGET", [keys.clientWindow(name, createdAt, kind, at), "requests", "tokens", "cost"]).then((result) => [name, kind, result]));
    }
  }
  const usage = new Map<string, Record<WindowKind, StoredWindow>>();
  for (const [name, kind, result] of await Promise.all(reads)) {
    if (!result.ok) return result;
    const windows = usage.get(name) ?? ({} as Record<WindowKind, StoredWindow>);
    const { requests, tokens, cost } = countsOf(result.value);
    windows[kind] = { start: new Date(windowStart(kind, at)).toISOString(), requests, tokens, cost };
    usage.set(name, windows);
  }
  return { ok: true, value: usage };
}
