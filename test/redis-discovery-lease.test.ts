/**
 * Account discovery under a lease in Redis (issue 14): with REDIS_URL the background GET /key work
 * runs on one instance at a time, which publishes what it learns (key → account, the day's
 * free-model limit) to the others. Real redis-server, real `serve` processes, a fake upstream on
 * loopback that counts GET /key; every wait is on something observable, never a fixed sleep.
 */
import { describe, expect, test } from "bun:test";
import { RedisClient } from "bun";
import { startFakeAccounts, type FakeAccounts } from "./helpers/fake-accounts.ts";
import { startProxyProcess, type ProxyProcess } from "./helpers/proxy-process.ts";
import { hasRedis, useRedisProxies } from "./helpers/redis-suite.ts";
import { eventually, testKeys } from "./helpers/test-proxy.ts";

const ADMIN = "admin-token-for-discovery-lease-0123456789";
const { redis, dir, freshPrefix, envFor, cli, startInstances } = useRedisProxies({ prefixStem: "dl", admin: ADMIN });

async function addKey(env: Record<string, string>, key: string): Promise<void> {
  expect((await cli(env, "add-key", key)).code).toBe(0);
}

/** The daily free limit each instance knows per account (what GET /key taught it, or the holder's news). */
async function freeLimits(instance: ProxyProcess): Promise<Map<string, number | null>> {
  const response = await fetch(`${instance.url}/admin/keys`, { headers: { authorization: `Bearer ${ADMIN}` } });
  const body = (await response.json()) as { accounts: Array<{ id: string; freeLimit: number | null }> };
  return new Map(body.accounts.map((account) => [account.id, account.freeLimit]));
}

const everyoneKnows = async (instances: ProxyProcess[], accounts: string[], limit: number): Promise<boolean> =>
  (await Promise.all(instances.map(freeLimits))).every((known) => accounts.every((account) => known.get(account) === limit));

const keyInfoCalls = (upstream: FakeAccounts, key?: string): number =>
  upstream.calls.filter((call) => call.kind === "key-info" && (key === undefined || call.key === key)).length;

describe.skipIf(!hasRedis)("account discovery under a Redis lease", () => {
  test("account discovery runs on one instance at a time: three instances starting on one pool send GET /key for each key once, not three times", async () => {
    const keys = [testKeys[0], testKeys[1], testKeys[2]] as string[];
    const upstream = startFakeAccounts({ accounts: keys.map((key, i) => ({ id: `user_${i}`, keys: [key], freePerDay: 50 })) });
    try {
      const env = envFor(freshPrefix(), upstream.url);
      for (const key of keys) await addKey(env, key);
      // add-key asks GET /key once per key itself; what the instances ask is counted from here.
      const before = keys.map((key) => keyInfoCalls(upstream, key));
      const instances = await startInstances(3, env);
      // Every instance knows every account's daily free limit: the holder learned it, the others heard it.
      await eventually(() => everyoneKnows(instances, ["user_0", "user_1", "user_2"], 50), { timeoutMs: 10_000, what: "the free limits on every instance" });
      expect(keys.map((key, i) => keyInfoCalls(upstream, key) - (before[i] as number))).toEqual([1, 1, 1]);
    } finally {
      await upstream.stop();
    }
  }, 40_000);

  test("when the discovery holder stops, another instance takes the lease after its TTL", async () => {
    const [first, added] = [testKeys[0], testKeys[1]] as [string, string];
    const upstream = startFakeAccounts({ accounts: [{ id: "user_a", keys: [first], freePerDay: 50 }, { id: "user_b", keys: [added], freePerDay: 1000 }] });
    const watcher = new RedisClient(redis.url);
    try {
      const env = envFor(freshPrefix(), upstream.url, { REDIS_DISCOVERY_LEASE_SECONDS: "1" });
      const leaseKey = `${env.REDIS_PREFIX}lease:discovery`;
      await addKey(env, first);
      const holder = await startProxyProcess({ cwd: dir, env });
      await eventually(async () => (await watcher.get(leaseKey)) !== null, { what: "the first instance's discovery lease" });
      const holderId = await watcher.get(leaseKey);
      const others = await startInstances(2, env);
      await eventually(() => everyoneKnows([holder, ...others], ["user_a"], 50), { what: "the first key's facts everywhere" });
      expect(await watcher.get(leaseKey)).toBe(holderId);

      // Killed, it cannot release the lease: it lapses after its TTL, and only then is it taken.
      const leftMs = Number(await watcher.send("PTTL", [leaseKey]));
      const killedAt = Date.now();
      holder.signal("SIGKILL");
      await holder.exited;
      await eventually(async () => {
        const now = await watcher.get(leaseKey);
        return now !== null && now !== holderId;
      }, { timeoutMs: 5_000, what: "another instance's lease" });
      expect(Date.now() - killedAt).toBeGreaterThanOrEqual(leftMs - 50);

      // The new holder does the work: a key added now is looked up once, by it, and both instances learn its account's limit.
      const beforeAdded = keyInfoCalls(upstream, added);
      await addKey(env, added);
      await eventually(() => everyoneKnows(others, ["user_b"], 1000), { what: "the added key's facts on both instances" });
      expect(keyInfoCalls(upstream, added) - beforeAdded).toBe(2); // add-key's own, and the new holder's
    } finally {
      watcher.close();
      await upstream.stop();
    }
  }, 40_000);
});
