/**
 * What a 402 means, by cause, never by the status alone; and which 403s are the same money
 * answers (docs/openrouter.md, "402 and 403 by cause"). OpenRouter's own pages disagree on
 * whether a spending cap answers 402 or 403, so a cap is read the same from either. The first row
 * that matches decides; `reason` is read before `limit_source` (OpenRouter sends
 * `weight_exceeds_budget` with `limit_source: openrouter_credits`), and the message only when
 * the fields say nothing:
 *
 * | what the answer says                                         | cause            | what rests                               |
 * | ------------------------------------------------------------ | ---------------- | ---------------------------------------- |
 * | reason in_flight_budget_exhausted                            | in-flight        | the account's paid models, only until    |
 * |                                                              |                  |   the announced time (Retry-After)       |
 * | reason weight_exceeds_budget                                 | request-too-big  | nothing: the request's own               |
 * | limit_source openrouter_in_flight_budget                     | in-flight        | as above                                 |
 * | limit_source openrouter_key_limit (402 or 403)               | key-limit        | that key, paid models, until resets_at,  |
 * |                                                              |                  |   else its limit_reset, else an hour     |
 * | limit_source openrouter_workspace_budget (402 or 403)        | workspace-budget | the workspace's keys, paid, to resets_at |
 * | limit_source openrouter_guardrail_budget (402 or 403)        | guardrail-budget | that key, paid models, until resets_at   |
 * | any other 402 with Retry-After                               | in-flight        | as above                                 |
 * | unlabelled (or openrouter_credits): "in-flight requests"     | in-flight        | nothing without a Retry-After            |
 * | unlabelled (or openrouter_credits): "requires more credits,  | request-too-big  | nothing: the request's own               |
 * |   or fewer max_tokens", "can only afford", "would exceed"    |                  |                                          |
 * | unlabelled: "key limit exceeded", "budget limit exceeded"    | key-limit        | that key, as above (402 or 403)          |
 * | a 402 on a free model (the balance is negative)              | negative-balance | the account, every model                 |
 * | a 402 with limit_source openrouter_credits, or unlabelled    | credits          | the account, paid models                 |
 * | any other 403                                                | (none)           | not money: the status table decides      |
 *
 * The last two rests last until a background GET /key shows credits again, or a person clears
 * them. None of them counts as a failure of the key: money, not a broken key.
 */
import { classOfModel } from "../domain/model-class.ts";
import type { PaymentOutcome, SpendingCap } from "../domain/outcome.ts";

/** What of a 402's (or 403's) body decides its cause (policy.ts reads them from the body). */
export interface PaymentFacts {
  message?: string;
  limitSource?: string;
  reason?: string;
}

/** The instants the answer announced, already parsed (policy.ts parses every reset). */
export interface Announced {
  /** `Retry-After`. */
  retryAfter?: number;
  /** `resets_at`: when a spending cap resets. */
  resetsAt?: number;
}

/** An in-flight 402 whose announced wait is at most this long is retried as it is, after the wait. */
export const IN_FLIGHT_RETRY_WAIT_MS = 5_000;

const capsBySource = new Map<string, SpendingCap>([
  ["openrouter_key_limit", "key-limit"],
  ["openrouter_workspace_budget", "workspace-budget"],
  ["openrouter_guardrail_budget", "guardrail-budget"],
]);

/** OpenRouter's answer to a request whose `max_tokens` × price is more than the budget covers. */
const TOO_BIG = /requires more credits, or fewer max_tokens|can only afford|would exceed/i;
const IN_FLIGHT = /in-flight requests/i;
const CAP_WORDS = /key limit exceeded|budget limit exceeded/i;

/**
 * A 402 by cause, or what a 403 says about money: a spending cap, else undefined (a moderation,
 * guardrail or region refusal, which is the request's own).
 */
export function paymentOutcome(status: number, body: PaymentFacts, announced: Announced, model: string | undefined): PaymentOutcome | undefined {
  const { message, reason, limitSource } = body;
  const said = { status, ...(message === undefined ? {} : { message }) };
  const inFlight = (): PaymentOutcome =>
    announced.retryAfter === undefined ? { kind: "payment", cause: "in-flight", ...said } : { kind: "payment", cause: "in-flight", until: announced.retryAfter, source: "retry-after", ...said };
  const cap = (cause: SpendingCap): PaymentOutcome =>
    announced.resetsAt === undefined ? { kind: "payment", cause, ...said } : { kind: "payment", cause, until: announced.resetsAt, source: "resets_at", ...said };
  const capOfSource = limitSource === undefined ? undefined : capsBySource.get(limitSource);
  if (status === 403) {
    if (capOfSource !== undefined) return cap(capOfSource);
    return limitSource === undefined && CAP_WORDS.test(message ?? "") ? cap("key-limit") : undefined;
  }
  if (reason === "in_flight_budget_exhausted") return inFlight();
  if (reason === "weight_exceeds_budget") return { kind: "payment", cause: "request-too-big", ...said };
  if (limitSource === "openrouter_in_flight_budget") return inFlight();
  if (capOfSource !== undefined) return cap(capOfSource);
  if (announced.retryAfter !== undefined) return inFlight();
  const unlabelled = reason === undefined && (limitSource === undefined || limitSource === "openrouter_credits");
  if (unlabelled && IN_FLIGHT.test(message ?? "")) return inFlight();
  if (unlabelled && TOO_BIG.test(message ?? "")) return { kind: "payment", cause: "request-too-big", ...said };
  if (limitSource === undefined && CAP_WORDS.test(message ?? "")) return cap("key-limit");
  if (classOfModel(model) === "free") return { kind: "payment", cause: "negative-balance", ...said };
  return { kind: "payment", cause: "credits", ...said };
}
