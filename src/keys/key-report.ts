/**
 * Deciding what the upstream said about a key: an answer's outcome (policy.ts decides it) and what
 * GET /key said. A 429 cools the key or rests its account, a 402 rests what its cause names, a bad
 * key counts towards FAILURE_THRESHOLD; what is not the key's doing leaves no mark. Each decision
 * is a list of changes the pool applies (changes.ts) and publishes; the events the logs and
 * metrics follow are announced here, for what the changes did.
 */
import type { Outcome, ResetSource } from "../domain/outcome.ts";
import { classOfModel } from "../domain/model-class.ts";
import { accountIdOf, utcDayOf } from "./account-state.ts";
import { restOfChange } from "./changes.ts";
import { paymentChanges, rateLimitChanges } from "./rests.ts";
import type { PoolCore } from "./pool-core.ts";
import type { StateChange } from "./state-change.ts";
import type { KeyLimit, KeyRecord } from "./schema.ts";

/** What the upstream said besides the outcome: who the key's account is, which model was asked. */
export interface ReportContext {
  model?: string;
  /** The key's account, when the answer named it (`user_id`). */
  account?: string;
}

export interface KeyFacts {
  account?: string;
  freeUsed?: number;
  freeLimit?: number;
  keyLimit?: KeyLimit;
}

const cooldown = (key: KeyRecord, until: number, source: ResetSource, reason: string): StateChange => ({ kind: "key-cooldown", keyId: key.id, basis: key.resetAt ?? 0, until, source, reason });

export function report(core: PoolCore, keyId: string, outcome: Outcome, context: ReportContext = {}): void {
  const key = core.byId.get(keyId);
  if (!key) return; // removed while the request was in flight
  const at = core.now();
  const basis = key.resetAt ?? 0;
  const changes: StateChange[] = [];
  if (context.account !== undefined && context.account !== key.account) changes.push({ kind: "key-account", keyId, account: context.account });
  const account = context.account ?? accountIdOf(key);
  switch (outcome.kind) {
    case "ok":
      changes.push({ kind: "key-counters", keyId, delta: { successes: 1 } });
      if (key.consecutiveFailures > 0) changes.push({ kind: "key-success", keyId, basis, at });
      // OpenRouter counts every free-model request an account sends, per UTC day.
      if (classOfModel(context.model) === "free") changes.push({ kind: "free-requests", account, day: utcDayOf(at), delta: 1 });
      if (outcome.exhausted) changes.push(cooldown(key, outcome.exhausted.until, outcome.exhausted.source, "rate limit remaining is 0"));
      break;
    case "rate-limited":
      if (outcome.scope === "key") changes.push(cooldown(key, outcome.until, outcome.source, outcome.message ?? "rate limited (429)"));
      else {
        changes.push(...rateLimitChanges(account, outcome, at));
        core.chooser.dropped(key.id);
      }
      break;
    case "payment": {
      // Never a failure of the key: money, not a broken key (payment-causes.ts).
      const rests = paymentChanges(account, key, outcome, at);
      if (rests.length > 0) core.chooser.dropped(key.id);
      changes.push(...rests);
      break;
    }
    case "privacy":
      // A model's rest needs the model: without one it would keep nothing off the key.
      if (outcome.model !== undefined) changes.push({ kind: "model-rest", account, model: outcome.model, until: outcome.until, source: "default", reason: outcome.message ?? "no endpoints match the data policy", cause: "privacy" });
      break;
    case "key-failure":
      changes.push({ kind: "key-counters", keyId, delta: { failures: 1 } }, { kind: "key-failure", keyId, basis, at });
      break;
    case "shared-capacity":
    case "request-error":
    case "upstream-error":
      break; // not the key's doing: nothing to remember (but an account the answer named)
  }
  if (changes.length === 0) return;
  announce(core, key, core.decide(changes));
  if (outcome.kind !== "key-failure") return;
  core.events?.emit("key.failure", { keyId, consecutiveFailures: key.consecutiveFailures, reason: outcome.reason });
  if (key.consecutiveFailures >= core.failureThreshold && !key.disabled) {
    const reason = `${key.consecutiveFailures} consecutive failures; last: ${outcome.reason}`;
    announce(core, key, core.decide([{ kind: "key-disabled", keyId, basis, since: at, reason }]));
  }
}

/** The events for what a decision about `key` changed: the logs, metrics and status page follow these. */
function announce(core: PoolCore, key: KeyRecord, applied: readonly StateChange[]): void {
  for (const change of applied) {
    switch (change.kind) {
      case "key-cooldown":
        core.chooser.dropped(key.id);
        core.events?.emit("key.cooldown", { keyId: key.id, until: change.until, source: key.cooldownSource ?? "default", reason: change.reason });
        break;
      case "key-disabled":
        core.chooser.dropped(key.id);
        core.events?.emit("key.disabled", { keyId: key.id, reason: change.reason });
        break;
      case "account-rest":
      case "model-rest": {
        const { scope, modelClass, model, until, source, reason, cause } = restOfChange(change);
        core.events?.emit("account.rest", { account: change.account, keyId: key.id, scope, modelClass, ...(model === undefined ? {} : { model }), until, source, reason, ...(cause === undefined ? {} : { cause }) });
        break;
      }
    }
  }
}

/** What GET /key said (or that it failed: no facts); either way a key added at runtime may now take free-model requests. */
export function learn(core: PoolCore, keyId: string, { account, freeUsed, freeLimit, keyLimit }: KeyFacts): void {
  core.pending.delete(keyId);
  const key = core.byId.get(keyId);
  if (!key) return;
  const at = core.now();
  const changes: StateChange[] = [];
  if (account !== undefined && account !== key.account) changes.push({ kind: "key-account", keyId, account });
  const accountId = account ?? accountIdOf(key);
  const day = utcDayOf(at);
  // A count only raises what was counted here: requests sent since GET /key answered still count.
  if (freeUsed !== undefined) changes.push({ kind: "free-used", account: accountId, day, used: freeUsed });
  if (freeLimit !== undefined) changes.push({ kind: "free-limit", account: accountId, day, limit: freeLimit, learnedAt: at });
  if (keyLimit !== undefined) changes.push({ kind: "key-limit", keyId, keyLimit });
  core.decide(changes);
}
