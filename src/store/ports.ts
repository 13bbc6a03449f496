/**
 * The store port: what the server, the CLI and the admin API ask of a store, which both stores
 * implement, the JSON file (store/file/json-file-store.ts) and Redis (store/redis/redis-key-store.ts
 * for the key list, client-store.ts for the clients). The pool decides; a store remembers.
 *
 * People (an editor, `add-key`, the admin API) change the stored document through `update`; the
 * server's sync (state-sync.ts) saves what the pool learned. What a stored list and the server's
 * memory make together is one rule, the pool's `replaceKeys` (keys/key-edits.ts). The domain
 * folders (keys/, clients/) never name this port: storage depends on them, not the other way.
 */
import type { KeyFileDocument } from "../keys/schema.ts";

/**
 * What a store operation came to. Failures are values, never exceptions: `invalid` when the stored
 * data does not parse (nothing is written over it until a person fixes it), `io` when the system
 * refused (a missing or read-only folder, a full disk, no permission). `message` is one line that
 * names the file and the cause, and never holds a key.
 */
export type StoreLoad = { ok: true; doc: KeyFileDocument; exists: boolean } | StoreFailure;
export type StoreFailure = { ok: false; kind: "invalid" | "io"; message: string };

export interface KeyStore {
  /** A human name for messages, e.g. the file path. */
  readonly name: string;
  load(): Promise<StoreLoad>;
  /**
   * Read-modify-write under the store's lock (people's changes; the server's saves to the file).
   * `change` may run more than once (Redis runs it again when another edit landed in between),
   * so it must depend only on the document it is given; returning that same document writes nothing.
   */
  update(change: (doc: KeyFileDocument) => KeyFileDocument): Promise<StoreLoad>;
  /** Calls back with the stored list when someone else changes it; returns an unsubscribe. */
  watch(onChange: (result: StoreLoad) => void): () => void;
}
