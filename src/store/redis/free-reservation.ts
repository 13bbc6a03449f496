/**
 * Free-model requests reserve their slot in Redis before they are sent: one script checks the
 * account's daily count against its known limit and counts the request, so N instances never
 * send an account more free requests than its limit. The request run asks for every key the pool
 * hands it (`Reserve`, upstream/forward-types.ts): a paid request is answered at once and never
 * waits on Redis; a free one waits for one script call at most (the connection's timeout).
 *
 * - granted: the request goes upstream on that key;
 * - refused: the account's day is used up (elsewhere: this pool's count is behind). The answer is
 *   the outcome OpenRouter's own free-models-per-day 429 has (policy.ts), with the limit Redis
 *   holds and the reset at 00:00 UTC: the run reports it (the account's free class rests) and
 *   tries another key. Nothing is sent upstream for it;
 * - Redis away (timeout, breaker open): granted, as without Redis, and the request is counted for
 *   the day once Redis is back (the change writer's counter batch).
 */
import { classOfModel } from "../../domain/model-class.ts";
import type { Outcome } from "../../domain/outcome.ts";
import { nextUtcMidnight } from "../../domain/time-text.ts";
import { utcDayOf } from "../../keys/account-state.ts";
import type { KeyLease, KeyPool } from "../../keys/key-pool.ts";
import type { Reserve } from "../../upstream/forward-types.ts";
import { freeDayUsedUp } from "../../upstream/policy.ts";
import type { SharedState } from "./shared-state.ts";

export function freeSlotReserve({ pool, shared, now }: { pool: KeyPool; shared: SharedState; now: () => number }): Reserve {
  const reserve = async ({ account }: KeyLease, at: number): Promise<Outcome | undefined> => {
    const day = utcDayOf(at);
    const free = pool.accounts().get(account)?.free;
    const slot = await shared.scripts.reserveFreeSlot({ account, day, knownLimit: free?.day === day ? free.limit : undefined });
    if (!slot.ok) {
      shared.writer.record({ kind: "free-requests", account, day, delta: 1 });
      return undefined;
    }
    if (slot.value.granted) return undefined;
    const limit = slot.value.limit ?? slot.value.used;
    // The reset is the one OpenRouter documents for this limit (00:00 UTC), as its 429 announces it.
    return freeDayUsedUp({ until: nextUtcMidnight(at), source: "header" }, `free-model slot refused: the account's ${limit} free requests for ${day} are used up (counted in Redis across the instances)`, limit);
  };
  return (lease, model) => (classOfModel(model) === "free" ? reserve(lease, now()) : undefined);
}
