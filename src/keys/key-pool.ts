/**
 * The key pool: the only owner of key state. `acquire` picks a key for a request, `report` decides
 * what the upstream said about it; both are synchronous and do no I/O. Every decision is a list of
 * `StateChange`s applied by the one reducer (changes.ts `apply`) and handed to the pool's change
 * listeners (`onChange`): the stores write them, each in its own way and time. Changes made
 * elsewhere come in through `apply`, the same reducer, and are not handed out again.
 *
 * This file is the pool's face and its assembly; each job lives in its own module: choosing
 * (key-acquire.ts), outcomes (key-report.ts), a person's edits and the stored list (key-edits.ts);
 * the views below only read. A key's status is one pure function (key-status.ts) all of them share.
 */
import type { Rotation } from "../config.ts";
import type { Outcome } from "../domain/outcome.ts";
import type { EventBus } from "../domain/events.ts";
import { copyAccounts, type AccountState, type FreeBudget } from "./account-state.ts";
import { apply } from "./changes.ts";
import { acquire, outlook, type AcquireOptions, type AcquireResult, type Outlook } from "./key-acquire.ts";
import { endRests, replaceKeys } from "./key-edits.ts";
import { learn, report, type KeyFacts, type ReportContext } from "./key-report.ts";
import { keyStatus, type KeyState, type KeyStatus } from "./key-status.ts";
import { viewAccounts, viewKey, type AccountView, type KeyView } from "./key-view.ts";
import type { PoolCore } from "./pool-core.ts";
import type { StateChange } from "./state-change.ts";
import { createChooser } from "./rotation.ts";
import type { KeyRecord } from "./schema.ts";

export type { AcquireOptions, AcquireResult, KeyLease, Outlook } from "./key-acquire.ts";
export type { KeyFacts, ReportContext } from "./key-report.ts";
export type { KeyState, KeyStatus } from "./key-status.ts";

export interface Availability extends Record<KeyState, number> {
  total: number;
  /** Keys that can serve some request now: `active` and `limited` ones. */
  available: number;
  /** When the first cooling or resting key returns (known times only); absent when none will by itself. */
  nextAvailableAt?: number;
}

/**
 * What each decision changed, in the order applied: counters only (`key-counters`, `free-requests`:
 * state-change.ts `counterKinds`) for an acquire or a plain success, instants and the rest otherwise.
 * Only this pool's own decisions; a change applied through `apply` is not handed out.
 */
export type ChangeListener = (changes: readonly StateChange[]) => void;

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
  /** One account's free-model budget as held now, read without copying every account (the free-model reservation asks per request). */
  freeBudget(account: string): Readonly<FreeBudget> | undefined;
  /** Adopts account state read at startup. */
  loadAccounts(accounts: ReadonlyMap<string, AccountState>): void;
  accountViews(): AccountView[];
  /** Every key as people see it (admin API, status page), its status from key-status.ts. */
  keyViews(): KeyView[];
  /** Adopts a stored list: new keys join, missing ones leave, known ones keep runtime state. */
  replaceKeys(records: readonly KeyRecord[]): void;
  records(): KeyRecord[];
  statusOf(record: KeyRecord): KeyStatus;
  /** Subscribes to the pool's decisions, as the changes each one made; returns an unsubscribe. */
  onChange(listener: ChangeListener): () => void;
  /**
   * A change made elsewhere (another instance, a resync), folded in by the same reducer as the
   * pool's own; announces no event and is not handed to the change listeners.
   */
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
  const changeListeners = new Set<ChangeListener>();
  /** Rests that have ended are forgotten when their account takes a new one, so an account's list stays short. */
  const forgetEnded = (change: StateChange): void => {
    if (change.kind !== "account-rest" && change.kind !== "model-rest") return;
    const account = core.accounts.get(change.account);
    const at = now();
    if (account !== undefined && account.rests.some((rest) => rest.until <= at)) account.rests = account.rests.filter((rest) => rest.until > at);
  };
  const core: PoolCore = {
    keys: [],
    byId: new Map(),
    accounts: new Map(),
    lastStamp: 0,
    loaded: false,
    pending: new Set(),
    chooser: createChooser(rotation),
    events,
    now,
    failureThreshold,
    holdAddedKeys,
    decide(changes) {
      // The request path decides one change per call: no copy unless one changed nothing.
      let applied: StateChange[] | undefined;
      for (let index = 0; index < changes.length; index++) {
        const change = changes[index] as StateChange;
        forgetEnded(change);
        if (apply(core, change)) applied?.push(change);
        else applied ??= changes.slice(0, index);
      }
      const made = applied ?? changes;
      if (made.length > 0) for (const listener of changeListeners) listener(made);
      return made;
    },
  };
  const pool: KeyPool = {
    acquire: (options) => acquire(core, options),
    outlook: (options) => outlook(core, options),
    availability() {
      const at = now();
      const counts: Record<KeyState, number> = { active: 0, limited: 0, resting: 0, cooling: 0, disabled: 0 };
      let nextAvailableAt = Infinity;
      for (const key of core.keys) {
        const status = keyStatus(key, core.accounts, at);
        counts[status.state]++;
        if (status.state === "cooling" || status.state === "resting") nextAvailableAt = Math.min(nextAvailableAt, status.until);
      }
      const available = counts.active + counts.limited;
      return { total: core.keys.length, available, ...counts, ...(Number.isFinite(nextAvailableAt) ? { nextAvailableAt } : {}) };
    },
    keysByState() {
      // The gauge counts as /readyz does: the same statuses, without the totals.
      const { total: _total, available: _available, nextAvailableAt: _next, ...counts } = pool.availability();
      return counts;
    },
    report: (keyId, outcome, context) => report(core, keyId, outcome, context),
    learn: (keyId, facts) => learn(core, keyId, facts),
    clearRests: (keyId) => endRests(core, keyId, "person"),
    paidAgain: (keyId) => void endRests(core, keyId, "credits"),
    pendingLookups: () => [...core.pending],
    accounts: () => copyAccounts(core.accounts),
    freeBudget: (account) => core.accounts.get(account)?.free,
    loadAccounts(loaded) {
      core.accounts = copyAccounts(loaded);
    },
    accountViews: () => viewAccounts(core.keys, core.accounts, now()),
    keyViews() {
      const at = now();
      return core.keys.map((key) => viewKey(key, core.accounts, at));
    },
    replaceKeys: (list) => replaceKeys(core, list),
    records: () => core.keys.map((key) => ({ ...key })),
    statusOf: (record) => keyStatus(record, core.accounts, now()),
    onChange(listener) {
      changeListeners.add(listener);
      return () => changeListeners.delete(listener);
    },
    apply(change) {
      forgetEnded(change);
      if (!apply(core, change)) return;
      // A key that rests now stops being sticky; another instance's GET /key answered for a key added here.
      if (change.kind === "key-cooldown" || change.kind === "key-disabled") core.chooser.dropped(change.keyId);
      if (change.kind === "key-account") core.pending.delete(change.keyId);
    },
  };
  return pool;
}
