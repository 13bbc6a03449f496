import { describe, expect, test } from "bun:test";
import { parseStateChange } from "../src/keys/change-schema.ts";
import { applyChange, applyChanges, emptyPoolState, keyBlockedUntil, type PoolState, type StateChange } from "../src/keys/changes.ts";

const T = Date.parse("2026-12-04T12:00:00.000Z");
const KEY = "key-a";

const added = (version = 1): StateChange => ({ kind: "key-edit", keyId: KEY, version, edit: "add", secret: "sk-or-v1-changes-test-secret", addedAt: T });
const withKey = (): PoolState => applyChange(emptyPoolState(), added());
const cooldown = (until: number, basis = 1, reason = "429"): StateChange => ({ kind: "key-cooldown", keyId: KEY, basis, until, source: "header", reason });
const rest = (until: number): StateChange => ({ kind: "account-rest", account: "acct", modelClass: "free", until, source: "body", reason: "free limit" });

/** Every order of `changes` (all permutations; keep the lists short). */
function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [[...items]];
  return items.flatMap((item, index) => permutations([...items.slice(0, index), ...items.slice(index + 1)]).map((rest) => [item, ...rest]));
}

function expectOrderFree(start: PoolState, changes: StateChange[]): PoolState {
  const results = permutations(changes).map((order) => applyChanges(start, order));
  for (const result of results.slice(1)) expect(result).toEqual(results[0] as PoolState);
  return results[0] as PoolState;
}

describe("instants merge by max", () => {
  test("a rest is never shortened by a later, shorter one", () => {
    const state = applyChanges(emptyPoolState(), [rest(T + 60_000), rest(T + 5_000)]);
    expect(state.accounts.get("acct")?.rests.get("class:free")?.until).toBe(T + 60_000);
  });

  test("a key cooldown is never shortened by a later, shorter one, and a longer one extends it", () => {
    let state = applyChanges(withKey(), [cooldown(T + 60_000), cooldown(T + 1_000)]);
    expect(state.runtime.get(KEY)?.cooldown?.until).toBe(T + 60_000);
    state = applyChange(state, cooldown(T + 120_000));
    expect(state.runtime.get(KEY)?.cooldown?.until).toBe(T + 120_000);
  });

  test("a model rest on an account is kept apart from the account's class rests", () => {
    const state = applyChanges(emptyPoolState(), [
      rest(T + 10_000),
      { kind: "model-rest", account: "acct", model: "m:free", until: T + 99_000, source: "body", reason: "model" },
    ]);
    expect(state.accounts.get("acct")?.rests.get("class:free")?.until).toBe(T + 10_000);
    expect(state.accounts.get("acct")?.rests.get("model:m:free")?.until).toBe(T + 99_000);
  });

  test("the winning instant keeps its own cause, and equal instants pick the same cause in any order", () => {
    const a = cooldown(T + 5_000, 1, "first");
    const b = cooldown(T + 5_000, 1, "second");
    const state = expectOrderFree(withKey(), [a, b, cooldown(T + 1_000, 1, "short")]);
    expect(state.runtime.get(KEY)?.cooldown?.reason).toBe("second");
  });

  test("disabled-since keeps the latest instant", () => {
    const state = expectOrderFree(withKey(), [
      { kind: "key-disabled", keyId: KEY, basis: 1, since: T + 2, reason: "401" },
      { kind: "key-disabled", keyId: KEY, basis: 1, since: T + 1, reason: "403" },
    ]);
    expect(state.runtime.get(KEY)?.disabled).toEqual({ since: T + 2, reason: "401" });
  });

  test("reading does not expire anything: a past cooldown stays in the state and reads as available", () => {
    const state = applyChange(withKey(), cooldown(T + 1_000));
    expect(keyBlockedUntil(state, KEY, T)).toBe(T + 1_000);
    expect(keyBlockedUntil(state, KEY, T + 1_000)).toBeUndefined();
    expect(state.runtime.get(KEY)?.cooldown?.until).toBe(T + 1_000);
  });
});

