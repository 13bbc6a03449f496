/**
 * One request's memory between attempts: which keys and accounts it must not use again, which it
 * would rather not, and the one-time allowances (a shared-capacity wait, an in-flight wait, one
 * other account for a request too big for the first). `after` says what an answer means for the
 * next attempt; the forward loop does the sending.
 */
import type { AcquireOptions } from "../keys/key-pool.ts";
import { IN_FLIGHT_RETRY_WAIT_MS } from "./payment-causes.ts";
import type { Outcome } from "./policy.ts";

/** The one short wait before retrying a shared-capacity 429. */
const SHARED_CAPACITY_BACKOFF_MS = 1000;

export interface RetryPlanOptions {
  now: () => number;
  /** Waits `ms` unless the request ends first. */
  wait: (ms: number) => Promise<void>;
  /** The growing pause after an upstream fault. */
  backoff: () => Promise<void>;
}

export interface RetryPlan {
  /** Acquire options for the next attempt. */
  options(model: string | undefined, prefer: string | undefined): AcquireOptions;
  /** A key that failed for reasons not its own (a fault, a broken answer): others first. */
  avoidKey(keyId: string): void;
  /** After an answer that did not serve: retry or stop (answer with it). */
  after(outcome: Outcome, lease: { keyId: string; account: string }): Promise<"retry" | "stop">;
}

/**
 * The upstream's last answer is the one to give when nothing else can serve, rather than a proxy
 * 429: a 402 or a privacy 404 (waiting does not help), and a 429 that announced no reset (a proxy
 * 429 would have to invent a Retry-After, and the client's SDK would sleep on that guess).
 */
export function answerStands(outcome: Outcome): boolean {
  return outcome.kind === "payment" || outcome.kind === "privacy" || (outcome.kind === "rate-limited" && outcome.source === "default");
}

export function createRetryPlan({ now, wait, backoff }: RetryPlanOptions): RetryPlan {
  // Made on the first retry: most requests never need them.
  let exclude: Set<string> | undefined;
  let avoid: Set<string> | undefined;
  let excludeAccounts: Set<string> | undefined;
  let sharedCapacityWaited = false;
  let inFlightWaited = false;
  let otherAccountTried = false;
  const avoidKey = (keyId: string) => void (avoid ??= new Set()).add(keyId);
  const excludeKey = (keyId: string) => void (exclude ??= new Set()).add(keyId);
  const excludeAccount = (account: string) => void (excludeAccounts ??= new Set()).add(account);

  return {
    options: (model, prefer) => ({
      ...(exclude ? { exclude } : {}),
      ...(avoid ? { avoid } : {}),
      ...(excludeAccounts ? { excludeAccounts } : {}),
      ...(model === undefined ? {} : { model }),
      ...(prefer === undefined ? {} : { prefer }),
    }),
    avoidKey,
    async after(outcome, { keyId, account }) {
      switch (outcome.kind) {
        case "request-error":
        case "ok":
          return "stop"; // the request's own fault: no retry, as it came
        case "upstream-error":
          avoidKey(keyId);
          await backoff();
          return "retry";
        case "shared-capacity":
          // Another key cannot help; waiting a moment might. One short wait and one retry at most.
          if (sharedCapacityWaited) return "stop";
          sharedCapacityWaited = true;
          avoidKey(keyId);
          await wait(Math.min(SHARED_CAPACITY_BACKOFF_MS, Math.max(0, outcome.until - now())));
          return "retry";
        case "rate-limited":
        case "key-failure":
          excludeKey(keyId); // rate-limited or a bad key: never again for this request
          return "retry";
        case "privacy":
          excludeAccount(account); // another account's data policy may allow the model
          return "retry";
        case "payment":
          switch (outcome.cause) {
            case "in-flight": {
              // Credits held by requests in flight: a short announced wait, and the same request goes again.
              const waitMs = outcome.until === undefined ? Infinity : Math.max(0, outcome.until - now());
              if (!inFlightWaited && waitMs <= IN_FLIGHT_RETRY_WAIT_MS) {
                inFlightWaited = true;
                await wait(waitMs);
                return "retry";
              }
              excludeAccount(account);
              return "retry";
            }
            case "request-too-big":
              // The request asks more than this account can cover: one other account may, no more.
              if (otherAccountTried) return "stop";
              otherAccountTried = true;
              excludeAccount(account);
              return "retry";
            case "key-limit":
              excludeKey(keyId);
              return "retry";
            case "credits":
            case "negative-balance":
              excludeAccount(account);
              return "retry";
          }
      }
    },
  };
}
