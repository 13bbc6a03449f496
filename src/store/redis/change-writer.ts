/**
 * Where each change the pool makes goes in Redis, by its merge rule, so the pool only hands its
 * changes over (`record`, synchronous, never waits) and carries on:
 *
 * | change                       | in Redis                                         | published |
 * | ---------------------------- | ------------------------------------------------ | --------- |
 * | key-cooldown, key-disabled   | extend-only instant (void before a person's switch) | yes    |
 * | account-rest, model-rest     | extend-only instant                              | yes       |
 * | key-failure                  | the failure script; at the threshold Redis disables the key once, and that verdict is published and handed to `onVerdict` | verdict |
 * | key-success                  | the streak reset                                 | no        |
 * | key-counters, free-requests  | summed into the next counter batch (every `flushMs`) | no    |
 * | free-limit                   | the day's known limit                            | yes       |
 * | key-account                  | (the key list keeps accounts)                    | yes       |
 * | key-edit                     | not here: people's edits go through key-list.ts  | —         |
 * | local kinds and rests (pool-state.ts): a key's own rest, one until credits, a privacy rest, `free-used`, `key-limit`, `rests-cleared` | nowhere | no |
 *
 * `free-requests` is only for requests sent without a reservation (Redis was away): a granted
 * reservation has already counted its request. Writes go through the connection's queue, so an
 * outage delays them and never loses an instant (counter batches are idempotent too).
 */
import type { StateChange } from "../../keys/pool-state.ts";
import type { ChangeChannel } from "./change-channel.ts";
import type { RedisConnection, RedisWrite } from "./connection.ts";
import type { CounterBatcher } from "./counter-batch.ts";
import type { SharedStateScripts } from "./scripts.ts";

export interface ChangeWriterOptions {
  connection: RedisConnection;
  scripts: SharedStateScripts;
  batcher: CounterBatcher;
  channel: ChangeChannel;
  /** FAILURE_THRESHOLD: consecutive failures (counted across instances) that disable a key. */
  failureThreshold: number;
  /** How often counter deltas are written (one batch each time). */
  flushMs?: number;
  /** Redis disabled a key (this instance's failure reached the threshold): apply it locally too. */
  onVerdict?(change: Extract<StateChange, { kind: "key-disabled" }>): void;
}

export interface ChangeWriter {
  /** Hands a change over; never waits, never throws. */
  record(change: StateChange): void;
  /** Writes the pending counter batch now (at shutdown); resolves once sent or queued. */
  flush(): Promise<void>;
  /** Resolves when every write handed over so far is sent or queued (shutdown, tests). */
  idle(): Promise<void>;
  close(): Promise<void>;
}

export function createChangeWriter({
  connection,
  scripts,
  batcher,
  channel,
  failureThreshold,
  flushMs = 1_000,
  onVerdict,
}: ChangeWriterOptions): ChangeWriter {
  let inFlight = 0;
  const waiters: Array<() => void> = [];
  const track = (work: Promise<unknown>): void => {
    inFlight += 1;
    void work.finally(() => {
      inFlight -= 1;
      if (inFlight === 0) for (const wake of waiters.splice(0)) wake();
    });
  };
  const publish = (change: StateChange): void => track(channel.publish(change));
  const write = (...writes: RedisWrite[]): void => {
    for (const each of writes) track(connection.write(each));
  };

  const recordFailure = async (change: Extract<StateChange, { kind: "key-failure" }>): Promise<void> => {
    const reason = "consecutive failures reached FAILURE_THRESHOLD";
    const result = await scripts.recordFailure({ keyId: change.keyId, basis: change.basis, threshold: failureThreshold, now: change.at, reason });
    if (!result.ok || result.value === "void" || !result.value.disabled) return;
    const verdict: Extract<StateChange, { kind: "key-disabled" }> = { kind: "key-disabled", keyId: change.keyId, basis: change.basis, since: change.at, reason };
    publish(verdict);
    onVerdict?.(verdict);
  };

  const flush = async (): Promise<void> => {
    const batch = batcher.take();
    if (batch) await connection.write(batch);
  };
  const timer = setInterval(() => void flush(), flushMs);
  timer.unref?.();

  return {
    record(change) {
      switch (change.kind) {
        case "key-cooldown":
          write(scripts.extendCooldown({ keyId: change.keyId, basis: change.basis, until: change.until, cause: change }));
          return publish(change);
        case "key-disabled":
          write(scripts.extendDisabled(change));
          return publish(change);
        case "account-rest":
        case "model-rest": {
          // No instant carries these: a key's own cap, a rest until credits are seen again (only a
          // later GET /key ends it, and an extend-only instant would outlive that), a privacy
          // setting (a soft rest, which the shared cause text cannot say). Each instance learns them.
          if (change.cause === "privacy" || (change.kind === "account-rest" && (change.keyId !== undefined || change.untilCleared))) return;
          const restId = change.kind === "account-rest" ? `class:${change.modelClass}` : `model:${change.model}`;
          write(scripts.extendRest({ account: change.account, restId, until: change.until, cause: change }));
          return publish(change);
        }
        case "key-failure":
          // Redis decides the threshold across instances; without Redis the pool's own count does.
          track(recordFailure(change));
          return;
        case "key-success":
          return write(scripts.recordSuccess(change.keyId, change.basis));
        case "key-counters":
          return batcher.add(change.keyId, change.delta, change.lastUsedAt);
        case "free-requests":
          return batcher.addFree(change.account, change.day, change.delta);
        case "free-limit":
          write(...scripts.learnFreeLimit(change.account, change.day, change.limit));
          return publish(change);
        case "key-account":
          return publish(change);
        case "key-edit":
          return; // people's edits: key-list.ts
        case "free-used":
        case "key-limit":
        case "rests-cleared":
          return; // local (pool-state.ts)
      }
    },
    flush,
    idle: () => (inFlight === 0 ? Promise.resolve() : new Promise((resolve) => waiters.push(resolve))),
    async close() {
      clearInterval(timer);
      await flush();
    },
  };
}
