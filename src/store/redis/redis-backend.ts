/**
 * What `serve` runs on when REDIS_URL is set, in one place so compose.ts only asks for it: the
 * shared state (shared-state.ts), the key list as the store (redis-key-store.ts), the pool bridge
 * and the free-model reservation (shared-pool.ts), the discovery lease (below), and the one
 * line in the logs when Redis becomes unreachable and the one when it is back. The clients have a
 * store of their own (client-store.ts).
 *
 * A lease in Redis: work that one instance should do for all (account discovery, `GET /key` in
 * the background; importing KEYS_FILE into an empty Redis once) is done by whoever holds it.
 * The holder renews it well within `ttlMs`; if it dies, the lease expires and another instance
 * takes it. Only the holder can renew or release it (compare-and-act in one script), so an
 * instance that was paused past the TTL cannot cut short its successor's lease.
 */
import type { Config } from "../../config.ts";
import { createJsonFileStore } from "../file/json-file-store.ts";
import type { KeyPool } from "../../keys/key-pool.ts";
import type { KeyStore, StoreLoad } from "../ports.ts";
import type { EventBus } from "../../domain/events.ts";
import type { Reserve } from "../../upstream/forward-types.ts";
import type { CallResult, RedisConnection } from "./connection.ts";
import { luaScript, runScript } from "./scripts.ts";
import { createRedisKeyStore } from "./redis-key-store.ts";
import { freeSlotReserve, startSharedPool, type SharedPool } from "./shared-pool.ts";
import { openSharedState, type SharedState } from "./shared-state.ts";

export interface RedisBackend {
  shared: SharedState;
  store: KeyStore;
  /** Wires a pool to the shared state; `reserve` takes free-model slots for the request run. */
  attach(input: { pool: KeyPool; events: EventBus }): { reserve: Reserve; sharedPool: SharedPool };
  /**
   * The keys to start with: Redis's list; when Redis holds none and KEYS_FILE has keys, the file
   * imported once (under a lease, so one instance does it) and said so; when Redis cannot be
   * reached, KEYS_FILE's keys, served from memory until it is back.
   */
  initialLoad(): Promise<StoreLoad>;
  /** Whether this instance does the background GET /key work for all (below). */
  discovery: DiscoveryLease;
  /** Redis is unreachable now (the instance serves from memory). */
  readonly degraded: boolean;
  stop(): Promise<void>;
}

export interface RedisBackendOptions {
  config: Pick<Config, "REDIS_URL" | "REDIS_PREFIX" | "KEYS_ENCRYPTION_KEY" | "KEYS_FILE" | "FAILURE_THRESHOLD" | "REDIS_DISCOVERY_LEASE_SECONDS">;
  url: string;
  now: () => number;
  /** Where the degraded/recovered/import lines go: the logs (shared.state). */
  events: EventBus;
}

