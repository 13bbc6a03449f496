/**
 * The shape of key state as the pool and the stores share it, and the `StateChange` union that
 * moves it between instances. The merge rules live in changes.ts; this file is types only (and
 * the empty values), so stores and transports can import it without the rules.
 */
import type { RestClass } from "../domain/model-class.ts";

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
 * Runtime facts carry the `basis` they were learned on: the key's switch version (its last
 * enable/disable/add by a person) as the emitting instance knew it. A fact on an older basis
 * than the key's loses to the person's edit.
 */
export type StateChange =
  | ({ kind: "key-edit"; keyId: string; version: number } & KeyEdit)
  | ({ kind: "key-cooldown"; keyId: string; basis: number; until: number } & Cause)
  | { kind: "key-disabled"; keyId: string; basis: number; since: number; reason: string }
  | { kind: "key-failure"; keyId: string; basis: number; at: number }
  | { kind: "key-success"; keyId: string; basis: number; at: number }
  | { kind: "key-counters"; keyId: string; delta: CounterDelta; lastUsedAt?: number }
  | { kind: "key-account"; keyId: string; account: string }
  | ({ kind: "account-rest"; account: string; modelClass: RestClass; until: number } & Cause)
  | ({ kind: "model-rest"; account: string; model: string; until: number } & Cause)
  | { kind: "free-requests"; account: string; day: string; delta: number }
  | { kind: "free-limit"; account: string; day: string; limit: number; learnedAt: number };

export interface CounterDelta {
  requests?: number;
  successes?: number;
  failures?: number;
  tokens?: number;
  cost?: number;
}

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

export interface Instant extends Cause {
  until: number;
}

export interface KeyRuntime {
  /** The switch version these facts were learned on. */
  basis: number;
  cooldown?: Instant;
  disabled?: { since: number; reason: string };
  /**
   * The failures since the last success, as their instants (not a count): a failure and a
   * success that cross in flight then merge the same in either order. `failures.length` is the
   * consecutive-failure count; at most `STREAK_CAP` are kept (past any failure threshold).
   */
  streak: { lastSuccessAt: number; failures: readonly number[] };
  lastUsedAt: number;
  requests: number;
  successes: number;
  failures: number;
  tokens: number;
  cost: number;
}

export interface AccountRuntime {
  /** Rests by identity: `class:<all|free|paid>` for the account, `model:<id>` for one model. */
  rests: ReadonlyMap<string, Instant & { scope: "account" | "model"; modelClass?: RestClass; model?: string }>;
  free?: { day: string; used: number; limit?: number; limitLearnedAt?: number };
}

export interface PoolState {
  keys: ReadonlyMap<string, KeyListEntry>;
  runtime: ReadonlyMap<string, KeyRuntime>;
  accounts: ReadonlyMap<string, AccountRuntime>;
}

/** FAILURE_THRESHOLD's maximum: a longer streak disables the key anyway. */
export const STREAK_CAP = 1000;

export const emptyPoolState = (): PoolState => ({ keys: new Map(), runtime: new Map(), accounts: new Map() });

export const emptyRuntime = (basis: number): KeyRuntime => ({
  basis,
  streak: { lastSuccessAt: 0, failures: [] },
  lastUsedAt: 0,
  requests: 0,
  successes: 0,
  failures: 0,
  tokens: 0,
  cost: 0,
});
