/**
 * Issue 12, rules 2 to 4: enable-key clears the rests a person may overrule and says which; keys
 * added while the server runs are looked up (GET /key) before their first free-model request,
 * and account facts are refreshed after midnight and hourly; a privacy 404 rests the model on
 * that account only. The real proxy against the multi-account double, on an injected clock.
 */
import { describe, expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import { addKeyCommand, enableKeyCommand, listKeysCommand } from "../src/cli/key-commands.ts";
import { defaultConfig, type Config } from "../src/config.ts";
import { FREE, OTHER_FREE, PAID, START, adminToken, id, orKey, restsOf, trail, useAccountsSuite } from "./helpers/accounts-suite.ts";
import type { FakeAccounts } from "./helpers/fake-accounts.ts";
import { eventually, type TestProxy } from "./helpers/test-proxy.ts";

const [a1, b1, n1] = [orKey("a1"), orKey("b1"), orKey("n1")];
/** A paid model whose provider is rate limited on user_A. */
const BUSY = "anthropic/claude-3.5-haiku";
const { clock, cleanups, startFake, startProxy } = useAccountsSuite({ config: { ROTATION: "round-robin" }, overrides: { refreshTickMs: 0 } });

function start(upstream: FakeAccounts, keys: string[], { discover = true, config = {} }: { discover?: boolean; config?: Partial<Config> } = {}): Promise<TestProxy> {
  return startProxy(upstream, { keys, config, overrides: { discoverAccounts: discover } });
}

function ask(proxy: TestProxy, model: string): Promise<Response> {
  return fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer client" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] }),
  });
}

