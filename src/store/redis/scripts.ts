/**
 * The Lua scripts of the shared state: where a check and an update must be one step, Redis runs
 * them in one script (never MULTI on the shared, auto-pipelined connection: other callers'
 * commands could land inside it; redis-notes.md). Each is sent as EVALSHA of its SHA-1, computed
 * here, and again as EVAL when Redis answers NOSCRIPT (after a restart or SCRIPT FLUSH), which
 * also loads it for the next time.
 */
import { causeText } from "../../keys/changes.ts";
import type { Cause } from "../../keys/state-change.ts";
import type { CallResult, RedisConnection, RedisWrite } from "./connection.ts";
import { freeDayExpiry, type RedisKeys } from "./redis-keys.ts";

export interface LuaScript {
  readonly source: string;
  readonly sha: string;
}

export function luaScript(source: string): LuaScript {
  return { source, sha: new Bun.CryptoHasher("sha1").update(source).digest("hex") };
}

/** EVALSHA, with EVAL as the fallback the connection sends on NOSCRIPT. */
export function evalWrite(script: LuaScript, keys: readonly string[], args: readonly string[], idempotent = false): RedisWrite {
  const tail = [String(keys.length), ...keys, ...args];
  return { command: "EVALSHA", args: [script.sha, ...tail], idempotent, noScriptFallback: { command: "EVAL", args: [script.source, ...tail], idempotent } };
}

/** Runs a script now and waits for its answer (with the connection's timeout and breaker). */
export async function runScript(connection: RedisConnection, script: LuaScript, keys: readonly string[], args: readonly string[]): Promise<CallResult<unknown>> {
  const write = evalWrite(script, keys, args);
  const first = await connection.send(write.command, write.args);
  if (first.ok || first.failure !== "refused" || !first.message.startsWith("NOSCRIPT") || !write.noScriptFallback) return first;
  return connection.send(write.noScriptFallback.command, write.noScriptFallback.args);
}

// KEYS: until set, cause hash[, switch hash]. ARGV: member, until, cause[, basis]. Equal instants:
// the greater cause text wins, as in keys/changes.ts, so Redis and every instance keep the same
// one. With a switch hash, an instant learned on a basis older than the person's last switch is void.
export const EXTEND_INSTANT = luaScript(`
if KEYS[3] and tonumber(ARGV[4]) < tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0') then return -1 end
local current = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]))
local instant = tonumber(ARGV[2])
if current and (current > instant or (current == instant and (redis.call('HGET', KEYS[2], ARGV[1]) or '') >= ARGV[3])) then return 0 end
redis.call('ZADD', KEYS[1], instant, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
return 1
`);

// KEYS: streak hash, disabled set, disabled cause hash, switch hash.
// ARGV: key id, basis, threshold, now, reason. Returns {count, disabled now (1) or not (0)};
// {-1, 0} when the basis is older than the person's last switch (the fact is void).
export const RECORD_FAILURE = luaScript(`
local switch = tonumber(redis.call('HGET', KEYS[4], ARGV[1]) or '0')
if tonumber(ARGV[2]) < switch then return {-1, 0} end
local count = redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
if count >= tonumber(ARGV[3]) and not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
  return {count, 1}
end
return {count, 0}
`);

// KEYS: streak hash, switch hash. ARGV: key id, basis. Returns 1 when the streak was reset.
export const RECORD_SUCCESS = luaScript(`
local switch = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(ARGV[2]) < switch then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
`);

// KEYS: switch hash, streak hash, disabled set, disabled cause hash, cooldown set, cooldown cause
// hash. ARGV: key id, version. A person's enable: it clears what the pool learned (the failure
// streak, disabled, the cooldown) and raises the switch version, so older facts stay void.
export const ENABLE_KEY = luaScript(`
if tonumber(ARGV[2]) <= tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('HDEL', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('HDEL', KEYS[6], ARGV[1])
return 1
`);

// KEYS: the day's hash. ARGV: account, known limit ('' if none), expiry (epoch seconds).
// Returns {granted 1/0, used after, limit or -1}.
export const RESERVE_FREE_SLOT = luaScript(`
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit:' .. ARGV[1]) or ARGV[2])
local used = tonumber(redis.call('HGET', KEYS[1], 'used:' .. ARGV[1]) or '0')
if limit and used >= limit then return {0, used, limit} end
used = redis.call('HINCRBY', KEYS[1], 'used:' .. ARGV[1], 1)
redis.call('EXPIREAT', KEYS[1], ARGV[3], 'NX')
return {1, used, limit or -1}
`);

