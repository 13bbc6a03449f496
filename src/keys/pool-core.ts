/**
 * The key pool's state, shared by the modules that each do one of its jobs: choosing a key
 * (key-acquire.ts), applying what the upstream said (key-report.ts), a person's edits and the
 * stored list (key-edits.ts), and what is shown (pool-views.ts). key-pool.ts builds it and is the
 * only way in from outside: nothing else holds a `PoolCore`.
 */
import type { EventBus } from "../domain/events.ts";
import type { AccountBook } from "./account-book.ts";
import type { Chooser } from "./rotation.ts";
import type { KeyRecord } from "./schema.ts";

/** What a change was: see `PoolCore.changed`. */
export type ChangeKind = "decision" | "counters";

export interface PoolCore {
  keys: KeyRecord[];
  byId: Map<string, KeyRecord>;
  /** The last use stamp handed out: stamps strictly increase (see key-acquire.ts). */
  lastStamp: number;
  /** Whether the first list was adopted: keys found at startup were not "added". */
  loaded: boolean;
  /** Keys added at runtime, until their GET /key answers: no free-model request may use them. */
  readonly pending: Set<string>;
  readonly book: AccountBook;
  readonly chooser: Chooser;
  readonly events: EventBus | undefined;
  readonly now: () => number;
  readonly failureThreshold: number;
  readonly holdAddedKeys: boolean;
  /**
   * Tells the store the state changed (it writes later, coalesced): a decision (a rest, a cooldown,
   * a disable, a person's edit, a learned fact) is saved promptly, counters only every few seconds.
   */
  changed(kind: ChangeKind): void;
}