const admin = (proxy: TestProxy, path: string, init: RequestInit = {}) =>
  fetch(`${proxy.url}/admin${path}`, { ...init, headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json", ...init.headers } });
const cli = (proxy: TestProxy, upstream: FakeAccounts) => {
  const lines: string[] = [];
  const context = {
    config: defaultConfig({ KEYS_FILE: proxy.keysFile, OPENROUTER_BASE_URL: upstream.url }),
    io: { out: (line: string) => void lines.push(line), err: (line: string) => void lines.push(line) },
    now: () => clock.now,
  };
  return { context, lines };
};

/** user_A rests three ways: free-models-per-day (kept by enable-key), out of credits and a provider's 429 on one model (cleared). */
async function restedThreeWays() {
  const upstream = startFake([
    { id: "user_A", keys: [a1], credits: 0, freeUsedToday: 50 },
    { id: "user_B", keys: [b1] },
  ]);
  upstream.providerLimit(BUSY, START + 600_000, ["user_A"]);
  const proxy = await start(upstream, [a1, b1], { discover: false });
  for (const model of [BUSY, FREE, PAID]) {
    // Round-robin: within two requests one reaches a1 (a1 rests only for what it was refused).
    for (let i = 0; i < 2; i++) expect((await ask(proxy, model)).status).toBe(200);
  }
  expect(restsOf(proxy, "user_A").map((rest) => rest.cause).sort()).toEqual(["credits", "free-per-day", "provider"]);
  return { upstream, proxy };
}

describe("enable-key", () => {
  test("POST /admin/keys/:id/enable clears the key's failures and cooldown and its account's rests that are not a known daily limit, and says which it cleared", async () => {
    const { proxy } = await restedThreeWays();
    const response = await admin(proxy, `/keys/${id(a1)}/enable`, { method: "POST" });
    expect(response.status).toBe(200);
    const body = (await response.json()) as { key: { status: string; limits: string[]; consecutiveFailures: number }; cleared: string[] };
    // The known daily limit stays: the key serves paid models again, free ones after midnight (key-status.ts).
    expect(body.key).toMatchObject({ status: "limited", consecutiveFailures: 0 });
    expect(body.key.limits).toEqual([expect.stringMatching(/^free models until \S+T00:00:00\.000Z \(free-per-day/)]);
    expect(body.cleared).toHaveLength(2);
    expect(body.cleared.join("\n")).toContain("paid models (credits): Insufficient credits");
    expect(body.cleared.join("\n")).toContain(`model ${BUSY} (provider)`);
    expect(restsOf(proxy, "user_A").map((rest) => rest.cause)).toEqual(["free-per-day"]);
  });

  test("the enable-key command clears the same rests in the file and in the running server, and prints which", async () => {
    const { upstream, proxy } = await restedThreeWays();
    await proxy.sync.flush();
    const { context, lines } = cli(proxy, upstream);
    expect(await enableKeyCommand(context, id(a1))).toBe(0);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toStartWith(`enabled ${id(a1)} (`);
    expect(lines[0]).toContain("account rests cleared: ");
    expect(lines[0]).toContain("paid models (credits): Insufficient credits");
    expect(lines[0]).toContain(`model ${BUSY} (provider)`);
    expect(lines[0]).not.toContain("free-per-day");
    await eventually(() => restsOf(proxy, "user_A").length === 1, { what: "the server adopting the enable" });
    expect(restsOf(proxy, "user_A")[0]?.cause).toBe("free-per-day");
    await proxy.sync.flush();
    const saved = JSON.parse(await readFile(proxy.keysFile, "utf8")) as { accounts: Record<string, { rests: Array<{ cause: string }> }> };
    expect(saved.accounts.user_A?.rests.map((rest) => rest.cause)).toEqual(["free-per-day"]);
  });

  test("a rest caused by a 402 is listed with its cause in list-keys and the admin API", async () => {
    const { upstream, proxy } = await restedThreeWays();
    const listed = (await (await admin(proxy, "/keys")).json()) as { accounts: Array<{ id: string; rests: Array<{ cause: string; untilCleared: boolean; reason: string }> }> };
    expect(listed.accounts.find((account) => account.id === "user_A")?.rests).toContainEqual(expect.objectContaining({ cause: "credits", untilCleared: true }));
    await proxy.sync.flush();
    const { context, lines } = cli(proxy, upstream);
    expect(await listKeysCommand(context, { json: false })).toBe(0);
    expect(lines.join("\n")).toContain("paid models until credits return (credits: Insufficient credits");
  });
});

describe("keys added at runtime", () => {
  test("add-key of a used-up account while the server runs stores what GET /key said; free requests never reach the key, paid ones do", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1] },
      { id: "user_N", keys: [n1], freeUsedToday: 50, keyLimits: { [n1]: { limit: 5, reset: "monthly" } } },
    ]);
    const proxy = await start(upstream, [a1]);
    const { context, lines } = cli(proxy, upstream);
    expect(await addKeyCommand(context, { key: n1, verify: true })).toBe(0);
    expect(lines[0]).toStartWith(`added ${id(n1)}`);
    const saved = JSON.parse(await readFile(proxy.keysFile, "utf8")) as {
      keys: Array<{ id: string; account?: string; keyLimit?: object }>;
      accounts: Record<string, { free?: object }>;
    };
    expect(saved.keys.find((entry) => entry.id === id(n1))).toMatchObject({ account: "user_N", keyLimit: { limit: 5, remaining: 5, reset: "monthly" } });

    await eventually(() => proxy.pool.records().length === 2, { what: "the server adopting the new key" });
    await proxy.refresher?.idle();
    expect(proxy.pool.pendingLookups()).toEqual([]);
    // The account's free use today, stored by add-key and learned by the server's own lookup.
    await proxy.sync.flush();
    const again = JSON.parse(await readFile(proxy.keysFile, "utf8")) as { accounts: Record<string, { free?: object }> };
    expect(again.accounts.user_N?.free).toEqual({ day: "2026-03-01", used: 50, limit: 50 });
    for (let i = 0; i < 6; i++) expect((await ask(proxy, FREE)).status).toBe(200);
    for (let i = 0; i < 4; i++) expect((await ask(proxy, PAID)).status).toBe(200);
    const byKey = (model: string) => upstream.chatCalls().filter((call) => call.model === model).map((call) => call.key.slice(-2));
    expect(byKey(FREE)).toEqual(Array(6).fill("a1"));
    expect(byKey(PAID)).toContain("n1");
    expect(upstream.score().wasted).toBe(0);
  });

  test("a key added through the admin API takes no free-model request until its GET /key has answered", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1] },
      { id: "user_N", keys: [n1] },
    ]);
    const proxy = await start(upstream, [a1]);
    let open: () => void = () => {};
    upstream.holdKeyInfo(new Promise<void>((resolve) => (open = resolve)));
    const added = await admin(proxy, "/keys", { method: "POST", body: JSON.stringify({ key: n1, verify: false }) });
    expect(added.status).toBe(201);
    expect(proxy.pool.pendingLookups()).toEqual([id(n1)]);
    for (let i = 0; i < 4; i++) expect((await ask(proxy, FREE)).status).toBe(200);
    expect((await ask(proxy, PAID)).status).toBe(200);
    expect((await ask(proxy, PAID)).status).toBe(200);
    const keysFor = (model: string) => upstream.chatCalls().filter((call) => call.model === model).map((call) => call.key.slice(-2));
    expect(keysFor(FREE)).toEqual(["a1", "a1", "a1", "a1"]);
    expect(keysFor(PAID)).toContain("n1");

    open();
    await proxy.refresher?.idle();
    expect(proxy.pool.pendingLookups()).toEqual([]);
    expect(proxy.pool.records().find((record) => record.id === id(n1))?.account).toBe("user_N");
    for (let i = 0; i < 2; i++) expect((await ask(proxy, FREE)).status).toBe(200);
    expect(keysFor(FREE).slice(4)).toContain("n1");
  });

  test("account facts are refreshed in the background after each UTC midnight and hourly", async () => {
    clock.now = Date.UTC(2026, 2, 1, 23, 30);
    const upstream = startFake([
      { id: "user_A", keys: [a1] },
      { id: "user_B", keys: [b1] },
    ]);
    const proxy = await start(upstream, [a1, b1]);
    const lookups = () => upstream.calls.filter((call) => call.path === "/key").length;
    expect(lookups()).toBe(2);
    clock.now += 20 * 60_000;
    await proxy.refresher?.tick();
    expect(lookups()).toBe(2); // 20 minutes, same day: nothing due
    clock.now = Date.UTC(2026, 2, 2, 0, 0, 1);
    await proxy.refresher?.tick();
    expect(lookups()).toBe(4); // a new UTC day: every key again
    clock.now += 59 * 60_000;
    await proxy.refresher?.tick();
    expect(lookups()).toBe(4);
    clock.now += 60_000;
    await proxy.refresher?.tick();
    expect(lookups()).toBe(6); // an hour since the last
  });
});

