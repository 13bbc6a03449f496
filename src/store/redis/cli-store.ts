/**
 * The stores a CLI subcommand uses when REDIS_URL is set: the key list (redis-key-store.ts) and
 * the client records (client-store.ts). Each is opened on first use, since most commands are done
 * before they would touch it, and listens to nothing: a command stores its edit, publishes it and
 * ends. A Redis that cannot be reached is the command's one-line error (a `StoreLoad` failure), as
 * a keys file that cannot be read is. The Redis modules are imported on first use, so every other
 * command starts as fast as without them.
 */
import type { Config } from "../../config.ts";
import type { KeyStore, StoreLoad } from "../ports.ts";
import { displayUrl } from "../../domain/redact.ts";

type CliConfig = Pick<Config, "REDIS_PREFIX" | "KEYS_ENCRYPTION_KEY" | "FAILURE_THRESHOLD">;

export function redisCliStore(config: CliConfig, url: string, timeoutMs = 2_000): KeyStore {
  return lazyStore(url, async () => {
    const [{ openSharedState }, { createRedisKeyStore }] = await Promise.all([import("./shared-state.ts"), import("./redis-key-store.ts")]);
    const opened = await openSharedState({ url, prefix: config.REDIS_PREFIX, encryptionKey: config.KEYS_ENCRYPTION_KEY, failureThreshold: config.FAILURE_THRESHOLD, timeoutMs, listen: false });
    if (!opened.ok) return { ok: false, kind: "invalid", message: opened.message };
    if (opened.shared.connection.degraded) return unreachable(url);
    return createRedisKeyStore({ shared: opened.shared, url });
  });
}

export function redisClientCliStore(config: Pick<Config, "REDIS_PREFIX">, url: string, timeoutMs = 2_000): KeyStore {
  return lazyStore(url, async () => {
    const [{ createRedisConnection }, { createRedisClientStore }, { redisKeys }] = await Promise.all([import("./connection.ts"), import("./client-store.ts"), import("./redis-keys.ts")]);
    const connection = createRedisConnection({ url, timeoutMs, connectTimeoutMs: timeoutMs });
    await connection.ready;
    if (!connection.degraded) return createRedisClientStore({ connection, keys: redisKeys(config.REDIS_PREFIX), url });
    await connection.close();
    return unreachable(url);
  });
}

const unreachable = (url: string): StoreLoad => ({ ok: false, kind: "io", message: `cannot reach Redis at ${displayUrl(url)}` });

function lazyStore(url: string, open: () => Promise<KeyStore | StoreLoad>): KeyStore {
  let opening: Promise<KeyStore | StoreLoad> | undefined;
  const opened = () => (opening ??= open());
  const isStore = (value: KeyStore | StoreLoad): value is KeyStore => "update" in value;
  return {
    name: `Redis at ${displayUrl(url)}`,
    async load() {
      const store = await opened();
      return isStore(store) ? store.load() : store;
    },
    async update(change) {
      const store = await opened();
      return isStore(store) ? store.update(change) : store;
    },
    watch: () => () => {},
  };
}
