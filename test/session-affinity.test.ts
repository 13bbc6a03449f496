/**
 * Session affinity (issue 12, rule 5): requests of one conversation reach the same account and
 * key while it can serve them, so OpenRouter's per-account prompt cache is kept; a session moves
 * when its account cannot serve and stays on the new one; bounded state, names never in clear.
 */
import { describe, expect, test } from "bun:test";
import type { Config } from "../src/config.ts";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { createSessionAffinity, sessionFromBody } from "../src/upstream/session-affinity.ts";
import { PAID, START, adminToken, orKey, useAccountsSuite } from "./helpers/accounts-suite.ts";
import type { FakeAccountSpec, FakeAccounts } from "./helpers/fake-accounts.ts";
import { allLogText } from "./helpers/log-files.ts";
import type { TestProxy } from "./helpers/test-proxy.ts";

const [a1, a2, b1, c1] = [orKey("a1"), orKey("a2"), orKey("b1"), orKey("c1")];
const { startFake, startProxy } = useAccountsSuite({ config: { ROTATION: "round-robin" }, overrides: { discoverAccounts: true, refreshTickMs: 0 } });

const threeAccounts: FakeAccountSpec[] = [
  { id: "user_A", keys: [a1, a2] },
  { id: "user_B", keys: [b1] },
  { id: "user_C", keys: [c1] },
];
const accountOfKey = new Map([a1, a2, b1, c1].map((key) => [keyIdOf(key), threeAccounts.find((spec) => spec.keys.includes(key))?.id]));

/** The accounts' upstream and a proxy with every one of their keys. */
async function start(config: Partial<Config> = {}, accounts = threeAccounts): Promise<{ upstream: FakeAccounts; proxy: TestProxy }> {
  const upstream = startFake(accounts);
  const proxy = await startProxy(upstream, { keys: accounts.flatMap((spec) => spec.keys), config });
  return { upstream, proxy };
}

/** Sends one request naming its session in `body` fields or headers; returns the key that served it. */
async function ask(proxy: TestProxy, body: Record<string, unknown> = {}, headers: Record<string, string> = {}): Promise<string> {
  const response = await fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer client", ...headers },
    body: JSON.stringify({ model: PAID, messages: [{ role: "user", content: "hi" }], ...body }),
  });
  expect(response.status).toBe(200);
  await response.arrayBuffer();
  return response.headers.get("x-proxy-key-id") ?? "";
}