describe("privacy 404", () => {
  test("a privacy 404 rests that model on that account (not the key, no failure) and the request is tried on another account", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1], privacyExcludes: [FREE] },
      { id: "user_B", keys: [b1] },
    ]);
    const proxy = await start(upstream, [a1, b1]);
    expect((await ask(proxy, FREE)).status).toBe(200);
    expect(trail(upstream)).toEqual(["a1 privacy", "b1 served"]);
    expect(restsOf(proxy, "user_A")).toEqual([expect.objectContaining({ scope: "model", model: FREE, cause: "privacy" })]);
    expect(proxy.pool.records().find((record) => record.id === id(a1))).toMatchObject({ failures: 0, consecutiveFailures: 0, cooldownUntil: 0 });
    for (const model of [FREE, OTHER_FREE, FREE]) expect((await ask(proxy, model)).status).toBe(200);
    expect(trail(upstream).slice(2)).toEqual(["b1 served", "a1 served", "b1 served"]);
  });

  test("when no account's data policy allows the model, the upstream's 404 goes back unchanged", async () => {
    const upstream = startFake([
      { id: "user_A", keys: [a1], privacyExcludes: [FREE] },
      { id: "user_B", keys: [b1], privacyExcludes: [FREE] },
    ]);
    const proxy = await start(upstream, [a1, b1]);
    for (let round = 0; round < 2; round++) {
      const response = await ask(proxy, FREE);
      expect(response.status).toBe(404);
      expect(((await response.json()) as { error: { message: string } }).error.message).toStartWith("No endpoints found matching your data policy");
    }
    // Both accounts rest that model, but only a privacy 404 keeps them off it: with nothing else
    // left they are asked again (settings change), and the answer is the upstream's own 404.
    expect(trail(upstream)).toEqual(["a1 privacy", "b1 privacy", "a1 privacy", "b1 privacy"]);
    expect(proxy.pool.records().every((record) => record.failures === 0)).toBe(true);
  });
});

test("add-key with no server running stores the account, the key's cap and the account's free use today in the keys file", async () => {
  // The CLI's store keeps a free count only while it is today's by the real clock: run on it.
  clock.now = Date.now();
  const upstream = startFake([{ id: "user_N", keys: [n1], freeUsedToday: 12, keyLimits: { [n1]: { limit: 5, reset: "weekly", used: 2 } } }]);
  const { tempDir } = await import("./helpers/test-proxy.ts");
  const folder = await tempDir();
  cleanups.push(folder.cleanup);
  const keysFile = `${folder.dir}/keys.json`;
  const lines: string[] = [];
  const code = await addKeyCommand(
    { config: defaultConfig({ KEYS_FILE: keysFile, OPENROUTER_BASE_URL: upstream.url }), io: { out: (line) => void lines.push(line), err: (line) => void lines.push(line) }, now: () => clock.now },
    { key: n1, verify: true },
  );
  expect({ code, lines }).toEqual({ code: 0, lines: [expect.stringMatching(/^added k_/)] });
  const saved = JSON.parse(await readFile(keysFile, "utf8")) as { keys: Array<Record<string, unknown>>; accounts: Record<string, { free?: object }> };
  expect(saved.keys[0]).toMatchObject({ account: "user_N", keyLimit: { limit: 5, remaining: 3, reset: "weekly", checkedAt: new Date(clock.now).toISOString() } });
  expect(saved.accounts.user_N?.free).toEqual({ day: new Date(clock.now).toISOString().slice(0, 10), used: 12, limit: 50 });
});

test("a key added at runtime whose GET /key fails is released for free-model requests all the same", async () => {
  const upstream = startFake([{ id: "user_A", keys: [a1] }]);
  const proxy = await start(upstream, [a1]);
  // No account owns this key in the double: GET /key answers 401, the lookup has failed.
  const stranger = orKey("zz");
  const added = await admin(proxy, "/keys", { method: "POST", body: JSON.stringify({ key: stranger, verify: false }) });
  expect(added.status).toBe(201);
  await proxy.refresher?.idle();
  expect(upstream.calls.filter((call) => call.path === "/key" && call.key === stranger).map((call) => call.status)).toEqual([401]);
  expect(proxy.pool.pendingLookups()).toEqual([]);
  expect(proxy.pool.outlook({ model: FREE, exclude: new Set([id(a1)]) })).toMatchObject({ ok: true, keyId: id(stranger) });
});
