import { describe, expect, test } from "bun:test";
import { createLease } from "../src/store/redis/redis-backend.ts";
import { redisKeys } from "../src/store/redis/redis-keys.ts";
import { useRedisServer } from "./helpers/redis-suite.ts";

const key = redisKeys("orp:").lease("discovery");
const { connection } = useRedisServer({ connection: true });

const leaseFor = (holder: string, ttlMs = 60_000) => createLease({ connection, key, holder, ttlMs });

describe("a lease for work one instance does for all", () => {
  test("of several instances asking at once, exactly one holds it, and it keeps it when it renews", async () => {
    const leases = ["a", "b", "c", "d", "e"].map((holder) => leaseFor(holder));
    const results = await Promise.all(leases.map((lease) => lease.take()));
    const holders = results.flatMap((result, index) => (result.ok && result.value ? [index] : []));
    expect(holders.length).toBe(1);
    const holder = leases[holders[0] as number];
    expect(await holder?.take()).toEqual({ ok: true, value: true });
    for (const [index, lease] of leases.entries()) if (index !== holders[0]) expect(await lease.take()).toEqual({ ok: true, value: false });
  });

  test("when the holder stops renewing, another instance takes it once the TTL has passed", async () => {
    const a = leaseFor("a", 100);
    const b = leaseFor("b", 100);
    expect(await a.take()).toEqual({ ok: true, value: true });
    expect(await b.take()).toEqual({ ok: true, value: false });
    await Bun.sleep(150); // the lease's own TTL running out is what is tested
    expect(await b.take()).toEqual({ ok: true, value: true });
    expect(await a.take()).toEqual({ ok: true, value: false });
  });

  test("a release lets another take it at once, and only the holder can release it", async () => {
    const a = leaseFor("a");
    const b = leaseFor("b");
    await a.take();
    expect(await b.release()).toEqual({ ok: true, value: false });
    expect(await b.take()).toEqual({ ok: true, value: false });
    expect(await a.release()).toEqual({ ok: true, value: true });
    expect(await b.take()).toEqual({ ok: true, value: true });
  });
});