describe("session affinity", () => {
  test("20 interleaved sessions under round-robin over 3 accounts: each session stays on one account", async () => {
    const { proxy } = await start();
    const served = new Map<string, Set<string>>();
    for (let round = 0; round < 5; round++) {
      // Each round sends all 20 sessions at once, in a different order.
      const order = Array.from({ length: 20 }, (_, i) => (i * 7 + round * 3) % 20);
      const keys = await Promise.all(order.map((i) => ask(proxy, { session_id: `conversation-${i}` })));
      order.forEach((i, at) => {
        const set = served.get(`conversation-${i}`) ?? new Set<string>();
        set.add(keys[at] as string);
        served.set(`conversation-${i}`, set);
      });
    }
    for (const [session, keys] of served) expect({ session, keys: [...keys] }).toEqual({ session, keys: [expect.any(String)] });
    // The first requests were spread by ROTATION: every account took some sessions.
    const accounts = new Set([...served.values()].map((keys) => accountOfKey.get([...keys][0] as string)));
    expect(accounts).toEqual(new Set(["user_A", "user_B", "user_C"]));
  });

  test("a session is named by the body's session_id, prompt_cache_key or user, or the x-session-id header, the first found in that order", async () => {
    expect(sessionFromBody({ session_id: "s", prompt_cache_key: "p", user: "u" })).toBe("s");
    expect(sessionFromBody({ prompt_cache_key: "p", user: "u" })).toBe("p");
    expect(sessionFromBody({ user: "u" })).toBe("u");
    expect(sessionFromBody({ session_id: 7, user: "" })).toBeUndefined();
    const affinity = createSessionAffinity();
    const header = new Headers({ "x-session-id": "h" });
    expect(affinity.sessionOf("s", header)).toBe(affinity.sessionOf("s", new Headers()));
    expect(affinity.sessionOf(undefined, header)).not.toBe(affinity.sessionOf("s", header));
    expect(affinity.sessionOf(undefined, new Headers())).toBeUndefined();

    const { proxy } = await start();
    for (const name of [{ body: { prompt_cache_key: "cache-1" } }, { body: { user: "user-1" } }, { headers: { "x-session-id": "header-1" } }]) {
      const first = await ask(proxy, name.body ?? {}, name.headers ?? {});
      for (let i = 0; i < 4; i++) expect(await ask(proxy, name.body ?? {}, name.headers ?? {})).toBe(first);
    }
  });

  test("a session whose account cannot serve moves to another account and stays there", async () => {
    const { upstream, proxy } = await start();
    const first = await ask(proxy, { session_id: "moving" });
    const home = accountOfKey.get(first) as string;
    upstream.setCredits(home, 0);
    const moved = await ask(proxy, { session_id: "moving" });
    expect(accountOfKey.get(moved)).not.toBe(home);
    // Credits come back and a person clears the rest: the session stays where it went.
    upstream.setCredits(home, 10);
    const enable = await fetch(`${proxy.url}/admin/keys/${first}/enable`, { method: "POST", headers: { authorization: `Bearer ${adminToken}` } });
    expect(enable.status).toBe(200);
    for (let i = 0; i < 4; i++) expect(await ask(proxy, { session_id: "moving" })).toBe(moved);
  });

  test("requests without a session name follow ROTATION as before", async () => {
    const { proxy } = await start();
    const keys: string[] = [];
    for (let i = 0; i < 8; i++) keys.push(await ask(proxy));
    expect(keys).toEqual([a1, a2, b1, c1, a1, a2, b1, c1].map(keyIdOf));
  });

  test("SESSION_AFFINITY=false turns it off: one session's requests follow ROTATION", async () => {
    const { proxy } = await start({ SESSION_AFFINITY: false });
    const keys: string[] = [];
    for (let i = 0; i < 4; i++) keys.push(await ask(proxy, { session_id: "ignored" }));
    expect(keys).toEqual([a1, a2, b1, c1].map(keyIdOf));
  });

  test("affinity state is bounded: the least recently used session goes first, and an idle one is forgotten after an hour", () => {
    let now = START;
    const affinity = createSessionAffinity({ maxSessions: 3, idleMs: 3_600_000, now: () => now });
    for (const [session, key] of [["s1", "k1"], ["s2", "k2"], ["s3", "k3"]] as const) affinity.pin(session, key);
    expect(affinity.pinned("s1")).toBe("k1"); // pinned() does not refresh: pin() on a served request does
    affinity.pin("s1", "k1");
    affinity.pin("s4", "k4");
    expect(affinity.size).toBe(3);
    expect(affinity.pinned("s2")).toBeUndefined();
    expect(affinity.pinned("s3")).toBe("k3");
    now += 3_600_001;
    expect(affinity.pinned("s3")).toBeUndefined();
  });

  test("session names are never logged in clear", async () => {
    const { proxy } = await start();
    const names = ["conversation-name-in-body-7f3a", "prompt-cache-key-9b21", "header-session-name-c4d8"];
    await ask(proxy, { session_id: names[0] });
    await ask(proxy, { prompt_cache_key: names[1] });
    await ask(proxy, {}, { "x-session-id": names[2] as string });
    await proxy.logging.flush();
    const text = (await allLogText(proxy.logDir)) + proxy.output.out + proxy.output.err;
    expect(text.length).toBeGreaterThan(0);
    for (const name of names) expect(text).not.toContain(name);
  });
});
