/**
 * Where the clients live in Redis, under REDIS_PREFIX, and how their counters are read:
 *
 *   <prefix>clients                                      hash     name → entry (client-store.ts)
 *   <prefix>clients:version                              counter  edits so far (client-store.ts)
 *   <prefix>clients:changes                              channel  a person's edit was stored
 *   <prefix>client:<name>:<createdAt>:<kind>:<start>     hash     requests, tokens (sums), cost (float
 *                                                                 sum) of one fixed UTC window (kind:
 *                                                                 minute, day, month; start in epoch ms);
 *                                                                 reservedTokens, reservedCost: what the
 *                                                                 requests in flight hold (their
 *                                                                 reservations, clients/reservations.ts);
 *                                                                 expires a minute after the window ends
 *
 * A counter names the window it counts, so a new window starts at zero with no reset to run, and
 * the client's creation time, so a client removed and added again under the same name starts at
 * zero too (as in the file store, where counters follow name and creation time).
 */
import { windowEnd, windowStart, type WindowKind } from "../../clients/usage-windows.ts";
import type { CallResult, RedisConnection } from "./connection.ts";

export interface ClientCounterKeys {
  readonly clients: string;
  readonly clientsVersion: string;
  readonly clientChanges: string;
  window(name: string, createdAt: number, kind: WindowKind, at: number): string;
}

export function clientCounterKeys(prefix: string): ClientCounterKeys {
  return {
    clients: `${prefix}clients`,
    clientsVersion: `${prefix}clients:version`,
    clientChanges: `${prefix}clients:changes`,
    window: (name, createdAt, kind, at) => `${prefix}client:${name}:${createdAt}:${kind}:${windowStart(kind, at)}`,
  };
}

export const windowKinds: readonly WindowKind[] = ["minute", "day", "month"];

/** When a window's counter may go (seconds since the epoch, for EXPIREAT): a minute after it ends. */
export const windowExpiry = (kind: WindowKind, at: number): number => Math.ceil(windowEnd(kind, at) / 1000) + 60;

export interface StoredWindow {
  start: string;
  requests: number;
  tokens: number;
  cost: number;
}

/** The fields of a window's hash, in the order `countsOf` reads them. */
export const windowFields = ["requests", "tokens", "cost", "reservedTokens", "reservedCost"] as const;

export interface WindowCounts {
  requests: number;
  tokens: number;
  cost: number;
  reservedTokens: number;
  reservedCost: number;
}

/** A window's counts from HMGET of `windowFields` (absent fields, and a shorter list, are 0). */
export function countsOf(value: unknown): WindowCounts {
  const [requests, tokens, cost, reservedTokens, reservedCost] = Array.isArray(value) ? value : [];
  const number = (field: unknown) => {
    const parsed = Number(field ?? 0);
    return Number.isFinite(parsed) && parsed >= 0 ? parsed : 0;
  };
  return { requests: Math.floor(number(requests)), tokens: Math.floor(number(tokens)), cost: number(cost), reservedTokens: Math.floor(number(reservedTokens)), reservedCost: number(reservedCost) };
}

/**
 * The current windows of every client in a stored section, as the keys file writes them (so the
 * section parses as it would from the file). Entries without a readable creation time are left
 * out: the section's validation reports them.
 */
export async function readClientUsage(
  connection: RedisConnection,
  keys: ClientCounterKeys,
  section: Record<string, unknown>,
  at: number,
): Promise<CallResult<Map<string, Record<WindowKind, StoredWindow>>>> {
  const reads: Array<Promise<[string, WindowKind, CallResult<unknown>]>> = [];
  for (const [name, entry] of Object.entries(section)) {
    const createdAt = Date.parse(String((entry as { createdAt?: unknown } | null)?.createdAt ?? ""));
    if (Number.isNaN(createdAt)) continue;
    for (const kind of windowKinds) {
      reads.push(connection.send("HMGET", [keys.window(name, createdAt, kind, at), "requests", "tokens", "cost"]).then((result) => [name, kind, result]));
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
