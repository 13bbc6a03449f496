/**
 * The key pool: the only owner of key state. `acquire` picks a key for a request, `report` applies
 * what the upstream said about it. Both are synchronous and do no I/O; the store is told that
 * something changed (`onChange`) and writes later, coalesced.
 */
import type { Rotation } from "../config.ts";
import type { EventBus } from "../events.ts";
import type { Outcome, ResetSource } from "../upstream/policy.ts";
import type { KeyRecord } from "./schema.ts";

export interface KeyLease {
  keyId: string;
  /** The real key; it goes into the upstream Authorization header and nowhere else. */
  secret: string;
}

export type AcquireResult =
  | { ok: true; lease: KeyLease }
  | { ok: false; reason: "no-keys" | "all-disabled" | "all-tried"; total: number }
  | { ok: false; reason: "all-cooling"; cooling: number; nextAvailableAt: number; total: number };

export interface AcquireOptions {
  /** Keys this request must not use again (they failed it). */
  exclude?: ReadonlySet<string>;
  /** Keys this request would rather not use again (they were tried); used only if nothing else is left. */
  avoid?: ReadonlySet<string>;
}

export type KeyStatus =
  | { state: "active" }
  | { state: "cooling"; until: number; reason?: string }
  | { state: "disabled"; reason: string; at: number };

export interface Availability {
  total: number;
  available: number;
  cooling: number;
  disabled: number;
  /** When the first cooling key returns; undefined when none is cooling. */
  nextAvailableAt?: number;
}

export interface KeyPool {
  acquire(options?: AcquireOptions): AcquireResult;
  /** How many keys could serve now, rest, or are disabled (readiness, error messages). */
  availability(): Availability;
  report(keyId: string, outcome: Outcome): void;
  /** Adopts a stored list: new keys join, missing ones leave, known ones keep runtime state. */
  replaceKeys(records: readonly KeyRecord[]): void;
  records(): KeyRecord[];
  statusOf(record: KeyRecord): KeyStatus;
  /** Subscribes to "state changed, persist me"; returns an unsubscribe. */
  onChange(listener: () => void): () => void;
}

export interface KeyPoolOptions {
  rotation: Rotation;
  failureThreshold: number;
  now?: () => number;
  events?: EventBus;
}