describe("counters merge by sum of deltas", () => {
  test("request, success, failure, token and cost deltas from several instances add up, never overwrite", () => {
    const state = expectOrderFree(withKey(), [
      { kind: "key-counters", keyId: KEY, delta: { requests: 2, successes: 1, tokens: 100, cost: 0.25 }, lastUsedAt: T + 3 },
      { kind: "key-counters", keyId: KEY, delta: { requests: 3, failures: 2, tokens: 50, cost: 0.5 }, lastUsedAt: T + 9 },
      { kind: "key-counters", keyId: KEY, delta: { requests: 1, successes: 1 }, lastUsedAt: T + 1 },
    ]);
    expect(state.runtime.get(KEY)).toMatchObject({ requests: 6, successes: 2, failures: 2, tokens: 150, cost: 0.75, lastUsedAt: T + 9 });
  });

  test("free-model requests per account per UTC day add up within the day", () => {
    const free = (delta: number): StateChange => ({ kind: "free-requests", account: "acct", day: "2026-12-04", delta });
    const state = expectOrderFree(emptyPoolState(), [free(3), free(4), free(1)]);
    expect(state.accounts.get("acct")?.free?.used).toBe(8);
  });

  test("a new UTC day starts the free count from zero, and news about an older day is void", () => {
    const state = expectOrderFree(emptyPoolState(), [
      { kind: "free-requests", account: "acct", day: "2026-12-03", delta: 40 },
      { kind: "free-requests", account: "acct", day: "2026-12-04", delta: 2 },
      { kind: "free-limit", account: "acct", day: "2026-12-03", limit: 50, learnedAt: T - 86_400_000 },
    ]);
    expect(state.accounts.get("acct")?.free).toEqual({ day: "2026-12-04", used: 2 });
  });

  test("the latest lesson about an account's free limit wins, in either order", () => {
    const state = expectOrderFree(emptyPoolState(), [
      { kind: "free-limit", account: "acct", day: "2026-12-04", limit: 50, learnedAt: T },
      { kind: "free-limit", account: "acct", day: "2026-12-04", limit: 1000, learnedAt: T + 10 },
    ]);
    expect(state.accounts.get("acct")?.free?.limit).toBe(1000);
  });
});

describe("the failure streak", () => {
  const failure = (at: number): StateChange => ({ kind: "key-failure", keyId: KEY, basis: 1, at });
  const success = (at: number): StateChange => ({ kind: "key-success", keyId: KEY, basis: 1, at });

  test("failures from several instances count together until a success", () => {
    const state = applyChanges(withKey(), [failure(T + 1), failure(T + 2), failure(T + 3)]);
    expect(state.runtime.get(KEY)?.streak.failures.length).toBe(3);
    expect(applyChange(state, success(T + 4)).runtime.get(KEY)?.streak.failures.length).toBe(0);
  });

  test("a success ends only the failures before it, whichever order they arrive in", () => {
    const state = expectOrderFree(withKey(), [failure(T + 1), failure(T + 5), success(T + 3), failure(T + 7)]);
    expect(state.runtime.get(KEY)?.streak.failures).toEqual([T + 5, T + 7]);
  });
});

