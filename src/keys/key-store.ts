/**
 * Where key state is remembered: the port both stores implement, the JSON file (store/file/) and
 * Redis (store/redis/). The pool decides; a store remembers.
 *
 * People (an editor, `add-key`, the admin API) change the key list through `update`; the server's
 * sync (store/state-sync.ts) saves what the pool learned. What a stored list and the server's
 * memory make together is one rule, the pool's `replaceKeys` (key-edits.ts).
 */
import type { KeyFileDocument } from "./schema.ts";

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
