/**
 * The setup the accounts suites share (402s, limits, runtime refreshes, session affinity): the
 * multi-account upstream double (fake-accounts.ts) and real proxies in front of it, all on one
 * injected clock that starts at START; the keys, models and lookups those suites name the same way.
 * After each test the suite's cleanups run (last added first, the proxies among them), then the
 * fake stops and the clock is back at START, so no test sees another's state or time.
 * Why one helper: the four files set this up line for line alike; a file passes in only what
 * differs (rotation, GET /key lookups, a test's own keys, config, sleep or folder).
 */
import { afterEach } from "bun:test";
import type { Config } from "../../src/config.ts";
import { keyIdOf } from "../../src/domain/key-identity.ts";
import type { ProxyOverrides } from "../../src/compose.ts";
import { startFakeAccounts, type FakeAccountSpec, type FakeAccounts } from "./fake-accounts.ts";
import { startTestProxy, type TestProxy } from "./test-proxy.ts";

/** A pool key named by its last characters, so a call's key reads back as `a1`, `b1`… */
export const orKey = (name: string) => `sk-or-v1-${"x".repeat(50)}-${name}`;
export const id = keyIdOf;
export const FREE = "meta-llama/llama-3.3-70b-instruct:free";
export const OTHER_FREE = "deepseek/deepseek-chat-v3-0324:free";
export const PAID = "openai/gpt-4o-mini";
export const adminToken = "admin-token-for-tests";
/** 2026-03-01 10:00:00 UTC (a Sunday): fourteen hours before the daily reset. */
export const START = Date.UTC(2026, 2, 1, 10, 0, 0);
export const MIDNIGHT = Date.UTC(2026, 2, 2);

/** The upstream's calls other than GET /key, as `key name → kind`. */
export const trail = (upstream: FakeAccounts) => upstream.chatCalls().map((call) => `${call.key.slice(-2)} ${call.kind}`);
export const restsOf = (proxy: TestProxy, account: string) => proxy.pool.accountViews().find((view) => view.id === account)?.rests ?? [];
export const recordOf = (proxy: TestProxy, key: string) => proxy.pool.records().find((record) => record.id === id(key));

/** What every proxy of a file starts with; a test's own options go on top. */
export interface AccountsSuiteOptions {
  config?: Partial<Config>;
  overrides?: ProxyOverrides;
  /**
   * false: `startProxy` returns as soon as the proxy serves, before its GET /key lookups are
   * answered (for tests of what happens meanwhile; they await `proxy.discovery` themselves).
   */
  awaitDiscovery?: boolean;
}

export interface AccountsProxyOptions {
  /** Keys written to the keys file; `null` writes no file (a restart from saved state). */
  keys?: string[] | null;
  config?: Partial<Config>;
  overrides?: ProxyOverrides;
  /** The proxy's folder (keys file, logs), kept by the test instead of a fresh temporary one. */
  dir?: string;
}

export interface AccountsSuite {
  /** The injected clock of the fake and every proxy: tests move `clock.now`. */
  clock: { now: number };
  /** Run after each test, last added first. */
  cleanups: Array<() => Promise<void>>;
  /** Proxies a test already stopped (a restart): the cleanup leaves them be. */
  closed: WeakSet<TestProxy>;
  /** The test's upstream: these accounts, on the suite's clock; stopped after the test. */
  startFake(accounts: FakeAccountSpec[]): FakeAccounts;
  /** A real proxy in front of `upstream` with ADMIN_TOKEN `adminToken`, closed after the test. */
  startProxy(upstream: FakeAccounts, options?: AccountsProxyOptions): Promise<TestProxy>;
}

export function useAccountsSuite({ config: fileConfig = {}, overrides: fileOverrides = {}, awaitDiscovery = true }: AccountsSuiteOptions = {}): AccountsSuite {
  const clock = { now: START };
  const cleanups: Array<() => Promise<void>> = [];
  const closed = new WeakSet<TestProxy>();
  let fake: FakeAccounts | undefined;

  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    await fake?.stop();
    fake = undefined;
    clock.now = START;
  });

  function startFake(accounts: FakeAccountSpec[]): FakeAccounts {
    fake = startFakeAccounts({ accounts, now: () => clock.now });
    return fake;
  }

  async function startProxy(upstream: FakeAccounts, { keys, config = {}, overrides = {}, dir }: AccountsProxyOptions = {}): Promise<TestProxy> {
    const proxy = await startTestProxy({
      upstream: upstream.url,
      ...(keys === undefined ? {} : { keys }),
      ...(dir ? { dir } : {}),
      config: { ADMIN_TOKEN: adminToken, ...fileConfig, ...config },
      overrides: { now: () => clock.now, ...fileOverrides, ...overrides },
    });
    cleanups.push(async () => {
      if (!closed.has(proxy)) await proxy.close();
    });
    if (awaitDiscovery) await proxy.discovery;
    return proxy;
  }

  return { clock, cleanups, closed, startFake, startProxy };
}
