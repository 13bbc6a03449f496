/**
 * The store a client subcommand (add-client, set-client, remove-client, rotate-client,
 * list-clients) uses when REDIS_URL is set: the client records in Redis (client-store.ts), opened
 * on first use, without listening (a command stores its edit, publishes it and ends). A Redis that
 * cannot be reached is the command's one-line error, as a keys file that cannot be read is.
 */
import type { Config } from "../../config.ts";
import type { KeyStore } from "../ports.ts";
import { displayUrl } from "../../domain/redact.ts";
import { clientCounterKeys } from "./client-counter-keys.ts";
import { createRedisClientStore } from "./client-store.ts";
import { createRedisConnection } from "./connection.ts";
import { lazyStore } from "./lazy-store.ts";

export function redisClientCliStore(config: Pick<Config, "REDIS_PREFIX">, url: string, timeoutMs = 2_000): KeyStore {
  return lazyStore(`Redis at ${displayUrl(url)}`, async () => {
    const connection = createRedisConnection({ url, timeoutMs, connectTimeoutMs: timeoutMs });
    await connection.ready;
    if (connection.degraded) {
      await connection.close();
      return { ok: false, kind: "io", message: `cannot reach Redis at ${displayUrl(url)}` };
    }
    return createRedisClientStore({ connection, keys: clientCounterKeys(config.REDIS_PREFIX), url });
  });
}
