/**
 * Choosing a key for a request: every key's status (key-status.ts, the one answer the views give
 * too) decides which keys could serve it, ROTATION (rotation.ts) picks one of them. When none can,
 * the result says why in terms the error message needs: all cooling, the free budget used up,
 * out of credits, over a spending cap, all disabled, or all tried.
 */
import { classOfModel } from "../domain/model-class.ts";
import { accountIdOf } from "./account-state.ts";
import { blockFor, keyStatus } from "./key-status.ts";
import { KEY_LOOKUP_WAIT_MS } from "./rests.ts";
import type { PoolCore } from "./pool-core.ts";
import type { KeyRecord } from "./schema.ts";

export interface KeyLease {
  keyId: string;
  /** The real key; it goes into the upstream Authorization header and nowhere else. */
  secret: string;
  /** The key's account id (`key:<id>` while unknown): what a 402 or a session pins to. */
  account: string;
}

export type AcquireResult =
  | { ok: true; lease: KeyLease }
  | { ok: false; reason: "no-keys" | "all-disabled" | "all-tried"; total: number }
  /** `resetKnown`: the first return was announced by the upstream; false: it is the proxy's own default guess. */
  | { ok: false; reason: "all-cooling"; cooling: number; nextAvailableAt: number; resetKnown: boolean; total: number }
  /** Every key left rests until its account has credits again (no known time). */
  | { ok: false; reason: "out-of-credits"; accounts: number; total: number }
  /** Every key left rests on a spending cap (its own, its workspace's, a guardrail's) until `resetAt`. */
  | { ok: false; reason: "over-budget"; keys: number; resetAt: number; resetKnown: boolean; total: number }
  /** Free-model request, and every account's known daily free-model budget is used up. */
  | { ok: false; reason: "free-budget-exhausted"; accounts: number; resetAt: number; total: number };

export interface AcquireOptions {
  /** Keys this request must not use again (they failed it). */
  exclude?: ReadonlySet<string>;
  /** Keys this request would rather not use again (they were tried); used only if nothing else is left. */
  avoid?: ReadonlySet<string>;
  /** Accounts this request must not use again (its own 402 there: it asks too much of them). */
  excludeAccounts?: ReadonlySet<string>;
  /** The key to use when it can serve (session affinity); else ROTATION picks. */
  prefer?: string;
  /** The requested model: only keys whose account may serve it now are candidates. */
  model?: string;
}

/** What `outlook` answers: the key an acquire would hand out now, or why none. */
export type Outlook = { ok: true; keyId: string } | Exclude<AcquireResult, { ok: true }>;

const leaseOf = (key: KeyRecord): KeyLease => ({ keyId: key.id, secret: key.secret, account: accountIdOf(key) });

/** Hands out a key for a request: marks it used and notes cooldowns that have ended. */
export function acquire(core: PoolCore, options: AcquireOptions = {}): AcquireResult {
  const candidates = survey(core, options, true);
  if (!Array.isArray(candidates)) return candidates;
  const key = preferredOf(candidates, options.prefer) ?? core.chooser.choose(candidates, core.keys);
  // Marked used at acquire time, so concurrent requests spread under least-recently-used;
  // stamps strictly increase, so two acquires in one millisecond still have an order.
  core.lastStamp = Math.max(core.now(), core.lastStamp + 1e-3);
  core.chooser.used(key.id);
  core.decide([{ kind: "key-counters", keyId: key.id, delta: { requests: 1 }, lastUsedAt: core.lastStamp }]);
  return { ok: true, lease: leaseOf(key) };
}

/**
 * The same question without taking a key: which one an acquire would hand out now, or why none.
 * A read: nothing is marked used, noted or announced (the request path asks it once, when its
 * attempts are spent on rate limits, to tell the client when a key returns).
 */
export function outlook(core: PoolCore, options: AcquireOptions = {}): Outlook {
  const candidates = survey(core, options, false);
  if (!Array.isArray(candidates)) return candidates;
  return { ok: true, keyId: (preferredOf(candidates, options.prefer) ?? (candidates[0] as KeyRecord)).id };
}

const preferredOf = (candidates: readonly KeyRecord[], prefer: string | undefined): KeyRecord | undefined =>
  prefer === undefined ? undefined : candidates.find((key) => key.id === prefer);

