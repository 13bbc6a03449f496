/**
 * Changes travel between instances on one pub/sub channel (`<prefix>changes`), each in an
 * envelope naming the instance that made it, so an instance never applies its own twice:
 *
 *   {"from":"<instance id>","change":{…StateChange…}}
 *
 * Publishing is best effort and never queued: a change missed while Redis was away (or while a
 * subscriber was reconnecting) is recovered by the resync that follows every (re)subscribe and
 * the periodic backstop, never by replaying a message (a replayed counter delta would count
 * twice at the receivers). What must not be lost is written to Redis's own structures
 * (scripts.ts) through the connection's queue; the channel only makes others see it sooner.
 */
import { stateChangeOf } from "../../keys/change-schema.ts";
import type { StateChange } from "../../keys/pool-state.ts";
import type { CallResult, RedisConnection } from "./connection.ts";
import type { RedisKeys } from "./redis-keys.ts";
import type { Subscription } from "./subscription.ts";

export interface ChangeChannelOptions {
  connection: RedisConnection;
  keys: RedisKeys;
  /** This instance's id (random per process): its own changes are not handed back to it. */
  instanceId: string;
  /** A change made by another instance (or the CLI), already checked against the schema. */
  onChange(change: StateChange, from: string): void;
  /** After every (re)subscribe: reload the shared state, since messages may have been missed. */
  onResync(): void | Promise<void>;
  /** A message that is not a change envelope (counted by the caller; never applied). */
  onMalformed?(): void;
}

export interface ChangeChannel {
  publish(change: StateChange): Promise<CallResult<unknown>>;
  readonly subscribed: boolean;
  close(): Promise<void>;
}

export function openChangeChannel({ connection, keys, instanceId, onChange, onResync, onMalformed }: ChangeChannelOptions): ChangeChannel {
  const subscription: Subscription = connection.subscribe(keys.changes, {
    onMessage(message) {
      const envelope = parseEnvelope(message);
      if (envelope === undefined) {
        onMalformed?.();
        return;
      }
      if (envelope.from !== instanceId) onChange(envelope.change, envelope.from);
    },
    onResync,
  });
  return {
    publish: (change) => connection.send("PUBLISH", [keys.changes, JSON.stringify({ from: instanceId, change })]),
    get subscribed() {
      return subscription.subscribed;
    },
    close: () => subscription.close(),
  };
}

function parseEnvelope(message: string): { from: string; change: StateChange } | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(message);
  } catch {
    return undefined;
  }
  if (typeof raw !== "object" || raw === null) return undefined;
  const { from, change } = raw as { from?: unknown; change?: unknown };
  if (typeof from !== "string" || from === "") return undefined;
  const parsed = stateChangeOf(change);
  return parsed === undefined ? undefined : { from, change: parsed };
}
