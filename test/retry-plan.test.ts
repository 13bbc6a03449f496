/**
 * The retry plan is a value: after an answer that did not serve, `after` says whether another
 * attempt follows and how long to wait before it; the request run does the waiting. What each
 * outcome excludes from the next acquire is read back through `options`.
 */
import { describe, expect, test } from "bun:test";
import type { Outcome } from "../src/domain/outcome.ts";
import { RetryPlan } from "../src/upstream/retry-plan.ts";

const now = Date.UTC(2026, 2, 1, 10);
const lease = { keyId: "k_a", account: "user_A" };
const BACKOFF_MS = 40;

describe("the retry plan is a value: { retry, waitMs } for each outcome", () => {
  test.each<[string, Outcome, { retry: boolean; waitMs: number }]>([
    ["the request's own error: stop", { kind: "request-error" }, { retry: false, waitMs: 0 }],
    ["an upstream fault: retry after the backoff", { kind: "upstream-error", reason: "upstream answered 502" }, { retry: true, waitMs: BACKOFF_MS }],
    ["a key's 429: retry at once", { kind: "rate-limited", scope: "key", modelClass: "all", until: now + 60_000, source: "header" }, { retry: true, waitMs: 0 }],
    ["a bad key: retry at once", { kind: "key-failure", reason: "upstream answered 401" }, { retry: true, waitMs: 0 }],
    ["shared capacity: retry after a short wait, at most 1 s", { kind: "shared-capacity", until: now + 20_000, source: "header" }, { retry: true, waitMs: 1000 }],
    ["shared capacity ending sooner: retry when it ends", { kind: "shared-capacity", until: now + 300, source: "header" }, { retry: true, waitMs: 300 }],
    ["an in-flight 402 with a short announced wait: retry after it", { kind: "payment", cause: "in-flight", until: now + 2000, source: "retry-after" }, { retry: true, waitMs: 2000 }],
    ["an in-flight 402 with a long wait: another account at once", { kind: "payment", cause: "in-flight", until: now + 60_000, source: "retry-after" }, { retry: true, waitMs: 0 }],
    ["out of credits: another account at once", { kind: "payment", cause: "credits" }, { retry: true, waitMs: 0 }],
    ["a privacy 404: another account at once", { kind: "privacy", model: "x/y", until: now + 3_600_000 }, { retry: true, waitMs: 0 }],
  ])("%s", (_name, outcome, decision) => {
    expect(new RetryPlan("x/y", BACKOFF_MS).after(outcome, lease, now)).toEqual(decision);
  });

  test("upstream faults back off twice as long each time", () => {
    const plan = new RetryPlan(undefined, BACKOFF_MS);
    const fault: Outcome = { kind: "upstream-error", reason: "upstream answered 503" };
    expect([1, 2, 3].map(() => plan.after(fault, lease, now).waitMs)).toEqual([40, 80, 160]);
    expect(new RetryPlan(undefined, 0).after(fault, lease, now)).toEqual({ retry: true, waitMs: 0 });
  });

  test("the one-time allowances: a second shared-capacity answer and a second request too big stop", () => {
    const plan = new RetryPlan(undefined, BACKOFF_MS);
    const capacity: Outcome = { kind: "shared-capacity", until: now + 500, source: "header" };
    expect(plan.after(capacity, lease, now).retry).toBe(true);
    expect(plan.after(capacity, lease, now)).toEqual({ retry: false, waitMs: 0 });
    const tooBig: Outcome = { kind: "payment", cause: "request-too-big" };
    expect(plan.after(tooBig, lease, now).retry).toBe(true);
    expect(plan.after(tooBig, { keyId: "k_b", account: "user_B" }, now)).toEqual({ retry: false, waitMs: 0 });
  });

  test.each(["key-limit", "workspace-budget", "guardrail-budget"] as const)("a spending cap (%s) rules out that key only, and another key of the same account may serve at once", (cause) => {
    const plan = new RetryPlan("x/y", BACKOFF_MS);
    expect(plan.after({ kind: "payment", cause, until: now + 3_600_000, source: "resets_at", status: 403 }, lease, now)).toEqual({ retry: true, waitMs: 0 });
    const options = plan.options(undefined);
    expect([...(options.exclude ?? [])]).toEqual(["k_a"]);
    expect(options.excludeAccounts).toBeUndefined();
  });

  test("what a decision rules out reaches the next acquire: the key, the account, or only a preference", () => {
    const plan = new RetryPlan("x/y", BACKOFF_MS);
    plan.after({ kind: "key-failure", reason: "401" }, { keyId: "k_bad", account: "user_A" }, now);
    plan.after({ kind: "payment", cause: "credits" }, { keyId: "k_b", account: "user_B" }, now);
    plan.after({ kind: "upstream-error", reason: "502" }, { keyId: "k_c", account: "user_C" }, now);
    const options = plan.options("k_pinned");
    expect(options.model).toBe("x/y");
    expect(options.prefer).toBe("k_pinned");
    expect([...(options.exclude ?? [])]).toEqual(["k_bad"]);
    expect([...(options.excludeAccounts ?? [])]).toEqual(["user_B"]);
    expect([...(options.avoid ?? [])]).toEqual(["k_c"]);
  });
});
