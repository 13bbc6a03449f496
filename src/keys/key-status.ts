/**
 * A key's status, computed in one place from the key, its account's state and the time. `acquire`,
 * `/readyz`, the metrics gauge, the admin API, `list-keys` and the status page all ask this one
 * function, so they cannot disagree (before, `/readyz` ignored account rests that `acquire` obeyed).
 *
 * Pure: nothing is written and nothing announced. A cooldown or rest that is over simply no longer
 * counts; its end is computed from `now`, never stored on read (so asking the pool's outlook changes nothing).
 */
import { classOfModel, type ModelClass } from "../domain/model-class.ts";
import { spendingCaps } from "../domain/outcome.ts";
import { nextUtcMidnight, utcDay } from "../domain/time-text.ts";
import { accountIdOf, type AccountRest, type AccountState } from "./account-state.ts";
import type { KeyRecord } from "./schema.ts";

/**
 * `active`: serves every request. `limited`: serves some (a class of models, or a model, rests).
 * `resting`: its account rests for free and paid models alike. `cooling`: the key's own cooldown
 * (a 429 on the key). `disabled`: failures, or a person.
 */
export const KeyStates = ["active", "limited", "resting", "cooling", "disabled"] as const;
export type KeyState = (typeof KeyStates)[number];

/** What keeps one kind of request (a class of models, or one model) off the key now. */
export interface Hold {
  /** The latest end of the rests with a known end; 0 when none. */
  until: number;
  /** That latest end was announced (a reset, Retry-After), not the proxy's default guess. */
  known: boolean;
  /** A rest lasts until credits are seen again (no known end). */
  unpaid: boolean;
  /** The account's known daily free-model limit is used up (until 00:00 UTC). */
  budget: boolean;
  /** Only a privacy 404 says no (its latest end; 0 when none): such a key is tried last, never refused. */
  soft: number;
  /** Only spending caps (a key's, a workspace's, a guardrail's budget) give it a known end: the key is over budget. */
  capped: boolean;
  /** A rest with a known end that is not a spending cap is among them. */
  uncapped: boolean;
  /** The rests behind it, for people. */
  rests: AccountRest[];
}

export interface Holds {
  free?: Hold;
  paid?: Hold;
  /** Rests of single models on the key's account, by model. */
  models?: ReadonlyMap<string, Hold>;
}

export type KeyStatus =
  | { state: "disabled"; reason: string; at: number }
  | { state: "cooling"; until: number; reason?: string }
  | { state: "active" }
  | ({ state: "limited" } & Holds)
  /** `until`: when it first serves something again (Infinity: when credits return). */
  | ({ state: "resting"; until: number } & Holds);

const ACTIVE: KeyStatus = Object.freeze({ state: "active" });

const emptyHold = (): Hold => ({ until: 0, known: false, unpaid: false, budget: false, soft: 0, capped: false, uncapped: false, rests: [] });

function addTo(hold: Hold, rest: AccountRest): void {
  hold.rests.push(rest);
  if (rest.untilCleared) hold.unpaid = true;
  else if (rest.cause === "privacy") hold.soft = Math.max(hold.soft, rest.until);
  else {
    if (rest.cause !== undefined && spendingCaps.has(rest.cause)) hold.capped = true;
    else hold.uncapped = true;
    if (rest.until >= hold.until) {
      hold.known = rest.source !== "default";
      hold.until = rest.until;
    }
  }
}

/** Whether a hold refuses its requests (a soft one only puts the key last). */
const refuses = (hold: Hold | undefined): hold is Hold => hold !== undefined && (hold.unpaid || hold.budget || hold.until > 0);

/** When a refusing hold ends: Infinity while it waits on credits. */
export function endOf(hold: Hold, now: number): number {
  if (hold.unpaid) return Infinity;
  return hold.budget ? Math.max(hold.until, nextUtcMidnight(now)) : hold.until;
}