describe("a person's edits carry a version and win over runtime state", () => {
  const enable = (version: number): StateChange => ({ kind: "key-edit", keyId: KEY, version, edit: "enable" });

  test("enabling a key clears its cooldown, disabled state and failure streak, but keeps its counters", () => {
    let state = applyChanges(withKey(), [
      cooldown(T + 60_000),
      { kind: "key-disabled", keyId: KEY, basis: 1, since: T, reason: "401" },
      { kind: "key-failure", keyId: KEY, basis: 1, at: T },
      { kind: "key-counters", keyId: KEY, delta: { requests: 7 } },
    ]);
    expect(keyBlockedUntil(state, KEY, T)).toBe("disabled");
    state = applyChange(state, enable(2));
    expect(keyBlockedUntil(state, KEY, T)).toBeUndefined();
    expect(state.runtime.get(KEY)).toMatchObject({ basis: 2, requests: 7, streak: { failures: [] } });
  });

  test("a disable learned before the person's enable loses, even when it arrives after it", () => {
    const state = applyChanges(withKey(), [enable(2), { kind: "key-disabled", keyId: KEY, basis: 1, since: T + 5, reason: "401" }]);
    expect(keyBlockedUntil(state, KEY, T + 10)).toBeUndefined();
  });

  test("a fact learned after an enable survives that enable arriving late", () => {
    const state = expectOrderFree(withKey(), [enable(2), cooldown(T + 60_000, 2), cooldown(T + 90_000, 1)]);
    expect(state.runtime.get(KEY)?.cooldown?.until).toBe(T + 60_000);
  });

  test("a person's disable holds whatever the pool learns, and only a newer enable ends it", () => {
    let state = applyChanges(withKey(), [
      { kind: "key-edit", keyId: KEY, version: 3, edit: "disable", at: T, reason: "by hand" },
      { kind: "key-success", keyId: KEY, basis: 3, at: T + 1 },
    ]);
    expect(keyBlockedUntil(state, KEY, T + 2)).toBe("disabled");
    state = applyChange(state, enable(2));
    expect(keyBlockedUntil(state, KEY, T + 2)).toBe("disabled");
    state = applyChange(state, enable(4));
    expect(keyBlockedUntil(state, KEY, T + 2)).toBeUndefined();
  });

  test("a removal wins over an older add, and the tombstone keeps no secret", () => {
    const remove: StateChange = { kind: "key-edit", keyId: KEY, version: 5, edit: "remove" };
    const state = expectOrderFree(emptyPoolState(), [added(1), remove, added(4), cooldown(T + 1_000, 1)]);
    expect(state.keys.get(KEY)).toMatchObject({ removed: true, secret: "" });
    expect(state.runtime.has(KEY)).toBe(false);
    expect(keyBlockedUntil(state, KEY, T)).toBe("removed");
  });

  test("adding a key again after its removal (a newer version) brings it back fresh", () => {
    const state = applyChanges(emptyPoolState(), [added(1), cooldown(T + 60_000, 1), { kind: "key-edit", keyId: KEY, version: 2, edit: "remove" }, added(3)]);
    expect(keyBlockedUntil(state, KEY, T)).toBeUndefined();
    expect(state.keys.get(KEY)).toMatchObject({ removed: false, version: 3 });
  });

  test("a label edit wins by its own version and does not clear runtime state", () => {
    const label = (version: number, text: string): StateChange => ({ kind: "key-edit", keyId: KEY, version, edit: "label", label: text });
    const state = expectOrderFree(withKey(), [label(3, "newer"), label(2, "older"), cooldown(T + 60_000, 1)]);
    expect(state.keys.get(KEY)?.label).toBe("newer");
    expect(state.runtime.get(KEY)?.cooldown?.until).toBe(T + 60_000);
  });
});

describe("apply is pure", () => {
  test("applying a change returns a new state and leaves the old one as it was", () => {
    const before = withKey();
    const snapshot = structuredClone(before);
    const after = applyChanges(before, [cooldown(T + 1_000), rest(T + 2_000), { kind: "key-counters", keyId: KEY, delta: { requests: 1 } }]);
    expect(before).toEqual(snapshot);
    expect(after).not.toBe(before);
  });

  test("a change that changes nothing returns the same state object", () => {
    const state = applyChange(withKey(), cooldown(T + 60_000));
    expect(applyChange(state, cooldown(T + 1_000))).toBe(state);
    expect(applyChange(state, added(1))).toBe(state);
  });
});

describe("the wire form", () => {
  test("every kind of change survives JSON and parses back equal", () => {
    const changes: StateChange[] = [
      added(1),
      { kind: "key-edit", keyId: KEY, version: 2, edit: "remove" },
      { kind: "key-edit", keyId: KEY, version: 3, edit: "enable" },
      { kind: "key-edit", keyId: KEY, version: 4, edit: "disable", at: T, reason: "by hand" },
      { kind: "key-edit", keyId: KEY, version: 5, edit: "label", label: "main" },
      cooldown(T + 1),
      { kind: "key-disabled", keyId: KEY, basis: 1, since: T, reason: "401" },
      { kind: "key-failure", keyId: KEY, basis: 1, at: T },
      { kind: "key-success", keyId: KEY, basis: 1, at: T },
      { kind: "key-counters", keyId: KEY, delta: { requests: 1, cost: 0.001 }, lastUsedAt: T },
      { kind: "key-account", keyId: KEY, account: "user_1" },
      rest(T + 2),
      { kind: "model-rest", account: "acct", model: "m:free", until: T, source: "body", reason: "r" },
      { kind: "free-requests", account: "acct", day: "2026-12-04", delta: 1 },
      { kind: "free-limit", account: "acct", day: "2026-12-04", limit: 50, learnedAt: T },
    ];
    for (const change of changes) expect(parseStateChange(JSON.stringify(change))).toEqual(change);
  });

  test("a malformed or foreign message is refused, not applied", () => {
    for (const text of ["", "not json", "{}", '{"kind":"key-cooldown","keyId":"k","basis":1,"until":"soon","source":"s","reason":"r"}', '{"kind":"drop-table"}', '{"kind":"key-edit","keyId":"k","version":1,"edit":"explode"}']) {
      expect(parseStateChange(text)).toBeUndefined();
    }
  });
});

