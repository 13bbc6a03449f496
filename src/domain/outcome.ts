/**
 * What an upstream answer means for the key that carried it: upstream/policy.ts decides it, the
 * key pool applies it, the event log names its reset source. A leaf shared by all three, so the
 * pool need not import the upstream code that produces it.
 */
import type { RestCause, RestClass } from "./model-class.ts";

/** Where a reset time came from: a rate-limit header, the error body, Retry-After, or the default wait. */
export type ResetSource = "header" | "body" | "retry-after" | "default";

export type PaymentCause = "in-flight" | "request-too-big" | SpendingCap | "credits" | "negative-balance";

/** A budget OpenRouter enforces on one key (its own cap, its workspace's budget, a guardrail's): it rests, it is not broken. */
export type SpendingCap = "key-limit" | "workspace-budget" | "guardrail-budget";
export const spendingCaps: ReadonlySet<string> = new Set<SpendingCap>(["key-limit", "workspace-budget", "guardrail-budget"]);

/** A 402 (or a 403 on a spending cap), by cause (upstream/payment-causes.ts decides which). */
export interface PaymentOutcome {
  kind: "payment";
  cause: PaymentCause;
  /**
   * In flight: when the announced wait ends (Retry-After). A spending cap: when it resets
   * (`resets_at`). Absent when the answer announced none.
   */
  until?: number;
  source?: "retry-after" | "resets_at";
  /** The status the answer came with (402, or 403 for a cap). */
  status?: number;
  message?: string;
}

export type Outcome =
  /** Served. `exhausted` is set when the headers say nothing remains until a reset. */
  | { kind: "ok"; exhausted?: { until: number; source: ResetSource } }
  /**
   * 429: something rests until `until`, then another key (or account) is tried. `scope` says what
   * rests: the key (the core rule), its whole account (OpenRouter's free-model limits are per
   * account), or one model on the account (a provider's own limit); `modelClass` which requests.
   */
  | {
      kind: "rate-limited";
      scope: "key" | "account" | "model";
      modelClass: RestClass;
      model?: string;
      until: number;
      source: ResetSource;
      message?: string;
      /** Which limit this is, for views and for what enable-key may clear; a key's own 429 has none. */
      cause?: RestCause;
      /** The account's daily free-model limit, when this 429 says it is used up. */
      dailyLimit?: number;
    }
  /** A popular free model is out of shared capacity for everyone: no key is to blame. */
  | { kind: "shared-capacity"; until: number; source: ResetSource; message?: string }
  /** The key itself is bad (invalid, expired): a consecutive failure is counted. */
  | { kind: "key-failure"; reason: string }
  /** 402, by cause: never a failure of the key. */
  | PaymentOutcome
  /**
   * 404 "No endpoints found matching your data policy": this account's privacy settings exclude
   * every provider of the model. That model rests on this account; another account may serve it.
   */
  | { kind: "privacy"; model?: string; until: number; message?: string }
  /** The request's own fault: passed back as it came, the key is not marked. */
  | { kind: "request-error" }
  /** OpenRouter or a provider failed (5xx, 408, connection): retried, the key is not blamed. */
  | { kind: "upstream-error"; reason: string };