export function keyStatus(key: KeyRecord, accounts: ReadonlyMap<string, AccountState>, now: number): KeyStatus {
  if (key.disabled) return { state: "disabled", reason: key.disabled.reason, at: key.disabled.at };
  if (key.cooldownUntil > now) return { state: "cooling", until: key.cooldownUntil, ...(key.cooldownReason ? { reason: key.cooldownReason } : {}) };
  // Most pools serving paid models never rest an account: no account state, nothing to compute.
  if (accounts.size === 0) return ACTIVE;
  const account = accounts.get(accountIdOf(key));
  if (!account) return ACTIVE;
  const holds = holdsOf(key, account, now);
  if (holds === undefined) return ACTIVE;
  if (refuses(holds.free) && refuses(holds.paid)) return { state: "resting", until: Math.min(endOf(holds.free, now), endOf(holds.paid, now)), ...holds };
  return { state: "limited", ...holds };
}

function holdsOf(key: KeyRecord, account: AccountState, now: number): Holds | undefined {
  let free: Hold | undefined;
  let paid: Hold | undefined;
  let models: Map<string, Hold> | undefined;
  for (const rest of account.rests) {
    if (rest.until <= now) continue;
    if (rest.scope === "model") {
      if (rest.model === undefined) continue;
      models ??= new Map();
      let hold = models.get(rest.model);
      if (!hold) models.set(rest.model, (hold = emptyHold()));
      addTo(hold, rest);
      continue;
    }
    if (rest.scope === "key" && rest.keyId !== key.id) continue;
    if (rest.modelClass !== "paid") addTo((free ??= emptyHold()), rest);
    if (rest.modelClass !== "free") addTo((paid ??= emptyHold()), rest);
  }
  const budget = account.free;
  if (budget && budget.day === utcDay(now) && budget.limit !== undefined && budget.used >= budget.limit) (free ??= emptyHold()).budget = true;
  if (!free && !paid && !models) return undefined;
  return { ...(free ? { free } : {}), ...(paid ? { paid } : {}), ...(models ? { models } : {}) };
}

/**
 * Why a key whose status is not disabled or cooling cannot take a request for `model` now.
 * `budget`: the known daily free-model limit is used up (until 00:00 UTC); `unpaid`: it rests until
 * credits come back (no known time); `rest`: anything else with a known end (`cap` when each such
 * rest is a spending cap); `soft`: only a privacy
 * 404 says no: used when nothing else is left.
 */
export interface Block {
  until: number;
  /** `cap`: a rest with a known end, and every such rest is a spending cap (the key is over budget). */
  why: "rest" | "cap" | "budget" | "unpaid" | "soft";
  /** The end was announced (a reset, Retry-After, 00:00 UTC), not the proxy's default guess. */
  known: boolean;
}

export function blockFor(status: KeyStatus, model: string | undefined, modelClass: ModelClass = classOfModel(model), now: number): Block | undefined {
  if (status.state !== "limited" && status.state !== "resting") return undefined;
  const ofClass = modelClass === "free" ? status.free : status.paid;
  const ofModel = model === undefined ? undefined : status.models?.get(model);
  if (!ofClass && !ofModel) return undefined;
  const classUntil = ofClass?.until ?? 0;
  const modelUntil = ofModel?.until ?? 0;
  const until = Math.max(classUntil, modelUntil);
  // The budget is looked at before the rests: a free-models-per-day 429 leaves both a rest and a
  // used-up budget, and only "budget" lets acquire say the daily limit is used up on every
  // account (instead of "all keys are cooling down").
  if (ofClass?.budget) return { until: Math.max(until, nextUtcMidnight(now)), why: "budget", known: true };
  // Waiting on credits outweighs a rest with a known end: that end would not bring the key back.
  if (ofClass?.unpaid || ofModel?.unpaid) return { until: Infinity, why: "unpaid", known: false };
  if (until > 0) {
    const capped = modelUntil === 0 && ofClass?.capped === true && !ofClass.uncapped;
    return { until, why: capped ? "cap" : "rest", known: (classUntil === until && ofClass?.known === true) || (modelUntil === until && ofModel?.known === true) };
  }
  const soft = Math.max(ofClass?.soft ?? 0, ofModel?.soft ?? 0);
  if (soft > 0) return { until: soft, why: "soft", known: false };
  return undefined;
}