describe("order does not matter (random histories)", () => {
  /** A small deterministic generator, so a failure can be replayed from its seed. */
  function random(seed: number): () => number {
    let state = seed >>> 0 || 1;
    return () => {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      return (state >>> 0) / 2 ** 32;
    };
  }

  function randomChange(next: () => number, version: () => number): StateChange {
    const pick = <T>(items: readonly T[]): T => items[Math.floor(next() * items.length)] as T;
    const keyId = pick(["k1", "k2"]);
    const at = T + Math.floor(next() * 20);
    const basis = pick([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    switch (pick(["edit", "cooldown", "disabled", "failure", "success", "counters", "rest", "model", "free"] as const)) {
      case "edit": {
        const v = version();
        const edits: StateChange[] = [
          { kind: "key-edit", keyId, version: v, edit: "add", secret: `sk-or-v1-random-${keyId}-${v}`, label: `l${v}`, addedAt: at },
          { kind: "key-edit", keyId, version: v, edit: "remove" },
          { kind: "key-edit", keyId, version: v, edit: "enable" },
          { kind: "key-edit", keyId, version: v, edit: "disable", at, reason: `r${v}` },
          { kind: "key-edit", keyId, version: v, edit: "label", label: `label${v}` },
        ];
        return pick(edits);
      }
      case "cooldown":
        return { kind: "key-cooldown", keyId, basis, until: at, source: pick(["header", "body"]), reason: pick(["a", "b"]) };
      case "disabled":
        return { kind: "key-disabled", keyId, basis, since: at, reason: pick(["401", "403"]) };
      case "failure":
        return { kind: "key-failure", keyId, basis, at };
      case "success":
        return { kind: "key-success", keyId, basis, at };
      case "counters":
        return { kind: "key-counters", keyId, delta: { requests: 1, tokens: Math.floor(next() * 10) }, lastUsedAt: at };
      case "rest":
        return { kind: "account-rest", account: "acct", modelClass: pick(["all", "free", "paid"]), until: at, source: "body", reason: pick(["x", "y"]) };
      case "model":
        return { kind: "model-rest", account: "acct", model: pick(["m1", "m2"]), until: at, source: "body", reason: pick(["x", "y"]) };
      case "free":
        return { kind: "free-requests", account: "acct", day: pick(["2026-12-03", "2026-12-04"]), delta: 1 };
    }
  }

  function shuffled<T>(items: readonly T[], next: () => number): T[] {
    const copy = [...items];
    for (let i = copy.length - 1; i > 0; i--) {
      const j = Math.floor(next() * (i + 1));
      [copy[i], copy[j]] = [copy[j] as T, copy[i] as T];
    }
    return copy;
  }

  /** Maps as sorted entries: the order in which keys were first seen is not part of the state. */
  const canonical = (value: unknown): unknown =>
    value instanceof Map
      ? [...value.entries()].sort(([a], [b]) => String(a).localeCompare(String(b))).map(([k, v]) => [k, canonical(v)])
      : Array.isArray(value)
        ? value.map(canonical)
        : typeof value === "object" && value !== null
          ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, canonical(v)]))
          : value;

  test("500 random histories of 12 changes give the same state in 6 random orders each", () => {
    for (let seed = 1; seed <= 500; seed++) {
      const next = random(seed);
      let versions = 0;
      // Each person's edit has its own version, as the stores hand them out (INCR).
      const changes = Array.from({ length: 12 }, () => randomChange(next, () => ++versions));
      const expected = canonical(applyChanges(emptyPoolState(), changes));
      for (let round = 0; round < 6; round++) {
        const order = shuffled(changes, next);
        const actual = canonical(applyChanges(emptyPoolState(), order));
        if (!Bun.deepEquals(actual, expected)) {
          expect({ seed, order: order.map((change) => JSON.stringify(change)), actual }).toEqual({ seed, order: [], actual: expected });
        }
      }
    }
  });
});