export interface FreeSlot {
  granted: boolean;
  /** The account's count for the day after this call. */
  used: number;
  limit?: number;
}

export interface SharedStateScripts {
  /** Raises a key's cooldown to `until` (never lowers it), unless learned before a person's enable; idempotent. */
  extendCooldown(input: { keyId: string; basis: number; until: number; cause: Cause }): RedisWrite;
  /** Records a key disabled since `since` (the later instant wins), unless learned before a person's switch; idempotent. */
  extendDisabled(input: { keyId: string; basis: number; since: number; reason: string }): RedisWrite;
  /** Raises an account's rest (`restId`: `class:free`, `model:<id>`, as in keys/changes.ts); idempotent. */
  extendRest(input: { account: string; restId: string; until: number; cause: Cause }): RedisWrite;
  /** A person's enable at `version`: clears streak, disabled and cooldown; idempotent. */
  enableKey(keyId: string, version: number): RedisWrite;
  /** Counts a failure and disables the key at the threshold, in one step; void for a fact learned before a person's enable. */
  recordFailure(input: { keyId: string; basis: number; threshold: number; now: number; reason: string }): Promise<CallResult<{ count: number; disabled: boolean } | "void">>;
  recordSuccess(keyId: string, basis: number): RedisWrite;
  /** Counts an account's free-model request for the UTC day while under its known limit (an unknown limit grants: the 429 that follows teaches it). */
  reserveFreeSlot(input: { account: string; day: string; knownLimit?: number }): Promise<CallResult<FreeSlot>>;
  /** Records the account's daily limit for the day (HSET + expiry): later reservations check it. */
  learnFreeLimit(account: string, day: string, limit: number): RedisWrite[];
}

export function sharedStateScripts(connection: RedisConnection, keys: RedisKeys): SharedStateScripts {
  return {
    extendCooldown: ({ keyId, basis, until, cause }) =>
      evalWrite(EXTEND_INSTANT, [keys.cooldown, keys.cooldownCause, keys.switchVersion], [keyId, String(until), causeText(cause), String(basis)], true),
    extendDisabled: ({ keyId, basis, since, reason }) =>
      evalWrite(EXTEND_INSTANT, [keys.disabled, keys.disabledCause, keys.switchVersion], [keyId, String(since), reason, String(basis)], true),
    extendRest: ({ account, restId, until, cause }) =>
      evalWrite(EXTEND_INSTANT, [keys.accountRest, keys.accountRestCause], [`${account}|${restId}`, String(until), causeText(cause)], true),
    enableKey: (keyId, version) =>
      evalWrite(
        ENABLE_KEY,
        [keys.switchVersion, keys.streak, keys.disabled, keys.disabledCause, keys.cooldown, keys.cooldownCause],
        [keyId, String(version)],
        true,
      ),
    async recordFailure({ keyId, basis, threshold, now, reason }) {
      const result = await runScript(connection, RECORD_FAILURE, [keys.streak, keys.disabled, keys.disabledCause, keys.switchVersion], [keyId, String(basis), String(threshold), String(now), reason]);
      if (!result.ok) return result;
      const [count, disabled] = integers(result.value);
      return { ok: true, value: count < 0 ? "void" : { count, disabled: disabled === 1 } };
    },
    recordSuccess: (keyId, basis) => evalWrite(RECORD_SUCCESS, [keys.streak, keys.switchVersion], [keyId, String(basis)], true),
    async reserveFreeSlot({ account, day, knownLimit }) {
      const result = await runScript(connection, RESERVE_FREE_SLOT, [keys.freeDay(day)], [account, knownLimit === undefined ? "" : String(knownLimit), String(freeDayExpiry(day))]);
      if (!result.ok) return result;
      const [granted, used, limit] = integers(result.value);
      return { ok: true, value: { granted: granted === 1, used, ...(limit < 0 ? {} : { limit }) } };
    },
    learnFreeLimit: (account, day, limit) => [
      { command: "HSET", args: [keys.freeDay(day), `limit:${account}`, String(limit)], idempotent: true },
      { command: "EXPIREAT", args: [keys.freeDay(day), String(freeDayExpiry(day)), "NX"], idempotent: true },
    ],
  };
}

/** A script's array of integers (Lua numbers come back as integers). */
function integers(value: unknown): [number, number, number] {
  const list = Array.isArray(value) ? value : [];
  const at = (index: number): number => (typeof list[index] === "number" ? (list[index] as number) : Number(list[index] ?? 0));
  return [at(0), at(1), at(2)];
}
