/**
 * One key status (keys/key-status.ts): acquire, /readyz, the metrics gauge, the admin API,
 * list-keys and the status page's data all ask the same pure function, so they agree on every
 * key; and reading a status never changes state or announces anything.
 */
import { describe, expect, test } from "bun:test";
import { listKeysCommand } from "../src/cli/key-commands.ts";
import { defaultConfig } from "../src/config.ts";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { nextUtcMidnight } from "../src/domain/time-text.ts";
import type { KeyState } from "../src/keys/key-status.ts";
import type { ProxyEventName } from "../src/domain/events.ts";
import { chatCompletion } from "./helpers/fake-openrouter.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const [keyA, keyB] = testKeys as [string, string, string];
const adminToken = "admin-token-key-status-41c9";
const NOW = Date.parse("2026-11-25T10:00:00.000Z");
const at = (ms: number) => new Date(NOW + ms).toISOString();
const FREE = "meta-llama/llama-3.3-8b-instruct:free";
const PAID = "openai/gpt-4o-mini";
const OTHER_PAID = "anthropic/claude-sonnet-4";

const { fake, log, cleanups } = useSuite({ reply: () => chatCompletion("hello"), secrets: testKeys });

interface Row {
  what: string;
  /** The key entry's `state`, and the account's stored state (user_A). */
  keyState?: Record<string, unknown>;
  account?: Record<string, unknown>;
  state: KeyState;
  /** Which models acquire serves with this key. */
  serves: { [FREE]: boolean; [PAID]: boolean; [OTHER_PAID]: boolean };
}

const rest = (fields: Record<string, unknown>) => ({ scope: "account", until: at(600_000), source: "header", reason: "Rate limit exceeded", ...fields });

const rows: Row[] = [
  { what: "ok", state: "active", serves: { [FREE]: true, [PAID]: true, [OTHER_PAID]: true } },
  { what: "cooling", keyState: { cooldownUntil: at(60_000), cooldownReason: "slow down" }, state: "cooling", serves: { [FREE]: false, [PAID]: false, [OTHER_PAID]: false } },
  {
    what: "disabled",
    keyState: { disabled: { reason: "3 consecutive failures; last: upstream answered 401", at: at(-60_000) }, consecutiveFailures: 3 },
    state: "disabled",
    serves: { [FREE]: false, [PAID]: false, [OTHER_PAID]: false },
  },
  { what: "account resting for free models", account: { rests: [rest({ modelClass: "free", cause: "free-per-min" })] }, state: "limited", serves: { [FREE]: false, [PAID]: true, [OTHER_PAID]: true } },
  { what: "account resting for paid models", account: { rests: [rest({ modelClass: "paid", cause: "in-flight", source: "retry-after" })] }, state: "limited", serves: { [FREE]: true, [PAID]: false, [OTHER_PAID]: false } },
  { what: "account resting for all models", account: { rests: [rest({ modelClass: "all", cause: "rate-limit" })] }, state: "resting", serves: { [FREE]: false, [PAID]: false, [OTHER_PAID]: false } },
  {
    what: "account waiting for credits (all models)",
    account: { rests: [rest({ modelClass: "all", cause: "negative-balance", untilCleared: true, until: at(30 * 86_400_000), source: "until-credits" })] },
    state: "resting",
    serves: { [FREE]: false, [PAID]: false, [OTHER_PAID]: false },
  },
  { what: "model rest", account: { rests: [rest({ scope: "model", modelClass: "all", model: PAID, cause: "provider" })] }, state: "limited", serves: { [FREE]: true, [PAID]: false, [OTHER_PAID]: true } },
  { what: "free budget exhausted", account: { rests: [], free: { day: "2026-11-25", used: 50, limit: 50 } }, state: "limited", serves: { [FREE]: false, [PAID]: true, [OTHER_PAID]: true } },
];

async function startWith(row: Pick<Row, "keyState" | "account">, keys: readonly string[] = [keyA]): Promise<TestProxy> {
  const file = {
    keys: keys.map((key) => ({ key, account: "user_A", ...(row.keyState ? { state: row.keyState } : {}) })),
    accounts: row.account ? { user_A: row.account } : {},
  };
  const proxy = await startTestProxy({ upstream: fake.url, keysFileText: JSON.stringify(file), config: { ADMIN_TOKEN: adminToken }, overrides: { now: () => NOW } });
  cleanups.push(() => proxy.close());
  return proxy;
}

async function get(proxy: TestProxy, path: string): Promise<{ status: number; text: string }> {
  const response = await fetch(`${proxy.url}${path}`, { headers: { authorization: `Bearer ${adminToken}` } });
  const text = await response.text();
  log.record(text);
  return { status: response.status, text };
}

