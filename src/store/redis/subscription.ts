/**
 * One pub/sub channel on a connection of its own (a subscribed client can only (un)subscribe and
 * ping; one channel per client because a multi-channel SUBSCRIBE had reply-pairing bugs in Bun,
 * oven-sh/bun PR #32858). Subscriptions are not restored by Bun after a reconnect, so whenever the
 * connection is found lost (`check`, called by the connection's watchdog and after a recovery) a
 * fresh client subscribes again and `onResync` runs: messages published while it was away are
 * gone, and the caller reloads the state instead.
 *
 * Never double delivery: only the current client's messages are passed on, and a replaced client
 * is closed before its successor subscribes.
 */
import type { RedisClient } from "bun";
import { closeQuietly, withTimeout } from "./redis-client.ts";

export interface SubscriptionHandlers {
  onMessage(message: string): void;
  /** After every (re)subscribe, the first one included: reload what may have been missed. */
  onResync?(): void | Promise<void>;
}

export interface Subscription {
  /** Re-subscribes on a fresh connection if the current one is gone. */
  check(): void;
  close(): Promise<void>;
}

export interface SubscriptionOptions {
  channel: string;
  handlers: SubscriptionHandlers;
  newClient: () => RedisClient;
  timeoutMs: number;
  onClose: () => void;
}

export function createSubscription({ channel, handlers, newClient, timeoutMs, onClose }: SubscriptionOptions): Subscription {
  let client: RedisClient | undefined;
  let establishing = false;
  let closed = false;

  const establish = async (): Promise<void> => {
    establishing = true;
    try {
      if (client) closeQuietly(client);
      client = undefined;
      const fresh = newClient();
      const opened = await withTimeout(() => fresh.connect(), timeoutMs);
      const subscribed =
        opened.ok && !closed
          ? await withTimeout(
              () =>
                fresh.subscribe(channel, (message) => {
                  if (client === fresh && !closed) handlers.onMessage(message);
                }),
              timeoutMs,
            )
          : undefined;
      if (!subscribed?.ok || closed) {
        closeQuietly(fresh);
        return;
      }
      client = fresh;
      fresh.onclose = () => {
        if (client === fresh) check();
      };
      try {
        await handlers.onResync?.();
      } catch {
        // the caller's resync reports its own failures; a later check or backstop retries
      }
    } finally {
      establishing = false;
    }
  };

  const check = (): void => {
    if (closed || establishing || client?.connected) return;
    void establish();
  };

  check();
  return {
    check,
    async close() {
      closed = true;
      onClose();
      const last = client;
      client = undefined;
      if (last) {
        // unsubscribe before close (redis-notes); a client that is already gone may throw.
        await withTimeout(() => last.unsubscribe(channel), timeoutMs);
        closeQuietly(last);
      }
    },
  };
}

/**
 * A store's reload on every message heard, every resync and every `backstopMs` (for a message
 * missed while resubscribing), one at a time: a call while one runs asks for one more after it,
 * so a burst of messages costs two reloads, not one each.
 */
export function backedReload(run: () => Promise<void>, backstopMs: number): { reload: () => void; stop: () => void } {
  let running: Promise<void> | undefined;
  let again = false;
  const reload = (): void => {
    if (running) {
      again = true;
      return;
    }
    running = run().finally(() => {
      running = undefined;
      if (again) {
        again = false;
        reload();
      }
    });
  };
  const timer = setInterval(reload, backstopMs);
  timer.unref?.();
  return { reload, stop: () => clearInterval(timer) };
}
