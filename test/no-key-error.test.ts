/** The proxy's own answers when no key can take a request say when keys return, in plain time. */
import { describe, expect, test } from "bun:test";
import { noKeyError } from "../src/upstream/no-key-error.ts";

describe("the free-model limit's answer", () => {
  const now = Date.now();
  const messageAt = (untilReset: number): string =>
    noKeyError({ ok: false, reason: "free-budget-exhausted", accounts: 2, resetAt: now + untilReset, total: 3 }, now).message;

  test.each([
    [11 * 3_600_000 + 59 * 60_000 + 30_000, "in 12 h 0 min"],
    [59 * 60_000 + 1_000, "in 1 h 0 min"],
    [2 * 3_600_000 + 5 * 60_000, "in 2 h 5 min"],
    [1_000, "in 0 h 1 min"],
  ])("the wait is rounded up to whole minutes once, never '60 min' (%d ms to the reset: %s)", (untilReset, said) => {
    expect(messageAt(untilReset)).toContain(said);
    expect(messageAt(untilReset)).not.toContain("60 min");
  });
});