const gaugeOf = (metrics: string): Record<string, number> =>
  Object.fromEntries([...metrics.matchAll(/^openrouter_proxy_keys\{state="([a-z]+)"\} (\d+)$/gm)].map((match) => [match[1] as string, Number(match[2])]));

async function listKeys(proxy: TestProxy): Promise<{ json: { keys: Array<{ status: string; limits: string[] }> }; table: string[] }> {
  const lines: string[] = [];
  const context = { config: defaultConfig({ KEYS_FILE: proxy.keysFile }), io: { out: (line: string) => void lines.push(line), err: (line: string) => void lines.push(line) }, now: () => NOW };
  expect(await listKeysCommand(context, { json: true })).toBe(0);
  const json = JSON.parse(lines.splice(0).join("\n")) as { keys: Array<{ status: string; limits: string[] }> };
  expect(await listKeysCommand(context, { json: false })).toBe(0);
  log.record(...lines);
  return { json, table: lines };
}

describe("one key status", () => {
  test.each(rows.map((row) => [row.what, row] as const))(
    "/readyz, acquire, the metrics gauge, the admin API and list-keys agree on every key's status: %s",
    async (_what, row) => {
      const proxy = await startWith(row);
      const id = keyIdOf(keyA);
      const ready = row.state === "active" || row.state === "limited";

      // acquire: which requests the key serves (asked as the pool's outlook: nothing is marked used).
      for (const [model, serves] of Object.entries(row.serves)) {
        const acquired = proxy.pool.outlook({ model });
        expect({ model, ok: acquired.ok }).toEqual({ model, ok: serves });
      }
      expect(proxy.pool.statusOf(proxy.pool.records()[0]!).state).toBe(row.state);

      // /readyz: ready exactly when the key serves something; the same count by state.
      const readyz = await get(proxy, "/readyz");
      expect(readyz.status).toBe(ready ? 200 : 503);
      const readiness = JSON.parse(readyz.text) as Record<string, unknown>;
      expect(readiness).toMatchObject({ status: ready ? "ready" : "unavailable", total: 1, available: ready ? 1 : 0, [row.state]: 1 });

      // The metrics gauge: one key, in this state, none in any other.
      const gauge = gaugeOf((await get(proxy, "/metrics")).text);
      expect(gauge).toEqual({ active: 0, limited: 0, resting: 0, cooling: 0, disabled: 0, [row.state]: 1 });

      // The admin API (what the status page shows).
      const admin = JSON.parse((await get(proxy, "/admin/keys")).text) as { keys: Array<{ id: string; status: string; limits: string[] }> };
      expect(admin.keys.map((key) => [key.id, key.status])).toEqual([[id, row.state]]);
      expect(admin.keys[0]?.limits.length === 0).toBe(row.state !== "limited" && row.state !== "resting");

      // list-keys reads the file the server loaded: the same status, in JSON and in its table.
      const listed = await listKeys(proxy);
      expect(listed.json.keys.map((key) => key.status)).toEqual([row.state]);
      expect(listed.json.keys[0]?.limits).toEqual(admin.keys[0]?.limits ?? []);
      const line = listed.table.find((text) => text.startsWith(id));
      expect(line).toContain(` ${row.state}`);
    },
  );

  test("a limited or resting key says what it cannot serve and until when, the same in the admin API and list-keys", async () => {
    const proxy = await startWith({ account: { rests: [rest({ modelClass: "paid", cause: "in-flight", source: "retry-after" })], free: { day: "2026-11-25", used: 50, limit: 50 } } });
    const admin = JSON.parse((await get(proxy, "/admin/keys")).text) as { keys: Array<{ status: string; limits: string[]; restingUntil: string | null }> };
    const midnight = new Date(nextUtcMidnight(NOW)).toISOString();
    expect(admin.keys[0]).toMatchObject({
      status: "resting",
      restingUntil: at(600_000),
      limits: [`free models until ${midnight} (daily free limit used up)`, `paid models until ${at(600_000)} (in-flight)`],
    });
    const readyz = JSON.parse((await get(proxy, "/readyz")).text) as { reason: string; nextAvailableAt: number };
    expect(readyz.reason).toBe(`no key can serve now (0 cooling down, 1 resting on their account's limits); the first returns at ${at(600_000)}`);
    expect(readyz.nextAvailableAt).toBe(NOW + 600_000);
    expect((await listKeys(proxy)).table.join("\n")).toContain(`resting: free models until ${midnight} (daily free limit used up); paid models until ${at(600_000)} (in-flight)`);
  });

  test("a key's own spending cap limits that key only; the account's other keys stay active, and every view says so", async () => {
    const idA = keyIdOf(keyA);
    const proxy = await startWith({ account: { rests: [rest({ scope: "key", keyId: idA, modelClass: "paid", cause: "key-limit", source: "limit_reset:daily" })] } }, [keyA, keyB]);
    const admin = JSON.parse((await get(proxy, "/admin/keys")).text) as { keys: Array<{ id: string; status: string }> };
    expect(admin.keys.map((key) => [key.id, key.status])).toEqual([
      [idA, "limited"],
      [keyIdOf(keyB), "active"],
    ]);
    expect((await listKeys(proxy)).json.keys.map((key) => key.status)).toEqual(["limited", "active"]);
    expect(gaugeOf((await get(proxy, "/metrics")).text)).toEqual({ active: 1, limited: 1, resting: 0, cooling: 0, disabled: 0 });
    // A paid request goes to the other key, a free one may use either.
    expect(proxy.pool.outlook({ model: PAID, prefer: idA })).toMatchObject({ ok: true, keyId: keyIdOf(keyB) });
    expect(proxy.pool.outlook({ model: FREE, prefer: idA })).toMatchObject({ ok: true, keyId: idA });
  });

  test("/readyz says a key waiting for credits has no known return", async () => {
    const proxy = await startWith({ account: rows.find((row) => row.what.startsWith("account waiting for credits"))?.account ?? {} });
    const readyz = JSON.parse((await get(proxy, "/readyz")).text) as { reason: string; nextAvailableAt?: number };
    expect(readyz.reason).toStartWith("every key's account waits for credits");
    expect(readyz.nextAvailableAt).toBeUndefined();
  });
});