export function createKeyPool({ rotation, failureThreshold, now = Date.now, events }: KeyPoolOptions): KeyPool {
  let keys: KeyRecord[] = [];
  let byId = new Map<string, KeyRecord>();
  let stickyId: string | undefined;
  let roundRobinCursor = 0;
  let lastStamp = 0;
  let loaded = false;
  const changeListeners = new Set<() => void>();

  const changed = () => {
    for (const listener of changeListeners) listener();
  };

  function isAvailable(key: KeyRecord, at: number): boolean {
    if (key.disabled) return false;
    if (key.cooldownUntil > at) return false;
    if (key.cooldownUntil !== 0) {
      // The rest is over: note it once, so logs can say when a key came back.
      key.cooldownUntil = 0;
      delete key.cooldownSource;
      delete key.cooldownReason;
      events?.emit("key.recovered", { keyId: key.id });
    }
    return true;
  }

  function choose(candidates: KeyRecord[]): KeyRecord {
    const leastRecentlyUsed = () =>
      candidates.reduce((best, key) => (key.lastUsedAt < best.lastUsedAt ? key : best), candidates[0] as KeyRecord);
    switch (rotation) {
      case "sticky": {
        const sticky = stickyId === undefined ? undefined : candidates.find((key) => key.id === stickyId);
        return sticky ?? leastRecentlyUsed();
      }
      case "least-recently-used":
        return leastRecentlyUsed();
      case "round-robin": {
        // Walk the key list in its order from the cursor; the first candidate found is next.
        const candidateIds = new Set(candidates.map((key) => key.id));
        for (let step = 0; step < keys.length; step++) {
          const key = keys[(roundRobinCursor + step) % keys.length] as KeyRecord;
          if (candidateIds.has(key.id)) {
            roundRobinCursor = (keys.indexOf(key) + 1) % keys.length;
            return key;
          }
        }
        return candidates[0] as KeyRecord;
      }
    }
  }

  return {
    acquire({ exclude, avoid } = {}) {
      const at = now();
      if (keys.length === 0) return { ok: false, reason: "no-keys", total: 0 };
      const usable = keys.filter((key) => !exclude?.has(key.id) && isAvailable(key, at));
      const fresh = avoid ? usable.filter((key) => !avoid.has(key.id)) : usable;
      const candidates = fresh.length > 0 ? fresh : usable;
      if (candidates.length === 0) {
        const cooling = keys.filter((key) => !key.disabled && key.cooldownUntil > at);
        const tried = keys.some((key) => !key.disabled && key.cooldownUntil <= at);
        if (tried) return { ok: false, reason: "all-tried", total: keys.length };
        if (cooling.length === 0) return { ok: false, reason: "all-disabled", total: keys.length };
        const nextAvailableAt = Math.min(...cooling.map((key) => key.cooldownUntil));
        return { ok: false, reason: "all-cooling", cooling: cooling.length, nextAvailableAt, total: keys.length };
      }
      const key = choose(candidates);
      // Marked used at acquire time, so concurrent requests spread under least-recently-used;
      // stamps strictly increase, so two acquires in one millisecond still have an order.
      lastStamp = Math.max(at, lastStamp + 1e-3);
      key.lastUsedAt = lastStamp;
      key.requests++;
      stickyId = key.id;
      changed();
      return { ok: true, lease: { keyId: key.id, secret: key.secret } };
    },

    availability() {
      const at = now();
      let available = 0;
      let disabled = 0;
      let cooling = 0;
      let nextAvailableAt = Infinity;
      for (const key of keys) {
        if (key.disabled) disabled++;
        else if (key.cooldownUntil > at) {
          cooling++;
          nextAvailableAt = Math.min(nextAvailableAt, key.cooldownUntil);
        } else available++;
      }
      return { total: keys.length, available, cooling, disabled, ...(cooling > 0 ? { nextAvailableAt } : {}) };
    },

    report(keyId, outcome) {
      const key = byId.get(keyId);
      if (!key) return; // removed while the request was in flight
      const at = now();
      const coolUntil = (until: number, source: ResetSource, reason: string) => {
        // A cooldown is only ever extended, never shortened, by a later report.
        if (until <= key.cooldownUntil) return;
        key.cooldownUntil = until;
        key.cooldownSource = source;
        key.cooldownReason = reason;
        if (stickyId === key.id) stickyId = undefined;
        events?.emit("key.cooldown", { keyId, until, source, reason });
      };
      switch (outcome.kind) {
        case "ok":
          key.successes++;
          key.consecutiveFailures = 0;
          if (outcome.exhausted) coolUntil(outcome.exhausted.until, outcome.exhausted.source, "rate limit remaining is 0");
          break;
        case "rate-limited":
          coolUntil(outcome.until, outcome.source, outcome.message ?? "rate limited (429)");
          break;
        case "key-failure":
          key.failures++;
          key.consecutiveFailures++;
          events?.emit("key.failure", { keyId, consecutiveFailures: key.consecutiveFailures, reason: outcome.reason });
          if (key.consecutiveFailures >= failureThreshold && !key.disabled) {
            const reason = `${key.consecutiveFailures} consecutive failures; last: ${outcome.reason}`;
            key.disabled = { reason, at };
            if (stickyId === key.id) stickyId = undefined;
            events?.emit("key.disabled", { keyId, reason });
          }
          break;
        case "request-error":
        case "upstream-error":
          return; // not the key's doing: nothing to remember
      }
      changed();
    },

    replaceKeys(records) {
      const previous = byId;
      const firstLoad = !loaded; // the keys found at startup were not "added"
      loaded = true;
      keys = records.map((record) => {
        const known = previous.get(record.id);
        if (!known) {
          if (!firstLoad) events?.emit("key.added", { keyId: record.id, ...(record.label ? { label: record.label } : {}) });
          return { ...record };
        }
        if (known.resetAt !== record.resetAt) {
          // A person's decision from outside (CLI, admin API, check-keys): theirs wins.
          if (record.disabled) events?.emit("key.disabled", { keyId: record.id, reason: record.disabled.reason });
          else events?.emit("key.enabled", { keyId: record.id });
          return { ...record };
        }
        // Same key, no reset by a person: keep the runtime state held here, adopt the rest.
        known.label = record.label;
        known.extra = record.extra;
        return known;
      });
      byId = new Map(keys.map((key) => [key.id, key]));
      for (const id of previous.keys()) if (!byId.has(id)) events?.emit("key.removed", { keyId: id });
      lastStamp = Math.max(lastStamp, ...keys.map((key) => key.lastUsedAt));
      if (stickyId !== undefined && !byId.has(stickyId)) stickyId = undefined;
    },

    records() {
      return keys.map((key) => ({ ...key }));
    },

    statusOf(record) {
      if (record.disabled) return { state: "disabled", reason: record.disabled.reason, at: record.disabled.at };
      if (record.cooldownUntil > now()) {
        return { state: "cooling", until: record.cooldownUntil, ...(record.cooldownReason ? { reason: record.cooldownReason } : {}) };
      }
      return { state: "active" };
    },

    onChange(listener) {
      changeListeners.add(listener);
      return () => changeListeners.delete(listener);
    },
  };
}
