/**
 * What the proxy knows about an OpenRouter account: OpenRouter counts free-model limits per
 * account, not per key (docs/openrouter.md, "Limits belong to the account"), so rests and the daily
 * free-model budget live here and apply to every key of the account at once.
 *
 * Keys whose account is unknown count as an account of their own (`key:<key id>`).
 */
import { RestCauses, type RestCause, type RestClass } from "../domain/model-class.ts";
import { utcDay } from "../domain/time-text.ts";
import { z } from "zod";

export interface AccountRest {
  /**
   * `account`: the whole account (for its class of models); `model`: one model on this account;
   * `key`: one key of the account (its own spending cap), the other keys keep serving.
   */
  scope: "account" | "model" | "key";
  modelClass: RestClass;
  model?: string;
  /** For `scope: "key"`: the key that rests. */
  keyId?: string;
  until: number;
  source: string;
  reason: string;
  cause?: RestCause;
  /**
   * The rest lasts until something is seen (credits back on GET /key), not until a known time:
   * `until` is only a horizon, and no Retry-After is derived from it.
   */
  untilCleared?: boolean;
}

export interface FreeBudget {
  /** The UTC day counted, YYYY-MM-DD. */
  day: string;
  used: number;
  /** The account's daily free-model limit, once known (50, or 1000 with credits). */
  limit?: number;
  /** When that limit was learned: the latest lesson wins (memory only, never written). */
  learnedAt?: number;
}

export interface AccountState {
  rests: AccountRest[];
  free?: FreeBudget;
}

export const accountIdOf = (key: { id: string; account?: string }): string => key.account ?? `key:${key.id}`;

export const utcDayOf = utcDay;

/** A copy the holder may change without touching the pool's (or the pool's without touching the caller's). */
export const copyAccounts = (accounts: ReadonlyMap<string, AccountState>): Map<string, AccountState> =>
  new Map([...accounts].map(([id, state]) => [id, { rests: [...state.rests], ...(state.free ? { free: { ...state.free } } : {}) }]));

const isoDate = z.iso.datetime({ offset: true });

export const AccountStateSchema = z.looseObject({
  rests: z
    .array(
      z.looseObject({
        scope: z.enum(["account", "model", "key"]),
        modelClass: z.enum(["all", "free", "paid"]),
        model: z.string().optional(),
        keyId: z.string().optional(),
        cause: z.enum(RestCauses).optional(),
        untilCleared: z.boolean().optional(),
        until: isoDate,
        source: z.string(),
        reason: z.string(),
      }),
    )
    .default([]),
  free: z.looseObject({ day: z.string(), used: z.number().int().min(0), limit: z.number().int().min(0).optional() }).optional(),
});

export const AccountsSchema = z.record(z.string(), AccountStateSchema);

export function accountsFromFile(raw: z.infer<typeof AccountsSchema> | undefined): Map<string, AccountState> {
  const accounts = new Map<string, AccountState>();
  for (const [id, state] of Object.entries(raw ?? {})) {
    accounts.set(id, {
      rests: state.rests.map((rest) => ({
        scope: rest.scope,
        modelClass: rest.modelClass,
        ...(rest.model === undefined ? {} : { model: rest.model }),
        ...(rest.keyId === undefined ? {} : { keyId: rest.keyId }),
        ...(rest.cause === undefined ? {} : { cause: rest.cause }),
        ...(rest.untilCleared ? { untilCleared: true } : {}),
        until: Date.parse(rest.until),
        source: rest.source,
        reason: rest.reason,
      })),
      ...(state.free ? { free: { day: state.free.day, used: state.free.used, ...(state.free.limit === undefined ? {} : { limit: state.free.limit }) } } : {}),
    });
  }
  return accounts;
}

/** For the file: rests that are over are dropped; a budget is kept while it is today's. */
export function accountsForFile(accounts: ReadonlyMap<string, AccountState>, now: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const today = utcDayOf(now);
  for (const [id, state] of accounts) {
    const rests = state.rests.filter((rest) => rest.until > now).map((rest) => ({ ...rest, until: new Date(rest.until).toISOString() }));
    const free = state.free && state.free.day === today ? { day: state.free.day, used: state.free.used, ...(state.free.limit === undefined ? {} : { limit: state.free.limit }) } : undefined;
    if (rests.length === 0 && !free) continue;
    out[id] = { rests, ...(free ? { free } : {}) };
  }
  return out;
}