/**
 * Every key's status against the request: the keys that could serve it (never empty), or why none
 * can. The list itself is the answer, not wrapped in an object: this runs on every request.
 */
function survey(core: PoolCore, { exclude, avoid, excludeAccounts, model }: AcquireOptions, noteRecoveries: boolean): KeyRecord[] | Exclude<AcquireResult, { ok: true }> {
  const { keys } = core;
  const at = core.now();
  if (keys.length === 0) return { ok: false, reason: "no-keys", total: 0 };
  const modelClass = classOfModel(model);
  const { accounts } = core;
  const usable: KeyRecord[] = [];
  /** Keys only a privacy 404 keeps off this model: tried last, never refused outright. */
  let fallback: KeyRecord[] | undefined;
  let tried = false;
  let nextAt = Infinity;
  /** The first return whose time the upstream announced: equal to nextAt when that one was. */
  let nextKnownAt = Infinity;
  let cooling = 0;
  let budget = 0;
  let unpaid = 0;
  let capped = 0;
  let blockedAccounts: Set<string> | undefined;
  for (const key of keys) {
    const status = keyStatus(key, accounts, at);
    if (status.state === "disabled") continue;
    if (noteRecoveries && key.cooldownUntil !== 0 && status.state !== "cooling") noteRecovery(core, key);
    if (status.state === "cooling") {
      cooling++;
      nextAt = Math.min(nextAt, status.until);
      if (key.cooldownSource !== undefined && key.cooldownSource !== "default") nextKnownAt = Math.min(nextKnownAt, status.until);
      continue;
    }
    const block = blockFor(status, model, modelClass, at);
    if (block?.why === "soft") {
      if (!exclude?.has(key.id) && !excludeAccounts?.has(accountIdOf(key))) (fallback ??= []).push(key);
      else tried = true;
      continue;
    }
    if (block) {
      cooling++;
      if (block.why === "budget") budget++;
      if (block.why === "cap") capped++;
      if (block.why === "unpaid") unpaid++;
      else {
        nextAt = Math.min(nextAt, block.until);
        if (block.known) nextKnownAt = Math.min(nextKnownAt, block.until);
      }
      if (block.why !== "rest" && block.why !== "cap") (blockedAccounts ??= new Set()).add(accountIdOf(key));
      continue;
    }
    if (modelClass === "free" && core.pending.size > 0 && core.pending.has(key.id)) {
      cooling++;
      nextAt = Math.min(nextAt, at + KEY_LOOKUP_WAIT_MS);
      continue;
    }
    if (exclude?.has(key.id) || (excludeAccounts !== undefined && excludeAccounts.has(accountIdOf(key)))) {
      tried = true;
      continue;
    }
    usable.push(key);
  }
  const fresh = avoid ? usable.filter((key) => !avoid.has(key.id)) : usable;
  const candidates = fresh.length > 0 ? fresh : usable.length > 0 ? usable : (fallback ?? []);
  if (candidates.length === 0) {
    if (tried) return { ok: false, reason: "all-tried", total: keys.length };
    if (cooling === 0) return { ok: false, reason: "all-disabled", total: keys.length };
    const accountCount = blockedAccounts?.size ?? 0;
    if (budget === cooling) return { ok: false, reason: "free-budget-exhausted", accounts: accountCount, resetAt: nextAt, total: keys.length };
    if (unpaid === cooling) return { ok: false, reason: "out-of-credits", accounts: accountCount, total: keys.length };
    if (capped === cooling) return { ok: false, reason: "over-budget", keys: capped, resetAt: nextAt, resetKnown: nextKnownAt === nextAt, total: keys.length };
    return { ok: false, reason: "all-cooling", cooling, nextAvailableAt: nextAt, resetKnown: nextKnownAt === nextAt, total: keys.length };
  }
  return candidates;
}

/**
 * A key's cooldown that is over is noted once, by the next real acquire, so the logs say when a
 * key came back. Status never depends on this (an ended cooldown stops counting at its end whether
 * or not it was noted), nor does a merge: an instant that has ended outlasts nothing, so clearing
 * it here is bookkeeping, not a change to share.
 */
function noteRecovery(core: PoolCore, key: KeyRecord): void {
  key.cooldownUntil = 0;
  delete key.cooldownSource;
  delete key.cooldownReason;
  core.events?.emit("key.recovered", { keyId: key.id });
}
