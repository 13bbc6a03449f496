/**
 * The clients the server knows, in memory: looked up by the SHA-256 of a presented key on the hot
 * path (a Map lookup, no I/O), and by name for the usage that answers report when they end.
 *
 * Two writers, as with keys: people change definitions (the file, the CLI, the admin API), the
 * server changes counters. `adopt` takes definitions from the store and keeps the counters held
 * here for the same client (same name and creation time), so a definition edited while requests
 * run loses none of them; a client removed and added again starts from zero.
 */
import type { ClientRecord } from "./client-schema.ts";
import { compileModelPatterns, type ModelMatcher } from "./model-globs.ts";
import { countRequest, settleUsage, type ClientUsage, type Held } from "./usage-windows.ts";

export interface LiveClient {
  readonly record: ClientRecord;
  /** Compiled `models` patterns; undefined: any model. */
  readonly allows?: ModelMatcher;
}

export interface ClientDirectory {
  /** How many clients exist: once there is one, the API needs a client key. */
  readonly size: number;
  byKeyHash(hash: string): LiveClient | undefined;
  byName(name: string): LiveClient | undefined;
  /** Takes the stored clients (definitions), keeping the counters held here. */
  adopt(clients: ReadonlyMap<string, ClientRecord>): void;
  records(): ClientRecord[];
  /** Counts an admitted request, with what it holds until it ends (its reservation). */
  countRequest(client: LiveClient, at: number, held?: Held): void;
  /**
   * A request of `client` admitted at `heldAt` has ended: what it held is released and `charged`
   * added. Counters follow the client's name and creation time (`adopt`), so a client removed
   * since is charged nothing.
   */
  settle(client: LiveClient, held: Held, heldAt: number, charged: Held, at: number): void;
  /** Subscribes to "counters or clients changed, persist me"; returns an unsubscribe. */
  onChange(listener: () => void): () => void;
}

const identityOf = (record: ClientRecord) => `${record.name}\u0000${record.createdAt}`;

export function createClientDirectory(initial: ReadonlyMap<string, ClientRecord> = new Map()): ClientDirectory {
  let byHash = new Map<string, LiveClient>();
  let byName = new Map<string, LiveClient>();
  const listeners = new Set<() => void>();
  const changed = () => {
    for (const listener of listeners) listener();
  };

  const adopt = (clients: ReadonlyMap<string, ClientRecord>) => {
    const nextByHash = new Map<string, LiveClient>();
    const nextByName = new Map<string, LiveClient>();
    for (const stored of clients.values()) {
      const known = byName.get(stored.name);
      const usage: ClientUsage = known && identityOf(known.record) === identityOf(stored) ? known.record.usage : stored.usage;
      // Adopted after every save: the compiled patterns are kept while they stay the same.
      const sameModels = known?.allows !== undefined && known.record.models?.join(",") === stored.models?.join(",");
      const allows = sameModels ? known.allows : stored.models ? compileModelPatterns(stored.models) : undefined;
      const live: LiveClient = { record: { ...stored, usage }, ...(allows ? { allows } : {}) };
      nextByName.set(stored.name, live);
      nextByHash.set(stored.keySha256, live);
    }
    byHash = nextByHash;
    byName = nextByName;
  };
  adopt(initial);

  return {
    get size() {
      return byName.size;
    },
    byKeyHash: (hash) => byHash.get(hash),
    byName: (name) => byName.get(name),
    adopt,
    records: () => [...byName.values()].map((live) => live.record),
    countRequest(client, at, held) {
      countRequest(client.record.usage, at, held);
      changed();
    },
    settle(client, held, heldAt, charged, at) {
      const live = byName.get(client.record.name);
      if (!live || live.record.usage !== client.record.usage) return;
      if (held.tokens === 0 && held.cost === 0 && charged.tokens === 0 && charged.cost === 0) return;
      settleUsage(live.record.usage, held, heldAt, charged.tokens, charged.cost, at);
      changed();
    },
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}
