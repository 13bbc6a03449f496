/**
 * An instance that does not hold the discovery lease (REDIS_URL, several instances) leaves the
 * GET /key of an added key to the holder, which publishes what it learns. If those facts do not
 * come (the holder died before asking), the instance looks the key up itself after a wait, so a
 * key is never kept from free models for long. The real refresher and pool, the real GET /key
 * against the fake accounts upstream on loopback; the wait is shortened to keep the test quick.
 */
import { afterEach, expect, test } from "bun:test";
import { startAccountRefresher, type AccountRefresher } from "../src/keys/account-refresh.ts";
import { createKeyPool, type KeyPool } from "../src/keys/key-pool.ts";
import { newKeyRecord } from "../src/keys/schema.ts";
import { createEventBus } from "../src/observe/event-bus.ts";
import { checkKey } from "../src/upstream/key-info.ts";
import { id, orKey } from "./helpers/accounts-suite.ts";
import { startFakeAccounts, type FakeAccounts } from "./helpers/fake-accounts.ts";
import { eventually } from "./helpers/test-proxy.ts";

const FACTS_WAIT_MS = 300;
const [held, added, later] = [orKey("h1"), orKey("n1"), orKey("n2")];
const stops: Array<() => Promise<void> | void> = [];

afterEach(async () => {
  for (const stop of stops.splice(0).reverse()) await stop();
});

/** A pool that already serves `held`, with the refresher of an instance that is not the holder. */
function notTheHolder(upstream: FakeAccounts): { pool: KeyPool; refresher: AccountRefresher } {
  const events = createEventBus();
  const pool = createKeyPool({ rotation: "sticky", failureThreshold: 3, events, holdAddedKeys: true });
  pool.replaceKeys([newKeyRecord(held, Date.now())]);
  const refresher = startAccountRefresher({
    pool,
    events,
    checkKey: (secret) => checkKey(secret, { baseUrl: upstream.url }),
    holdsLease: () => false,
    factsWaitMs: FACTS_WAIT_MS,
    tickEveryMs: 0,
  });
  stops.push(() => refresher.stop());
  return { pool, refresher };
}

function startUpstream(): FakeAccounts {
  const upstream = startFakeAccounts({ accounts: [{ id: "user_H", keys: [held] }, { id: "user_N", keys: [added, later] }] });
  stops.push(() => upstream.stop());
  return upstream;
}

const lookupsOf = (upstream: FakeAccounts, key: string) => upstream.calls.filter((call) => call.path === "/key" && call.key === key).length;

test("without the lease, an added key whose facts the holder never sends is looked up here once the wait is over, not before", async () => {
  const upstream = startUpstream();
  const { pool, refresher } = notTheHolder(upstream);
  const addedAt = performance.now();
  pool.replaceKeys([...pool.records(), newKeyRecord(added, Date.now())]);
  expect(pool.pendingLookups()).toEqual([id(added)]);

  await eventually(() => pool.pendingLookups().length === 0, { timeoutMs: 5000, what: "the key's own lookup after the wait" });
  expect(performance.now() - addedAt).toBeGreaterThanOrEqual(FACTS_WAIT_MS - 5); // timers may fire a hair early
  await refresher.idle();
  expect(lookupsOf(upstream, added)).toBe(1);
  expect(pool.records().find((record) => record.id === id(added))?.account).toBe("user_N");
});

test("without the lease, an added key whose facts the holder sends within the wait is never looked up here", async () => {
  const upstream = startUpstream();
  const { pool, refresher } = notTheHolder(upstream);
  pool.replaceKeys([...pool.records(), newKeyRecord(added, Date.now())]);
  expect(pool.pendingLookups()).toEqual([id(added)]);

  // What the holder publishes (shared-pool.ts hands it to the pool the same way).
  pool.learn(id(added), { account: "user_N" });
  expect(pool.pendingLookups()).toEqual([]);
  // Another key added after it, whose facts never come: once it has been looked up, the first
  // key's wait (which started earlier) is over too, and found nothing to do.
  pool.replaceKeys([...pool.records(), newKeyRecord(later, Date.now())]);
  await eventually(() => pool.pendingLookups().length === 0, { timeoutMs: 5000, what: "the later key's own lookup" });
  await refresher.idle();
  expect([lookupsOf(upstream, added), lookupsOf(upstream, later)]).toEqual([0, 1]);
});
