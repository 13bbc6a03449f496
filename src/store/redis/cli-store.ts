/**
 * The key store a CLI subcommand uses when REDIS_URL is set: the Redis key list
 * (redis-key-store.ts), opened on first use and without listening to the change channel (a
 * command publishes its edits and ends). A Redis that cannot be reached is the command's one-line
 * error, as a keys file that cannot be read is. The Redis modules are imported on first use.
 */
import type { Config } from "../../config.ts";
import type { KeyStore } from "../ports.ts";
import { displayUrl } from "../../domain/redact.ts";
import { lazyStore } from "./lazy-store.ts";

type CliConfig = Pick<Config, "REDIS_PREFIX" | "KEYS_ENCRYPTION_KEY" | "FAILURE_THRESHOLD">;

export function redisCliStore(config: CliConfig, url: string, timeoutMs = 2_000): KeyStore {
  return lazyStore(`Redis at ${displayUrl(url)}`, async () => {
    // Loaded only when REDIS_URL is set: every other command starts as fast as before.
    const [{ openSharedState }, { createRedisKeyStore }] = await Promise.all([import("./shared-state.ts"), import("./redis-key-store.ts")]);
    const opened = await openSharedState({ url, prefix: config.REDIS_PREFIX, encryptionKey: config.KEYS_ENCRYPTION_KEY, failureThreshold: config.FAILURE_THRESHOLD, timeoutMs, listen: false });
    if (!opened.ok) return { ok: false, kind: "invalid", message: opened.message };
    if (opened.shared.connection.degraded) return { ok: false, kind: "io", message: `cannot reach Redis at ${displayUrl(url)}` };
    return createRedisKeyStore({ shared: opened.shared, url });
  });
}
