/**
 * The key pool's state, shared by the modules that each do one of its jobs: choosing a key
 * (key-acquire.ts), applying what the upstream said (key-report.ts), a person's edits and the
 * stored list (key-edits.ts), and what is shown (key-pool.ts). key-pool.ts builds it and is the
 * only way in from outside: nothing else holds a `PoolCore`.
 *
 * Its records and accounts are the memory `apply` (changes.ts) folds changes into; the rest is
 * this instance's own bookkeeping (stamps, the chooser, keys awaiting their GET /key).
 */
import type { EventBus } from "../domain/events.ts";
import type { AccountState } from "./account-state.ts";
import type { PoolMemory } from "./changes.ts";
import type { StateChange } from "./state-change.ts";
import type { Chooser } from "./rotation.ts";
import type { KeyRecord } from "./schema.ts";

export interface PoolCore extends PoolMemory {
  keys: KeyRecord[];
  byId: Map<string, KeyRecord>;
  accounts: Map<string, AccountState>;
  /** The last use stamp handed out: stamps strictly increase (see key-acquire.ts). */
  lastStamp: number;
  /** Whether the first list was adopted: keys found at startup were not "added". */
  loaded: boolean;
  /** Keys added at runtime, until their GET /key answers: no free-model request may use them. */
  readonly pending: Set<string>;
  readonly chooser: Chooser;
  readonly events: EventBus | undefined;
  readonly now: () => number;
  readonly failureThreshold: number;
  readonly holdAddedKeys: boolean;
  /**
   * A decision: applies each change (changes.ts `apply`) and hands the ones that changed something
   * to the pool's change listeners; returns those. The caller announces its events.
   */
  decide(changes: StateChange[]): StateChange[];
}
