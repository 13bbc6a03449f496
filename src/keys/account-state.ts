/**
 * What the proxy knows about an OpenRouter account: OpenRouter counts free-model limits per
 * account, not per key (docs/openrouter.md, "Limits belong to the account"), so rests and the daily
 * free-model budget live here and apply to every key of the account at once.
 *
 * Keys whose account is unknown count as an account of their own (`key:<key id>`).
 */
import type { RestCause, RestClass } from "../domain/model-class.ts";
import { utcDay } from "../domain/time-text.ts";

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
