/**
 * One process's handle on the shared state in Redis: the supervised connection, the key list, the
 * scripts, the change channel and the change writer, opened once from REDIS_URL and shared by the
 * Redis key store (redis-key-store.ts) and the pool bridge (shared-pool.ts). The channel has one
 * subscription per process; whoever needs its messages or its resyncs registers a listener here.
 *
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
import type { StateChange } from "../../keys/state-change.ts";
import { createSecretBox, type SecretBox } from "../secret-box.ts";
import { createRedisConnection, type CallResult, type RedisConnection } from "./connection.ts";
import { createChangeWriter, createCounterBatcher, type ChangeWriter } from "./change-writer.ts";
import { createRedisKeyList, type RedisKeyList } from "./key-list.ts";
import { redisKeys, type RedisKeys } from "./redis-keys.ts";
import { sharedStateScripts, type SharedStateScripts } from "./scripts.ts";

export interface SharedStateOptions {
  url: string;
  prefix: string;
  /** KEYS_ENCRYPTION_KEY (unset: secrets stored as given). */
  encryptionKey?: string | undefined;
  failureThreshold: number;
  /** Longest wait for one Redis call (a paused Redis must not hang anyone). */
  timeoutMs?: number;
  /** Open the change channel (a server); a CLI command publishes without listening. */
  listen?: boolean;
}

export interface SharedState {
  readonly instanceId: string;
  readonly connection: RedisConnection;
  readonly keys: RedisKeys;
  readonly scripts: SharedStateScripts;
  readonly keyList: RedisKeyList;
  readonly writer: ChangeWriter;
  /** Publishes a change now (a person's edit); best effort, never queued. */
  publish(change: StateChange): Promise<unknown>;
  /** Changes made by other instances; returns an unsubscribe. */
  onRemoteChange(listener: (change: StateChange) => void): () => void;
  /** After every (re)subscribe, and every `resyncMs` as the backstop. */
  onResync(listener: () => void | Promise<void>): () => void;
  /** Redis disabled a key at the failure threshold on this instance's failure. */
  onVerdict(listener: (change: Extract<StateChange, { kind: "key-disabled" }>) => void): () => void;
  close(): Promise<void>;
}

export type OpenResult = { ok: true; shared: SharedState } | { ok: false; message: string };

export async function openSharedState({ url, prefix, encryptionKey, failureThreshold, timeoutMs = 250, listen = true }: SharedStateOptions): Promise<OpenResult> {
  const boxed = await createSecretBox(encryptionKey);
  if (!boxed.ok) return { ok: false, message: boxed.message };
  const box: SecretBox = boxed.value;
  const instanceId = crypto.randomUUID();
  const connection = createRedisConnection({ url, timeoutMs });
  await connection.ready;
  const keys = redisKeys(prefix);
  const scripts = sharedStateScripts(connection, keys);
  const keyList = createRedisKeyList({ connection, keys, scripts, box });
  const remote = new Set<(change: StateChange) => void>();
  const resyncs = new Set<() => void | Promise<void>>();
  const verdicts = new Set<(change: Extract<StateChange, { kind: "key-disabled" }>) => void>();
  const resync = async (): Promise<void> => {
    await Promise.all([...resyncs].map(async (listener) => listener()));
  };
  const channel: ChangeChannel = listen
    ? openChangeChannel({
        connection,
        keys,
        instanceId,
        onChange: (change) => {
          for (const listener of remote) listener(change);
        },
        onResync: resync,
      })
    : { publish: publisher(connection, keys, instanceId), close: async () => {} };
  const batcher = createCounterBatcher({ keys, instanceId });
  const writer = createChangeWriter({
    connection,
    scripts,
    batcher,
    publish: channel.publish,
    failureThreshold,
    onVerdict: (change) => {
      for (const listener of verdicts) listener(change);
    },
  });
  const register = <T>(set: Set<T>, listener: T): (() => void) => {
    set.add(listener);
    return () => set.delete(listener);
  };
  return {
    ok: true,
    shared: {
      instanceId,
      connection,
      keys,
      scripts,
      keyList,
      writer,
      publish: channel.publish,
      onRemoteChange: (listener) => register(remote, listener),
      onResync: (listener) => register(resyncs, listener),
      onVerdict: (listener) => register(verdicts, listener),
      async close() {
        await writer.close();
        await writer.idle();
        await channel.close();
        await connection.close();
      },
    },
  };
}

export interface ChangeChannel {
  publish(change: StateChange): Promise<CallResult<unknown>>;
  close(): Promise<void>;
}

export interface ChangeChannelOptions {
  connection: RedisConnection;
  keys: RedisKeys;
  /** This instance's id (random per process): its own changes are not handed back to it. */
  instanceId: string;
  /** A change made by another instance (or the CLI), already checked against the schema. */
  onChange(change: StateChange, from: string): void;
  /** After every (re)subscribe: reload the shared state, since messages may have been missed. */
  onResync(): void | Promise<void>;
  /** A message that is not a change envelope (never applied). */
  onMalformed?(): void;
}

export function openChangeChannel({ connection, keys, instanceId, onChange, onResync, onMalformed }: ChangeChannelOptions): ChangeChannel {
  const subscription = connection.subscribe(keys.changes, {
    onMessage(message) {
      const envelope = parseEnvelope(message);
      if (envelope === undefined) onMalformed?.();
      else if (envelope.from !== instanceId) onChange(envelope.change, envelope.from);
    },
    onResync,
  });
  return { publish: publisher(connection, keys, instanceId), close: () => subscription.close() };
}

const publisher = (connection: RedisConnection, keys: RedisKeys, instanceId: string) => (change: StateChange) =>
  connection.send("PUBLISH", [keys.changes, JSON.stringify({ from: instanceId, change })]);

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
