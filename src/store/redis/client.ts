/**
 * Bun's Redis client as the supervised connection uses it: a dumb pipe. No auto-reconnect (a
 * client that reconnects on its own would come back without its subscriptions and with commands
 * of the past still queued, oven-sh/bun#27861 and #34374) and no offline queue (a call while
 * disconnected fails at once instead of waiting): connection.ts decides when to try again, with a
 * fresh client each time.
 */
import { RedisClient } from "bun";

export function newRedisClient(url: string, connectTimeoutMs: number): RedisClient {
  return new RedisClient(url, { autoReconnect: false, enableOfflineQueue: false, connectionTimeout: connectTimeoutMs, enableAutoPipelining: true });
}

/** Closes a client for good, without hearing its close. */
export function closeQuietly(client: RedisClient): void {
  client.onclose = null;
  try {
    client.close();
  } catch {
    // already closed
  }
}
