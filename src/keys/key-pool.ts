/**
 * The key pool: the only owner of key state. `acquire` picks a key for a request, `report` applies
 * what the upstream said about it. Both are synchronous and do no I/O; the store is told that
 * something changed (`onChange`) and writes later, coalesced.
 *
 * This file is the pool's face and its assembly; each job lives in its own module: choosing
 * (key-acquire.ts), outcomes (key-report.ts), a person's edits and the stored list (key-edits.ts),
 * views (pool-views.ts). A key's status is one pure function (key-status.ts) all of them share.
 */
import type { Rotation } from "../config.ts";
import type { Outcome } from "../domain/outcome.ts";
import type { EventBus } from "../domain/events.ts";
import { createAccountBook } from "./account-book.ts";
import type { AccountState } from "./account-state.ts";
import { acquire, outlook, type AcquireOptions, type AcquireResult, type Outlook } from "./key-acquire.ts";
import { clearRests, paidAgain, replaceKeys } from "./key-edits.ts";
import { learn, report, type KeyFacts, type ReportContext } from "./key-report.ts";
import type { KeyState, KeyStatus } from "./key-status.ts";
import type { AccountView, KeyView } from "./key-view.ts";
import { applyToPool } from "./pool-apply.ts";
import type { ChangeKind, PoolCore } from "./pool-core.ts";
import type { StateChange } from "./pool-state.ts";
import { accountViews, availability, keysByState, keyViews, records, statusOf, type Availability } from "./pool-views.ts";
import { createChooser } from "./rotation.ts";
import type { KeyRecord } from "./schema.ts";

export type { AcquireOptions, AcquireResult, KeyLease, Outlook } from "./key-acquire.ts";
export type { KeyFacts, ReportContext } from "./key-report.ts";
export type { KeyState, KeyStatus } from "./key-status.ts";
export type { Availability } from "./pool-views.ts";
export type { ChangeKind } from "./pool-core.ts";

export interface KeyPool {
  acquire(options?: AcquireOptions): AcquireResult;
  /** Which key an acquire would hand out now, or why none; a read that changes nothing. */
  outlook(options?: AcquireOptions): Outlook;
  /** How many keys are in each state, and whether any can serve now (readiness, error messages). */
  availability(): Availability;
  /** Keys by state, for the metrics gauge. */
  keysByState(): Record<KeyState, number>;
  report(keyId: string, outcome: Outcome, context?: ReportContext): void;
  /**
   * What GET /key said about a key: its account, that account's free-model use today, the key's own
   * cap. Called with no facts when the lookup failed: either way a key added at runtime may now
   * take free-model requests.
   */
  learn(keyId: string, facts: KeyFacts): void;
  /** A person's enable-key: the rests of the key's account that are not a known daily limit end; says which. */
  clearRests(keyId: string): string[];
  /** A background GET /key shows the account can pay again: its credit rests end. */
  paidAgain(keyId: string): void;
  /** Keys added while the server runs whose GET /key has not answered yet. */
  pendingLookups(): string[];
  /** The per-account state, for the store (the server's to write) and for views. */
  accounts(): Map<string, AccountState>;
  /** Adopts account state read at startup. */
  loadAccounts(accounts: ReadonlyMap<string, AccountState>): void;
  accountViews(): AccountView[];
  /** Every key as people see it (admin API, status page), its status from key-status.ts. */
  keyViews(): KeyView[];
  /** Adopts a stored list: new keys join, missing ones leave, known ones keep runtime state. */
  replaceKeys(records: readonly KeyRecord[]): void;
  records(): KeyRecord[];
  statusOf(record: KeyRecord): KeyStatus;
  /** Subscribes to "state changed, persist me" (a decision promptly, counters every few seconds); returns an unsubscribe. */
  onChange(listener: (kind: ChangeKind) => void): () => void;
  /** A change another instance made (issue 14, pool-apply.ts); emits none of the pool's events. */
  apply(change: StateChange): void;
}

export interface KeyPoolOptions {
  rotation: Rotation;
  failureThreshold: number;
  now?: () => number;
  events?: EventBus;
  /** A key added at runtime takes no free-model request until `learn` (GET /key answered or failed). */
  holdAddedKeys?: boolean;
}

export function createKeyPool({ rotation, failureThreshold, now = Date.now, events, holdAddedKeys = false }: KeyPoolOptions): KeyPool {
  const changeListeners = new Set<(kind: ChangeKind) => void>();
  const core: PoolCore = {
    keys: [],
    byId: new Map(),
    lastStamp: 0,
    loaded: false,
    pending: new Set(),
    book: createAccountBook({ now, events }),
    chooser: createChooser(rotation),
    events,
    now,
    failureThreshold,
    holdAddedKeys,
    changed(kind) {
      for (const listener of changeListeners) listener(kind);
    },
  };
  return {
    acquire: (options) => acquire(core, options),
    outlook: (options) => outlook(core, options),
    availability: () => availability(core),
    keysByState: () => keysByState(core),
    report: (keyId, outcome, context) => report(core, keyId, outcome, context),
    learn: (keyId, facts) => learn(core, keyId, facts),
    clearRests: (keyId) => clearRests(core, keyId),
    paidAgain: (keyId) => paidAgain(core, keyId),
    pendingLookups: () => [...core.pending],
    accounts: () => core.book.snapshot(),
    loadAccounts: (loaded) => core.book.load(loaded),
    accountViews: () => accountViews(core),
    keyViews: () => keyViews(core),
    replaceKeys: (list) => replaceKeys(core, list),
    records: () => records(core),
    statusOf: (record) => statusOf(core, record),
    onChange(listener) {
      changeListeners.add(listener);
      return () => changeListeners.delete(listener);
    },
    apply(change) {
      if (applyToPool(change, { byId: core.byId, keys: core.keys, book: core.book, dropped: (keyId) => core.chooser.dropped(keyId), now })) core.changed("decision");
    },
  };
}
