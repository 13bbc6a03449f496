/** How a key is shown to people (CLI, admin API): its id and masked form, never the key. */
import { maskKey } from "../domain/key-identity.ts";
import { accountIdOf, utcDayOf, type AccountState } from "./account-state.ts";
import type { RestClass } from "../domain/model-class.ts";
import { endOf, keyStatus, type Hold, type KeyState, type KeyStatus } from "./key-status.ts";
import { restTarget } from "./rests.ts";
import type { KeyRecord } from "./schema.ts";

export interface KeyView {
  id: string;
  label: string | null;
  /** The OpenRouter account (creator_user_id) the key belongs to; null while unknown. */
  account: string | null;
  masked: string;
  status: KeyState;
  /**
   * For `limited` and `resting`: what the key cannot serve now and until when, one phrase each
   * ("free models until 2026-11-26T00:00:00.000Z (daily free limit used up)"); empty otherwise.
   */
  limits: string[];
  /** For `resting`: when it first serves something again; null while it waits on credits, or not resting. */
  restingUntil: string | null;
  cooldownUntil: string | null;
  cooldownReason: string | null;
  consecutiveFailures: number;
  disabledReason: string | null;
  disabledAt: string | null;
  lastUsedAt: string | null;
  addedAt: string;
  requests: number;
  successes: number;
  failures: number;
}

const iso = (ms: number | undefined): string | null => (ms ? new Date(ms).toISOString() : null);

export function viewKey(record: KeyRecord, accounts: ReadonlyMap<string, AccountState>, now: number): KeyView {
  const status = keyStatus(record, accounts, now);
  const cooling = status.state === "cooling";
  return {
    id: record.id,
    label: record.label ?? null,
    account: record.account ?? null,
    masked: maskKey(record.secret),
    status: status.state,
    limits: describeHolds(status, now),
    restingUntil: status.state === "resting" && Number.isFinite(status.until) ? new Date(status.until).toISOString() : null,
    cooldownUntil: cooling ? iso(record.cooldownUntil) : null,
    cooldownReason: cooling ? (record.cooldownReason ?? null) : null,
    consecutiveFailures: record.consecutiveFailures,
    disabledReason: record.disabled?.reason ?? null,
    disabledAt: iso(record.disabled?.at),
    lastUsedAt: iso(record.lastUsedAt),
    addedAt: iso(record.addedAt) ?? new Date(0).toISOString(),
    requests: record.requests,
    successes: record.successes,
    failures: record.failures,
  };
}

function describeHold(what: string, hold: Hold, now: number): string {
  const causes = new Set<string>(hold.rests.map((rest) => rest.cause ?? "rate-limit"));
  if (hold.budget) causes.add("daily free limit used up");
  const refused = hold.unpaid || hold.budget || hold.until > 0;
  const when = hold.unpaid ? "until credits return" : refused ? `until ${new Date(endOf(hold, now)).toISOString()}` : `tried last until ${new Date(hold.soft).toISOString()}`;
  return `${what} ${when} (${[...causes].join(", ")})`;
}

/** What a limited or resting key cannot serve now, one phrase each. */
export function describeHolds(status: KeyStatus, now: number): string[] {
  if (status.state !== "limited" && status.state !== "resting") return [];
  const phrases: string[] = [];
  if (status.free) phrases.push(describeHold("free models", status.free, now));
  if (status.paid) phrases.push(describeHold("paid models", status.paid, now));
  for (const [model, hold] of status.models ?? []) phrases.push(describeHold(`model ${model}`, hold, now));
  return phrases;
}

/** One human line of status: "active", "limited: …", "resting: …", "cooling down until …", "disabled: why". */
export function describeStatus(view: KeyView): string {
  switch (view.status) {
    case "active":
      return "active";
    case "limited":
    case "resting":
      return `${view.status}: ${view.limits.join("; ")}`;
    case "cooling":
      return `cooling down until ${view.cooldownUntil}${view.cooldownReason ? ` (${view.cooldownReason})` : ""}`;
    case "disabled":
      return `disabled: ${view.disabledReason ?? "no reason recorded"}`;
  }
}

/**
 * A word a person typed where a command or a key id belongs, fit to echo back in an error. People
 * paste keys into the wrong place (`remove-key sk-or-v1-…`, `DELETE /admin/keys/sk-or-v1-…`), and
 * an error must not print the key in full: anything longer than an id, or shaped like a key, is
 * shown masked.
 */
export function echoInput(word: string): string {
  return word.length > 24 || /^sk-/i.test(word) ? maskKey(word) : word;
}

export interface AccountView {
  /** The account id, or `key:<key id>` for a key whose account is not known. */
  id: string;
  keyIds: string[];
  /** Free-model requests sent on this account today (UTC), and its daily limit once known. */
  freeRequestsToday: number;
  freeLimit: number | null;
  /** Rests in force: the whole account (for free, paid or all models) or one model on it. */
  rests: RestView[];
}

/** A rest in force, for people: `cause` says why (a 402's cause, a 429's limit, a privacy 404). */
export interface RestView {
  scope: "account" | "model" | "key";
  modelClass: string;
  model: string | null;
  /** For `scope: "key"`: the key that rests (its own spending cap); the account's other keys serve. */
  keyId: string | null;
  until: string;
  /** True: it lasts until credits are seen again (GET /key) or a person clears it; `until` is only a horizon. */
  untilCleared: boolean;
  cause: string;
  source: string;
  reason: string;
}

export function viewAccounts(records: readonly KeyRecord[], accounts: ReadonlyMap<string, AccountState>, now: number): AccountView[] {
  const views = new Map<string, AccountView>();
  const today = utcDayOf(now);
  for (const record of records) {
    const id = accountIdOf(record);
    let view = views.get(id);
    if (!view) {
      const state = accounts.get(id);
      view = {
        id,
        keyIds: [],
        freeRequestsToday: state?.free?.day === today ? state.free.used : 0,
        freeLimit: state?.free?.limit ?? null,
        rests: (state?.rests ?? [])
          .filter((rest) => rest.until > now)
          .map((rest) => ({
            scope: rest.scope,
            modelClass: rest.modelClass,
            model: rest.model ?? null,
            keyId: rest.keyId ?? null,
            until: new Date(rest.until).toISOString(),
            untilCleared: rest.untilCleared === true,
            cause: rest.cause ?? "rate-limit",
            source: rest.source,
            reason: rest.reason,
          })),
      };
      views.set(id, view);
    }
    view.keyIds.push(record.id);
  }
  return [...views.values()];
}

/**
 * "free models until 2026-11-26T00:00:00.000Z (free-per-day: Rate limit exceeded: free-models-per-day)",
 * "paid models until credits return (credits: Insufficient credits…)".
 */
export function describeRest(rest: RestView): string {
  const when = rest.untilCleared ? "until credits return" : `until ${rest.until}`;
  return `${restTarget({ scope: rest.scope, modelClass: rest.modelClass as RestClass, ...(rest.model ? { model: rest.model } : {}), ...(rest.keyId ? { keyId: rest.keyId } : {}) })} ${when} (${rest.cause}: ${rest.reason})`;
}
