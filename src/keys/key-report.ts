/**
 * Applying what the upstream said about a key: an answer's outcome (policy.ts decides it) and what
 * GET /key said. A 429 cools the key or rests its account, a 402 rests what its cause names, a bad
 * key counts towards FAILURE_THRESHOLD; what is not the key's doing leaves no mark.
 */
import type { Outcome, ResetSource } from "../domain/outcome.ts";
import { classOfModel } from "../domain/model-class.ts";
import { applyPayment, applyRateLimit } from "./outcome-rests.ts";
import type { PoolCore } from "./pool-core.ts";
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

function coolUntil(core: PoolCore, key: KeyRecord, until: number, source: ResetSource, reason: string): void {
  // A cooldown is only ever extended, never shortened, by a later report.
  if (until <= key.cooldownUntil) return;
  key.cooldownUntil = until;
  key.cooldownSource = source;
  key.cooldownReason = reason;
  core.chooser.dropped(key.id);
  core.events?.emit("key.cooldown", { keyId: key.id, until, source, reason });
}

export function report(core: PoolCore, keyId: string, outcome: Outcome, context: ReportContext = {}): void {
  const key = core.byId.get(keyId);
  if (!key) return; // removed while the request was in flight
  const at = core.now();
  const { book, chooser, events } = core;
  let learned = false;
  if (context.account !== undefined) learned = book.setAccount(key, context.account);
  switch (outcome.kind) {
    case "ok":
      key.successes++;
      key.consecutiveFailures = 0;
      // OpenRouter counts every free-model request an account sends, per UTC day.
      if (classOfModel(context.model) === "free") book.freeBudget(key, at).used++;
      if (outcome.exhausted) coolUntil(core, key, outcome.exhausted.until, outcome.exhausted.source, "rate limit remaining is 0");
      break;
    case "rate-limited":
      if (outcome.scope === "key") coolUntil(core, key, outcome.until, outcome.source, outcome.message ?? "rate limited (429)");
      else {
        applyRateLimit(book, key, outcome, at);
        chooser.dropped(key.id);
      }
      break;
    case "payment":
      // Never a failure of the key: money, not a broken key (payment-causes.ts).
      if (!applyPayment(book, key, outcome, at) && !learned) return;
      chooser.dropped(key.id);
      break;
    case "privacy":
      book.addRest(key, { scope: "model", modelClass: "all", ...(outcome.model === undefined ? {} : { model: outcome.model }), until: outcome.until, source: "default", reason: outcome.message ?? "no endpoints match the data policy", cause: "privacy" });
      break;
    case "key-failure":
      key.failures++;
      key.consecutiveFailures++;
      events?.emit("key.failure", { keyId, consecutiveFailures: key.consecutiveFailures, reason: outcome.reason });
      if (key.consecutiveFailures >= core.failureThreshold && !key.disabled) {
        const reason = `${key.consecutiveFailures} consecutive failures; last: ${outcome.reason}`;
        key.disabled = { reason, at };
        chooser.dropped(key.id);
        events?.emit("key.disabled", { keyId, reason });
      }
      break;
    case "shared-capacity":
    case "request-error":
    case "upstream-error":
      if (!learned) return; // not the key's doing: nothing to remember
  }
  core.changed(outcome.kind === "ok" && !outcome.exhausted && !learned ? "counters" : "decision");
}

/** What GET /key said (or that it failed: no facts); either way a key added at runtime may now take free-model requests. */
export function learn(core: PoolCore, keyId: string, { account, freeUsed, freeLimit, keyLimit }: KeyFacts): void {
  core.pending.delete(keyId);
  const key = core.byId.get(keyId);
  if (!key) return;
  if (account !== undefined) core.book.setAccount(key, account);
  if (freeUsed !== undefined || freeLimit !== undefined) {
    const budget = core.book.freeBudget(key, core.now());
    // Seeds only raise what was counted here: requests sent since GET /key answered still count.
    if (freeUsed !== undefined) budget.used = Math.max(budget.used, freeUsed);
    if (freeLimit !== undefined) budget.limit = freeLimit;
  }
  if (keyLimit !== undefined) key.keyLimit = keyLimit;
  core.changed("decision");
}