export async function openRedisBackend({ config, url, now, events }: RedisBackendOptions): Promise<{ ok: true; backend: RedisBackend } | { ok: false; message: string }> {
  const opened = await openSharedState({ url, prefix: config.REDIS_PREFIX, encryptionKey: config.KEYS_ENCRYPTION_KEY, failureThreshold: config.FAILURE_THRESHOLD });
  if (!opened.ok) return opened;
  const { shared } = opened;
  const file = await createJsonFileStore({ path: config.KEYS_FILE, now }).load();
  const store = createRedisKeyStore({ shared, url, now });
  const notice = (message: string) => events.emit("shared.state", { kind: "notice", message });
  const offDegraded = shared.connection.onChange(({ degraded, reason }) =>
    events.emit(
      "shared.state",
      degraded
        ? { kind: "degraded", message: `Redis unreachable (${reason}): serving from memory, changes queued until it is back` }
        : { kind: "recovered", message: "Redis reachable again: queued changes replayed, state resynced" },
    ),
  );
  let sharedPool: SharedPool | undefined;
  const discovery = startDiscoveryLease({
    connection: shared.connection,
    key: shared.keys.lease("discovery"),
    holder: shared.instanceId,
    ttlMs: Math.round(config.REDIS_DISCOVERY_LEASE_SECONDS * 1000),
  });
  return {
    ok: true,
    backend: {
      shared,
      store,
      discovery,
      get degraded() {
        return shared.connection.degraded;
      },
      async initialLoad() {
        const fromRedis = await store.load();
        if (fromRedis.ok && fromRedis.exists) return fromRedis;
        if (!fromRedis.ok) {
          if (fromRedis.kind === "invalid") return fromRedis; // KEYS_ENCRYPTION_KEY wrong or missing: one line, no start
          notice(`Redis unreachable at startup: serving the keys in ${config.KEYS_FILE} from memory until it is back`);
          return file.ok ? file : { ok: true, doc: { records: [], accounts: new Map(), extraTopLevel: {} }, exists: false };
        }
        if (!file.ok || file.doc.records.length === 0) return fromRedis;
        // Redis holds no keys and KEYS_FILE has some: the first instance to take the lease imports them, once.
        const lease = createLease({ connection: shared.connection, key: shared.keys.lease("import"), holder: shared.instanceId, ttlMs: 30_000 });
        const held = await lease.take();
        if (!held.ok || !held.value) return fromRedis; // another instance imports: its edits reach this one
        const records = file.doc.records;
        const imported = await store.update((doc) => ({ ...doc, records: [...doc.records, ...records.filter((record) => !doc.records.some((known) => known.id === record.id))] }));
        if (imported.ok) notice(`Redis held no keys: imported ${records.length} key${records.length === 1 ? "" : "s"} from ${config.KEYS_FILE} (once; Redis is where keys live now)`);
        return imported;
      },
      attach({ pool, events }) {
        sharedPool = startSharedPool({ pool, shared, events, now });
        return { reserve: freeSlotReserve({ pool, shared, now }), sharedPool };
      },
      async stop() {
        offDegraded();
        await discovery.stop();
        await sharedPool?.stop();
        await shared.close();
      },
    },
  };
}

// KEYS: the lease. ARGV: holder, ttl (ms). 1 when held by ARGV[1] afterwards (taken or renewed).
const TAKE_LEASE = luaScript(`
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
`);

// KEYS: the lease. ARGV: holder. 1 when it was ours and is now free.
const RELEASE_LEASE = luaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

interface LeaseOptions {
  connection: RedisConnection;
  /** The Redis key, e.g. `<prefix>lease:discovery`. */
  key: string;
  /** This instance's id (random per process). */
  holder: string;
  ttlMs: number;
}

export function createLease({ connection, key, holder, ttlMs }: LeaseOptions) {
  const held = (result: CallResult<unknown>): CallResult<boolean> => (result.ok ? { ok: true, value: result.value === 1 } : result);
  return {
    /** Takes the lease if free, renews it if ours; ok(true) when we hold it afterwards. */
    take: async () => held(await runScript(connection, TAKE_LEASE, [key], [holder, String(ttlMs)])),
    /** Frees it if we hold it (on shutdown), so another instance takes over without waiting. */
    release: async () => held(await runScript(connection, RELEASE_LEASE, [key], [holder])),
  };
}

/**
 * Account discovery under the lease: one instance at a time looks keys up for all and publishes
 * what it learns (shared-pool.ts `publishLearned`), so N instances do not ask OpenRouter N times
 * about every key. The lease is taken at start and renewed every third of its TTL (two renewals
 * may fail before it lapses); a clean stop releases it at once. While Redis cannot be reached
 * nobody can coordinate, so each instance does its own lookups (as without Redis): a duplicate
 * GET /key is cheaper than a key nobody looks up.
 */
export interface DiscoveryLease {
  /** Whether this instance does the background GET /key work now. */
  holds(): boolean;
  /** Settles when the first attempt to take the lease has (startup discovery waits for it). */
  readonly ready: Promise<void>;
  /** Stops renewing and frees the lease if held, so another instance takes over at once. */
  stop(): Promise<void>;
}

export function startDiscoveryLease(options: LeaseOptions): DiscoveryLease {
  const lease = createLease(options);
  let held = false;
  let stopped = false;
  const attempt = async (): Promise<void> => {
    if (stopped) return;
    const taken = await lease.take();
    held = taken.ok ? taken.value : true;
  };
  const ready = attempt();
  const timer = setInterval(() => void attempt(), Math.max(1, Math.floor(options.ttlMs / 3)));
  timer.unref?.();
  return {
    holds: () => held,
    ready,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await ready;
      if (held) await lease.release();
      held = false;
    },
  };
}
