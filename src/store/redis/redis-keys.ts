/**
 * Where the shared state lives in Redis, under `REDIS_PREFIX` (default `orp:`) so several pools
 * can share one server. One structure per merge rule (docs/state-model.md):
 *
 *   <prefix>keys                  hash         key id → the key list entry (JSON, keys/state-change.ts
 *                                              KeyListEntry; the secret sealed with KEYS_ENCRYPTION_KEY)
 *   <prefix>keys:version          counter      the last edit version handed out
 *   <prefix>key:cooldown          sorted set   key id → cooldown until (ms), only ever raised (ZADD GT)
 *   <prefix>key:cooldown-cause    hash         key id → the winning cooldown's cause (JSON)
 *   <prefix>key:disabled          sorted set   key id → disabled since (ms)
 *   <prefix>key:disabled-cause    hash         key id → why
 *   <prefix>key:streak            hash         key id → consecutive failures
 *   <prefix>key:switch            hash         key id → version of the last person's enable/disable/add
 *   <prefix>account:rest          sorted set   <account>|class:<all|free|paid> or <account>|model:<id> → rest until (ms)
 *   <prefix>account:rest-cause    hash         the same members → the winning rest's cause
 *   <prefix>key:stats:<key id>    hash         requests, successes, failures, tokens (sums), cost (float
 *                                              sum), lastUsedAt (max): added by batches of deltas
 *   <prefix>batch:<instance>:<n>  string       a batch of deltas already applied (expires): replaying
 *                                              a batch whose answer was lost does not count it twice
 *   <prefix>free:<YYYY-MM-DD>     hash         used:<account> → free-model requests that day,
 *                                              limit:<account> → the account's known daily limit;
 *                                              expires after the day
 *   <prefix>lease:<work>          string       the instance doing <work> for all (discovery, import), expiring
 *   <prefix>changes               channel      StateChange JSON (keys/change-schema.ts)
 *   <prefix>clients               hash         client name → its entry (client-store.ts)
 *   <prefix>clients:version       counter      client edits so far (client-store.ts)
 *   <prefix>clients:changes       channel      a person's client edit was stored
 *   <prefix>client:<name>:<createdAt>:<kind>:<start>
 *                                 hash         requests, tokens (sums), cost (float sum) of one fixed
 *                                              UTC window (minute, day, month; start in epoch ms),
 *                                              and reservedTokens, reservedCost: what the requests
 *                                              in flight hold (clients/reservations.ts); expiring
 *                                              a minute after it ends (client-counters.ts)
 */
import { windowStart, type WindowKind } from "../../clients/usage-windows.ts";

export type RedisKeys = ReturnType<typeof redisKeys>;

export function redisKeys(prefix: string) {
  return {
    keyList: `${prefix}keys`,
    keyListVersion: `${prefix}keys:version`,
    cooldown: `${prefix}key:cooldown`,
    cooldownCause: `${prefix}key:cooldown-cause`,
    disabled: `${prefix}key:disabled`,
    disabledCause: `${prefix}key:disabled-cause`,
    streak: `${prefix}key:streak`,
    switchVersion: `${prefix}key:switch`,
    accountRest: `${prefix}account:rest`,
    accountRestCause: `${prefix}account:rest-cause`,
    keyStats: (keyId: string) => `${prefix}key:stats:${keyId}`,
    counterBatch: (instanceId: string, sequence: number) => `${prefix}batch:${instanceId}:${sequence}`,
    freeDay: (day: string) => `${prefix}free:${day}`,
    lease: (work: string) => `${prefix}lease:${work}`,
    changes: `${prefix}changes`,
    clients: `${prefix}clients`,
    clientsVersion: `${prefix}clients:version`,
    clientChanges: `${prefix}clients:changes`,
    clientWindow: (name: string, createdAt: number, kind: WindowKind, at: number) => `${prefix}client:${name}:${createdAt}:${kind}:${windowStart(kind, at)}`,
  };
}

/** Seconds since the epoch at which a UTC day's keys may go: the next midnight plus a day's grace. */
export function freeDayExpiry(day: string): number {
  return Math.floor(Date.parse(`${day}T00:00:00.000Z`) / 1000) + 2 * 86_400;
}
