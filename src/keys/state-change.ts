/**
 * The `StateChange` union: what the pool decides and what moves between instances, and the key
 * list's entry as people's edits build it. The rules live in changes.ts; this file is types (and
 * which kinds are counters), so stores and transports can import it without the rules.
 */
import type { RestCause, RestClass } from "../domain/model-class.ts";
import type { KeyLimit } from "./schema.ts";

/** Where an instant came from, for status pages and logs; the winner's cause is kept. */
export interface Cause {
  source: string;
  reason: string;
}

export type KeyEdit =
  | { edit: "add"; secret: string; label?: string; addedAt: number; account?: string }
  | { edit: "remove" }
  | { edit: "enable" }
  | { edit: "disable"; at: number; reason: string }
  | { edit: "label"; label?: string };

/**
 * A decision of the pool, or a fact heard from elsewhere, as one change that `apply` (changes.ts)
 * folds into the pool's memory. Runtime facts carry the `basis` they were learned on: the key's
 * switch version (its last enable/disable/add by a person) as the deciding instance knew it. A
 * fact on an older basis than the key's loses to the person's edit.
 *
 * The kinds marked *local* are this instance's own and never travel: they have no instant or sum
 * another instance could merge (a rest until credits come back ends on a GET /key, not at a time;
 * a floor under a count is only right where the count was taken).
 */
export type StateChange =
  | ({ kind: "key-edit"; keyId: string; version: number } & KeyEdit)
  | ({ kind: "key-cooldown"; keyId: string; basis: number; until: number } & Cause)
  | { kind: "key-disabled"; keyId: string; basis: number; since: number; reason: string }
  | { kind: "key-failure"; keyId: string; basis: number; at: number }
  | { kind: "key-success"; keyId: string; basis: number; at: number }
  | { kind: "key-counters"; keyId: string; delta: CounterDelta; lastUsedAt?: number }
  | { kind: "key-account"; keyId: string; account: string }
  | ({ kind: "account-rest"; account: string; modelClass: RestClass; until: number } & Cause & RestDetail)
  | ({ kind: "model-rest"; account: string; model: string; until: number } & Cause & Pick<RestDetail, "cause">)
  | { kind: "free-requests"; account: string; day: string; delta: number }
  | { kind: "free-limit"; account: string; day: string; limit: number; learnedAt: number }
  /** Local: the day's count is at least `used` (GET /key's count, a free-models-per-day 429). */
  | { kind: "free-used"; account: string; day: string; used: number }
  /** Local: what GET /key said about the key's own spending cap. */
  | { kind: "key-limit"; keyId: string; keyLimit: KeyLimit }
  /** Local: a person's enable-key (`person`), or a GET /key showing credits again (`credits`), ends rests of the key's account. */
  | { kind: "rests-cleared"; account: string; keyId: string; by: "person" | "credits" };

/** What a rest may say beyond its instant; rests that carry `keyId` or `untilCleared` are local. */
export interface RestDetail {
  cause?: RestCause;
  /** One key of the account rests (its own spending cap), not the account. */
  keyId?: string;
  /** Lasts until credits are seen again: `until` is only a horizon. */
  untilCleared?: boolean;
}

/** The counters' kinds: a listener that only persists counters lazily tells them apart by kind. */
export const counterKinds: ReadonlySet<StateChange["kind"]> = new Set(["key-counters", "free-requests"]);

export interface CounterDelta {
  requests?: number;
  successes?: number;
  failures?: number;
  tokens?: number;
  cost?: number;
}

/** A key's counters as a shared store totals them. */
export type CounterTotals = Required<CounterDelta> & { lastUsedAt: number };

/**
 * A key as people keep it, as registers that each keep the edit with the highest version: the
 * add (secret, addedAt), the removal, the switch (add, remove, enable or disable: the person's last
 * say on whether it runs) and the label. Every edit of a key has its own version (the stores hand
 * them out), so the result is the same in any order. An entry exists from the first edit heard,
 * even one that arrives before the add it follows.
 */
export interface KeyListEntry {
  id: string;
  /** Empty while the key is not present (never added, or removed: no secret kept for it). */
  secret: string;
  label?: string;
  /** 0 while the key is not present. */
  addedAt: number;
  /** The OpenRouter account, once known (from the add, or learned). */
  account?: string;
  /** Not present: its last add is not newer than its last removal (or it was never added). */
  removed: boolean;
  /** The highest edit version heard for this key. */
  version: number;
  addVersion: number;
  removeVersion: number;
  /** The version of the last add/remove/enable/disable: runtime facts on an older basis are void. */
  switchVersion: number;
  labelVersion: number;
  /** Disabled by a person (`disable-key`): only a person's newer enable (or add) ends it. */
  personDisabled?: { at: number; reason: string };
}
