/**
 * One request's memory between attempts: which keys and accounts it must not use again, which it
 * would rather not, and the one-time allowances (a shared-capacity wait, an in-flight wait, one
 * other account for a request too big for the first). `after` says what an answer means for the
 * next attempt; the forward loop does the sending.
 */
import type { AcquireOptions } from "../keys/key-pool.ts";
import { IN_FLIGHT_RETRY_WAIT_MS } from "./payment-causes.ts";
import type { Outcome } from "../domain/outcome.ts";

/** The one short wait before retrying a shared-capacity 429. */
const SHARED_CAPACITY_BACKOFF_MS = 1000;

/**
 * The upstream's last answer is the one to give when nothing else can serve, rather than a proxy
 * 429: a 402 or a privacy 404 (waiting does not help), and a 429 that announced no reset (a proxy
 * 429 would have to invent a Retry-After, and the client's SDK would sleep on that guess).
 */
export function answerStands(outcome: Outcome): boolean {
  return outcome.kind === "payment" || outcome.kind === "privacy" || (outcome.kind === "rate-limited" && outcome.source === "default");
}

/** What the plan needs from the request it serves (the request run implements it). */
export interface RetryHost {
  now(): number;
  /** Waits `ms` unless the request ends first. */
  wait(ms: number): Promise<void>;
  /** The growing pause after an upstream fault. */
  backoff(): Promise<void>;
}

/** A class, not a closure per request: one exists per request, tens of thousands a second. */
export class RetryPlan {
  // Made on the first retry: most requests never need them.
  private exclude: Set<string> | undefined;
  private avoid: Set<string> | undefined;
  private excludeAccounts: Set<string> | undefined;
  private sharedCapacityWaited = false;
  private inFlightWaited = false;
  private otherAccountTried = false;

  constructor(private readonly host: RetryHost) {}

  /** Acquire options for the next attempt. */
  options(model: string | undefined, prefer: string | undefined): AcquireOptions {
    const options: AcquireOptions = {};
    if (this.exclude) options.exclude = this.exclude;
    if (this.avoid) options.avoid = this.avoid;
    if (this.excludeAccounts) options.excludeAccounts = this.excludeAccounts;
    if (model !== undefined) options.model = model;
    if (prefer !== undefined) options.prefer = prefer;
    return options;
  }

  /** A key that failed for reasons not its own (a fault, a broken answer): others first. */
  avoidKey(keyId: string): void {
    (this.avoid ??= new Set()).add(keyId);
  }

  private excludeKey(keyId: string): void {
    (this.exclude ??= new Set()).add(keyId);
  }

  private excludeAccount(account: string): void {
    (this.excludeAccounts ??= new Set()).add(account);
  }

  /** After an answer that did not serve: retry or stop (answer with it). */
  async after(outcome: Outcome, { keyId, account }: { keyId: string; account: string }): Promise<"retry" | "stop"> {
    switch (outcome.kind) {
      case "request-error":
      case "ok":
        return "stop"; // the request's own fault: no retry, as it came
      case "upstream-error":
        this.avoidKey(keyId);
        await this.host.backoff();
        return "retry";
      case "shared-capacity":
        // Another key cannot help; waiting a moment might. One short wait and one retry at most.
        if (this.sharedCapacityWaited) return "stop";
        this.sharedCapacityWaited = true;
        this.avoidKey(keyId);
        await this.host.wait(Math.min(SHARED_CAPACITY_BACKOFF_MS, Math.max(0, outcome.until - this.host.now())));
        return "retry";
      case "rate-limited":
      case "key-failure":
        this.excludeKey(keyId); // rate-limited or a bad key: never again for this request
        return "retry";
      case "privacy":
        this.excludeAccount(account); // another account's data policy may allow the model
        return "retry";
      case "payment":
        switch (outcome.cause) {
          case "in-flight": {
            // Credits held by requests in flight: a short announced wait, and the same request goes again.
            const waitMs = outcome.until === undefined ? Infinity : Math.max(0, outcome.until - this.host.now());
            if (!this.inFlightWaited && waitMs <= IN_FLIGHT_RETRY_WAIT_MS) {
              this.inFlightWaited = true;
              await this.host.wait(waitMs);
              return "retry";
            }
            this.excludeAccount(account);
            return "retry";
          }
          case "request-too-big":
            // The request asks more than this account can cover: one other account may, no more.
            if (this.otherAccountTried) return "stop";
            this.otherAccountTried = true;
            this.excludeAccount(account);
            return "retry";
          case "key-limit":
            this.excludeKey(keyId);
            return "retry";
          case "credits":
          case "negative-balance":
            this.excludeAccount(account);
            return "retry";
        }
    }
  }
}
