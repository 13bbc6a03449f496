/**
 * The merge rules of two servers on one keys file (file-merge.ts), as pure functions: what a save
 * writes over what another server wrote, and what the pool adopts from it.
 */
import { describe, expect, test } from "bun:test";
import type { AccountState } from "../src/keys/account-state.ts";
import { accountsWithBase, countsOf, mergeAccounts, mergeAccountsForSave, mergeKey, mergeKeysForSave } from "../src/keys/file-merge.ts";
import { newKeyRecord, type KeyRecord } from "../src/keys/schema.ts";
import { utcDayOf } from "../src/keys/account-state.ts";

/** The real clock: the code under test dates Redis keys by today, so the tests must too. */
const T = Date.now();
const DAY = utcDayOf(T);
const key = (changes: Partial<KeyRecord> = {}): KeyRecord => ({ ...newKeyRecord("sk-or-v1-file-merge-test-key-aaaaaaaaaaaaaaaa", T - 60_000, "a"), ...changes });
const counts = (requests: number, successes = requests, failures = 0) => ({ requests, successes, failures });
const rest = (until: number, reason = "429"): AccountState["rests"][number] => ({ scope: "account", modelClass: "free", until, source: "header", reason });

describe("keys: instants by max, counters by deltas, a person's reset wins", () => {
  test("a save keeps the other server's cooldown when its own is shorter or none", () => {
    const theirs = key({ cooldownUntil: T + 60_000, cooldownSource: "header", cooldownReason: "their 429" });
    const merged = mergeKey(theirs, key({ cooldownUntil: T + 5_000, cooldownSource: "default", cooldownReason: "mine" }));
    expect([merged.cooldownUntil, merged.cooldownSource, merged.cooldownReason]).toEqual([T + 60_000, "header", "their 429"]);
    const longer = mergeKey(theirs, key({ cooldownUntil: T + 120_000, cooldownSource: "retry-after", cooldownReason: "mine" }));
    expect([longer.cooldownUntil, longer.cooldownSource]).toEqual([T + 120_000, "retry-after"]);
  });

  test("counters add this server's delta since its base to the file's totals, never overwrite them", () => {
    // The file counted 10 (another server added 4 to the 6 we read); we counted 3 beyond our 6.
    const theirs = key({ ...counts(10, 9, 1) });
    const mine = key({ ...counts(9, 8, 1), synced: counts(6, 5, 1) });
    const [written] = mergeKeysForSave([theirs], [mine]);
    expect(written && countsOf(written)).toEqual(counts(13, 12, 1));
    expect(written?.synced).toEqual(counts(13, 12, 1));
  });

  test("a file total older than the base (an editor saving what it loaded earlier) loses none of ours", () => {
    const merged = mergeKey(key({ ...counts(2) }), key({ ...counts(9), synced: counts(6) }));
    expect(merged.requests).toBe(9);
  });

  test("another server's disable is kept; a person's reset (enable-key) wins over either server's cooldown and disable", () => {
    const disabled = { reason: "5 consecutive failures", at: T };
    expect(mergeKey(key({ disabled }), key()).disabled).toEqual(disabled);
    const enabled = key({ resetAt: T + 1_000, ...counts(4), synced: counts(4) });
    const mine = key({ disabled, cooldownUntil: T + 60_000, cooldownSource: "header", consecutiveFailures: 5, ...counts(7), synced: counts(4) });
    const merged = mergeKey(enabled, mine);
    expect(merged.disabled).toBeUndefined();
    expect(merged.cooldownUntil).toBe(0);
    expect(merged.consecutiveFailures).toBe(0);
    expect(merged.requests).toBe(7); // counters are not a decision: they still add up
  });

  test("the stored list decides which keys exist; labels are the file's", () => {
    const other = { ...key(), id: "other" };
    expect(mergeKeysForSave([key({ label: "renamed" })], [key(), other]).map((record) => [record.id, record.label])).toEqual([[key().id, "renamed"]]);
  });
});

describe("accounts: rests by max unless removed, free-model counts by deltas per UTC day", () => {
  const account = (rests: AccountState["rests"], used?: number, limit?: number): AccountState => ({
    rests,
    ...(used === undefined ? {} : { free: { day: DAY, used, ...(limit === undefined ? {} : { limit }) } }),
  });

  test("free-model counts of two servers add up; none is lost", () => {
    const theirs = new Map([["acct", account([], 7)]]); // base 3, the other server sent 4
    const mine = new Map([["acct", account([], 5)]]); // base 3, we sent 2
    const base = new Map([["acct", account([], 3)]]);
    expect(mergeAccounts(theirs, mine, base, T).get("acct")?.free).toEqual({ day: DAY, used: 9 });
  });

  test("a new UTC day starts from zero; yesterday's count does not carry over", () => {
    const theirs = new Map([["acct", { rests: [], free: { day: utcDayOf(T - 86_400_000), used: 40, limit: 50 } }]]);
    const mine = new Map([["acct", account([], 2, 50)]]);
    expect(mergeAccounts(theirs, mine, new Map(), T).get("acct")?.free).toEqual({ day: DAY, used: 2, limit: 50 });
  });

  test("a rest is kept by max from either side; one cleared here (as the base had it) is gone", () => {
    const kept = mergeAccounts(new Map([["acct", account([rest(T + 60_000, "theirs")])]]), new Map([["acct", account([rest(T + 5_000)])]]), new Map(), T);
    expect(kept.get("acct")?.rests.map((each) => each.reason)).toEqual(["theirs"]);
    const base = new Map([["acct", account([rest(T + 60_000)])]]);
    // Cleared here (enable-key, credits back), unchanged there: gone.
    expect(mergeAccounts(base, new Map([["acct", account([])]]), base, T).get("acct")).toBeUndefined();
    // Cleared there (a person's enable-key in the file), unchanged here: gone.
    expect(mergeAccounts(new Map(), base, base, T).get("acct")).toBeUndefined();
    // Cleared there, but extended here since: the newer rest is news.
    expect(mergeAccounts(new Map(), new Map([["acct", account([rest(T + 90_000)])]]), base, T).get("acct")?.rests).toHaveLength(1);
  });

  test("the base travels with the accounts a save sends, and an account moved away is removed", () => {
    const base = new Map([["key:abc", account([], 3)]]);
    const sent = accountsWithBase(new Map([["acct", account([], 3)]]), base);
    const written = mergeAccountsForSave(new Map([["key:abc", account([], 3)]]), sent, T);
    expect([...written.keys()]).toEqual(["acct"]);
    expect(written.get("acct")).toEqual(account([], 3));
  });
});
