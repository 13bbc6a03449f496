/**
 * One request's memory between attempts: which keys and accounts it must not use again, which it
 * would rather not, and the one-time allowances (a shared-capacity wait, an in-flight wait, one
 * other account for a request too big for the first). `after` says what an answer means for the
 * next attempt, as a value (retry or not, and the wait before it); the request run does the
 * waiting and the sending.
 */
import type { AcquireOptions } from "../keys/key-pool.ts";
import { IN_FLIGHT_RETRY_WAIT_MS } from "./payment-causes.ts";
import { spendingCaps, type Outcome } from "../domain/outcome.ts";

/** The one short wait before retrying a shared-capacity 429. */
const SHARED_CAPACITY_BACKOFF_MS = 1000;

/**
 * The upstream's last answer is the one to give when nothing else can serve, rather than a proxy
 * 429: a 402 or a privacy 404 (waiting does not help), and a 429 that announced no reset (a proxy
 * 429 would have to invent a Retry-After, and the client's SDK would sleep on that guess). Not a
 * spending cap: when every key rests on one, the proxy's own 402 says when the first resets.
 */
export function answerStands(outcome: Outcome): boolean {
  if (outcome.kind === "payment") return !spendingCaps.has(outcome.cause);
  return outcome.kind === "privacy" || (outcome.kind === "rate-limited" && outcome.source === "default");
}

/** What to do after an answer that did not serve: try again (after `waitMs`), or stop and answer with it. */
export interface RetryDecision {
  readonly retry: boolean;
  /** How long to wait first, if another attempt follows (0: at once). */
  readonly waitMs: number;
}

const STOP: RetryDecision = { retry: false, waitMs: 0 };
const AT_ONCE: RetryDecision = { retry: true, waitMs: 0 };
const after = (waitMs: number): RetryDecision => (waitMs > 0 ? { retry: true, waitMs } : AT_ONCE);

/** A class, not a closure per request: one exists per request, tens of thousands a second. */
export class RetryPlan {
  /** The acquire options, one object for the request's every acquire: the pool only reads them. */
  private readonly acquire: AcquireOptions;
  // Made on the first retry: most requests never need them.
  private exclude: Set<string> | undefined;
  private avoid: Set<string> | undefined;
  private excludeAccounts: Set<string> | undefined;
  private upstreamFaults = 0;
  private sharedCapacityWaited = false;
  private inFlightWaited = false;
  private otherAccountTried = false;

  /** `retryBackoffMs`: the pause after the first upstream fault; it doubles with each one after. */
  constructor(
    model: string | undefined,
    private readonly retryBackoffMs: number,
  ) {
    this.acquire = { model, prefer: undefined, exclude: undefined, avoid: undefined, excludeAccounts: undefined };
  }

  /** Acquire options for the next attempt. */
  options(prefer: string | undefined): AcquireOptions {
    const options = this.acquire;
    options.prefer = prefer;
    options.exclude = this.exclude;
    options.avoid = this.avoid;
    options.excludeAccounts = this.excludeAccounts;
    return options;
  }

  /** A key that failed for reasons not its own (a fault, a broken answer): others first. */
  private avoidKey(keyId: string): void {
    (this.avoid ??= new Set()).add(keyId);
  }

  private excludeKey(keyId: string): void {
    (this.exclude ??= new Set()).add(keyId);
  }

  private excludeAccount(account: string): void {
    (this.excludeAccounts ??= new Set()).add(account);
  }

  /** After an answer that did not serve (or a key refused before sending): retry, and after what wait, or stop. */
  after(outcome: Outcome, { keyId, account }: { keyId: string; account: string }, now: number): RetryDecision {
    switch (outcome.kind) {
      case "request-error":
      case "ok":
        return STOP; // the request's own fault: no retry, as it came
      case "upstream-error":
        this.avoidKey(keyId);
        this.upstreamFaults++;
        return after(this.retryBackoffMs * 2 ** (this.upstreamFaults - 1));
      case "shared-capacity":
        // Another key cannot help; waiting a moment might. One short wait and one retry at most.
        if (this.sharedCapacityWaited) return STOP;
        this.sharedCapacityWaited = true;
        this.avoidKey(keyId);
        return after(Math.min(SHARED_CAPACITY_BACKOFF_MS, Math.max(0, outcome.until - now)));
      case "rate-limited":
      case "key-failure":
        this.excludeKey(keyId); // rate-limited or a bad key: never again for this request
        return AT_ONCE;
      case "privacy":
        this.excludeAccount(account); // another account's data policy may allow the model
        return AT_ONCE;
      case "payment":
        switch (outcome.cause) {
          case "in-flight": {
            // Credits held by requests in flight: a short announced wait, and the same request goes again.
            const waitMs = outcome.until === undefined ? Infinity : Math.max(0, outcome.until - now);
            if (!this.inFlightWaited && waitMs <= IN_FLIGHT_RETRY_WAIT_MS) {
              this.inFlightWaited = true;
              return after(waitMs);
            }
            this.excludeAccount(account);
            return AT_ONCE;
          }
          case "request-too-big":
            // The request asks more than this account can cover: one other account may, no more.
            if (this.otherAccountTried) return STOP;
            this.otherAccountTried = true;
            this.excludeAccount(account);
            return AT_ONCE;
          case "key-limit":
          case "workspace-budget":
          case "guardrail-budget":
            this.excludeKey(keyId); // that key rests: another key (of any account) may serve
            return AT_ONCE;
          case "credits":
          case "negative-balance":
            this.excludeAccount(account);
            return AT_ONCE;
        }
    }
  }
}
