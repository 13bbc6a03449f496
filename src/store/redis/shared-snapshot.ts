/**
 * The resync: everything the shared state holds, read in one pipelined burst (each command with
 * the connection's timeout). It runs after every (re)subscribe and as the periodic backstop, and
 * recovers whatever the change channel missed.
 *
 * The reads are not one atomic snapshot, and need not be: instants only grow and a person's
 * switch only moves forward, so a value read a moment late is merely newer. Instants come back as
 * `StateChange`s (apply them: max merges them in); totals (counters, the day's free count) come
 * back as totals — Redis holds the sum of every instance's deltas, so the pool takes them as its
 * base and adds only the deltas it has not written yet.
 */
import { causeFromText } from "../../keys/changes.ts";
import type { RestClass } from "../../domain/model-class.ts";
import type { CounterTotals, StateChange } from "../../keys/state-change.ts";
import type { CallResult, RedisConnection } from "./connection.ts";
import type { RedisKeys } from "./redis-keys.ts";

export interface SharedSnapshot {
  /** Cooldowns, disabled-since and rests as changes to apply (each on its key's current basis). */
  instants: StateChange[];
  /** The person's last switch version per key (0 when never switched). */
  switches: Map<string, number>;
  /** Consecutive failures per key, as Redis counted them. */
  streaks: Map<string, number>;
  /** Counter totals of the keys asked for. */
  totals: Map<string, CounterTotals>;
  /** The day's free-model count and known limit per account. */
  free: Map<string, { used: number; limit?: number }>;
}

export async function readSharedSnapshot(
  connection: RedisConnection,
  keys: RedisKeys,
  { keyIds, day }: { keyIds: readonly string[]; day: string },
): Promise<CallResult<SharedSnapshot>> {
  const commands: Array<[string, string[]]> = [
    ["ZRANGE", [keys.cooldown, "0", "-1", "WITHSCORES"]],
    ["HGETALL", [keys.cooldownCause]],
    ["ZRANGE", [keys.disabled, "0", "-1", "WITHSCORES"]],
    ["HGETALL", [keys.disabledCause]],
    ["HGETALL", [keys.streak]],
    ["HGETALL", [keys.switchVersion]],
    ["ZRANGE", [keys.accountRest, "0", "-1", "WITHSCORES"]],
    ["HGETALL", [keys.accountRestCause]],
    ["HGETALL", [keys.freeDay(day)]],
    ...keyIds.map((id): [string, string[]] => ["HGETALL", [keys.keyStats(id)]]),
  ];
  const results = await Promise.all(commands.map(([command, args]) => connection.send(command, args)));
  const failed = results.find((result) => !result.ok);
  if (failed && !failed.ok) return failed;
  const values = results.map((result) => (result.ok ? result.value : undefined));
  const [cooldowns, cooldownCauses, disabled, disabledCauses, streakHash, switchHash, rests, restCauses, freeHash] = values;

  const switches = numbers(hash(switchHash));
  const basis = (keyId: string): number => switches.get(keyId) ?? 0;
  const instants: StateChange[] = [];
  const cooldownCause = hash(cooldownCauses);
  for (const [keyId, until] of scored(cooldowns)) {
    instants.push({ kind: "key-cooldown", keyId, basis: basis(keyId), until, ...causeFromText(cooldownCause[keyId] ?? "") });
  }
  const disabledCause = hash(disabledCauses);
  for (const [keyId, since] of scored(disabled)) instants.push({ kind: "key-disabled", keyId, basis: basis(keyId), since, reason: disabledCause[keyId] ?? "" });
  const restCause = hash(restCauses);
  for (const [member, until] of scored(rests)) {
    const change = restChange(member, until, causeFromText(restCause[member] ?? ""));
    if (change) instants.push(change);
  }

  const totals = new Map<string, CounterTotals>();
  keyIds.forEach((keyId, index) => {
    const stats = hash(values[9 + index]);
    const number = (field: string): number => Number(stats[field] ?? 0) || 0;
    totals.set(keyId, {
      requests: number("requests"),
      successes: number("successes"),
      failures: number("failures"),
      tokens: number("tokens"),
      cost: number("cost"),
      lastUsedAt: number("lastUsedAt"),
    });
  });

  const free = new Map<string, { used: number; limit?: number }>();
  for (const [field, value] of Object.entries(hash(freeHash))) {
    const match = /^(used|limit):(.+)$/.exec(field);
    if (!match) continue;
    const [, kind, account = ""] = match;
    const entry = free.get(account) ?? { used: 0 };
    if (kind === "used") entry.used = Number(value) || 0;
    else entry.limit = Number(value) || 0;
    free.set(account, entry);
  }
  return { ok: true, value: { instants, switches, streaks: numbers(hash(streakHash)), totals, free } };
}

/** `<account>|class:<all|free|paid>` or `<account>|model:<id>` (redis-keys.ts) → its change. */
function restChange(member: string, until: number, cause: { source: string; reason: string }): StateChange | undefined {
  const split = member.indexOf("|");
  if (split < 0) return undefined;
  const account = member.slice(0, split);
  const restId = member.slice(split + 1);
  if (restId.startsWith("model:")) return { kind: "model-rest", account, model: restId.slice("model:".length), until, ...cause };
  const modelClass = restId.slice("class:".length);
  if (!restId.startsWith("class:") || !isRestClass(modelClass)) return undefined;
  return { kind: "account-rest", account, modelClass, until, ...cause };
}

const isRestClass = (text: string): text is RestClass => text === "all" || text === "free" || text === "paid";

/** HGETALL's reply (a null-prototype object) as a plain record of strings. */
function hash(value: unknown): Record<string, string> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return {};
  return Object.fromEntries(Object.entries(value).map(([field, text]) => [field, String(text)]));
}

function numbers(record: Record<string, string>): Map<string, number> {
  return new Map(Object.entries(record).map(([field, text]) => [field, Number(text) || 0]));
}

/** ZRANGE … WITHSCORES: [[member, score], …] in RESP3 (a flat list in RESP2: both read). */
function scored(value: unknown): Array<[string, number]> {
  if (!Array.isArray(value)) return [];
  if (value.every((item) => Array.isArray(item))) return value.map((pair: unknown[]) => [String(pair[0]), Number(pair[1])]);
  const pairs: Array<[string, number]> = [];
  for (let i = 0; i + 1 < value.length; i += 2) pairs.push([String(value[i]), Number(value[i + 1])]);
  return pairs;
}
