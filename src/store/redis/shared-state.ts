/**
 * One process's handle on the shared state in Redis (issue 14): the supervised connection, the
 * key list, the scripts, the change channel and the change writer, opened once from REDIS_URL and
 * shared by the Redis key store (redis-key-store.ts), the pool bridge (shared-pool.ts) and the
 * free-model reservation (free-reservation.ts). The channel has one subscription per process;
 * whoever needs its messages or its resyncs registers a listener here.
 */
import type { StateChange } from "../../keys/pool-state.ts";
import { createSecretBox, type SecretBox } from "../secret-box.ts";
import { openChangeChannel, type ChangeChannel } from "./change-channel.ts";
import { createRedisConnection, type RedisConnection } from "./connection.ts";
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
  /** Publishes a change now (a person's edit); best effort, never queued (change-channel.ts). */
  publish(change: StateChange): Promise<void>;
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
    : { publish: (change) => connection.send("PUBLISH", [keys.changes, JSON.stringify({ from: instanceId, change })]), subscribed: false, close: async () => {} };
  const batcher = createCounterBatcher({ keys, instanceId });
  const writer = createChangeWriter({
    connection,
    scripts,
    batcher,
    channel,
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
      publish: async (change) => {
        await channel.publish(change);
      },
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