/** Every event the bus knows; the type check fails when one is added and not listed here. */
const everyEvent = [
  "key.cooldown",
  "key.failure",
  "key.disabled",
  "key.recovered",
  "request.done",
  "key.added",
  "key.removed",
  "key.enabled",
  "store.error",
  "store.recovered",
  "account.rest",
  "account.rests-cleared",
  "client.refused",
  "prices.state",
  "shared.state",
] as const satisfies readonly ProxyEventName[];
const listsEveryEvent: [Exclude<ProxyEventName, (typeof everyEvent)[number]>] extends [never] ? true : false = true;

describe("reads", () => {
  test("reading a key's status never changes state or emits an event", async () => {
    // Two keys: one whose cooldown ended a second ago (never noted), one whose account's rests are
    // over or still running; nothing was read yet.
    const proxy = await startWith(
      {
        keyState: { cooldownUntil: at(-1_000), cooldownReason: "slow down", cooldownSource: "header" },
        account: { rests: [rest({ modelClass: "free", until: at(-5_000) }), rest({ scope: "model", modelClass: "all", model: PAID, cause: "provider" })], free: { day: "2026-11-25", used: 3, limit: 50 } },
      },
      [keyA, keyB],
    );
    expect(listsEveryEvent).toBe(true);
    const seen: string[] = [];
    for (const name of everyEvent) proxy.events.on(name, () => void seen.push(name));
    let changes = 0;
    proxy.pool.onChange(() => void changes++);
    const before = { records: proxy.pool.records(), accounts: proxy.pool.accounts() };

    for (const model of [undefined, FREE, OTHER_PAID]) expect(proxy.pool.outlook(model ? { model } : {}).ok).toBe(true);
    expect(proxy.pool.outlook({ model: PAID }).ok).toBe(false);
    for (const record of proxy.pool.records()) expect(proxy.pool.statusOf(record).state).toBe("limited");
    expect(proxy.pool.availability()).toMatchObject({ total: 2, available: 2, limited: 2 });
    expect(proxy.pool.keysByState()).toEqual({ active: 0, limited: 2, resting: 0, cooling: 0, disabled: 0 });
    expect(proxy.pool.keyViews().map((view) => view.status)).toEqual(["limited", "limited"]);
    proxy.pool.accountViews();
    for (const path of ["/readyz", "/metrics", "/admin/keys"]) expect((await get(proxy, path)).status).toBe(200);
    await listKeys(proxy);

    expect(seen).toEqual([]);
    expect(changes).toBe(0);
    expect(proxy.pool.records()).toEqual(before.records);
    expect(proxy.pool.accounts()).toEqual(before.accounts);
    // The ended cooldown is still on the record (it simply no longer counts): a read wrote nothing.
    expect(proxy.pool.records()[0]?.cooldownUntil).toBe(NOW - 1_000);

    // A real acquire is a write: it marks a key used, and notes the cooldown that ended.
    expect(proxy.pool.acquire({ model: PAID }).ok).toBe(false);
    expect(seen).toEqual(["key.recovered", "key.recovered"]);
    expect(proxy.pool.acquire({ model: OTHER_PAID }).ok).toBe(true);
    expect(seen).toEqual(["key.recovered", "key.recovered"]);
    expect(proxy.pool.records().map((record) => record.cooldownUntil)).toEqual([0, 0]);
  });
});
