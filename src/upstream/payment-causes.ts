/**
 * What a 402 means, by cause, never by the status alone (docs/openrouter.md, "402 by
 * cause"). The first row that matches decides:
 *
 * | what the answer says                                               | cause            | what rests                         |
 * | ------------------------------------------------------------------ | ---------------- | ---------------------------------- |
 * | limit_source openrouter_in_flight_budget, reason                   | in-flight        | the account's paid models, only    |
 * |   in_flight_budget_exhausted, or any Retry-After                   |                  |   until the announced time         |
 * | reason weight_exceeds_budget, or "would exceed" in the message     | request-too-big  | nothing: the request's own         |
 * | limit_source openrouter_key_limit                                  | key-limit        | that key, paid models, to its reset|
 * | a free model (the balance is negative)                             | negative-balance | the account, every model           |
 * | limit_source openrouter_credits, or unlabelled                     | credits          | the account, paid models           |
 *
 * The last two last until a background GET /key shows credits again, or a person clears them.
 * None of them counts as a failure of the key: a 402 is about money, not a broken key.
 */
import { classOfModel } from "../domain/model-class.ts";
import type { PaymentOutcome } from "../domain/outcome.ts";

/** What of a 402's body decides its cause (policy.ts reads them from the body). */
export interface PaymentFacts {
  message?: string;
  limitSource?: string;
  reason?: string;
}

/** An in-flight 402 whose announced wait is at most this long is retried as it is, after the wait. */
export const IN_FLIGHT_RETRY_WAIT_MS = 5_000;

/** `announced`: the instant Retry-After names, already parsed (policy.ts parses every reset). */
export function paymentOutcome(body: PaymentFacts, announced: number | undefined, model: string | undefined): PaymentOutcome {
  const { message } = body;
  if (body.limitSource === "openrouter_in_flight_budget" || body.reason === "in_flight_budget_exhausted" || announced !== undefined) {
    return { kind: "payment", cause: "in-flight", until: announced, source: announced === undefined ? undefined : "retry-after", message };
  }
  if (body.reason === "weight_exceeds_budget" || /would exceed/i.test(message ?? "")) return { kind: "payment", cause: "request-too-big", message };
  if (body.limitSource === "openrouter_key_limit") return { kind: "payment", cause: "key-limit", message };
  if (classOfModel(model) === "free") return { kind: "payment", cause: "negative-balance", message };
  return { kind: "payment", cause: "credits", message };
}
