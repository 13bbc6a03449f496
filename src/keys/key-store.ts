/**
 * Where key state is remembered. The pool decides; a store remembers. The JSON file is the first
 * implementation (json-file-store.ts); a shared one (Redis) can follow without touching the pool.
 *
 * Several writers share a store: people (an editor, `add-key`, the admin API) change the key list,
 * servers (one or more on the same file) change runtime state. A save merges (file-merge.ts): the
 * stored list wins for which keys exist and their labels, instants merge by max, counters add
 * each server's deltas to the stored totals, and a key a person has reset since (its `resetAt`
 * differs) keeps the person's reset.
 */
import type { AccountState } from "./account-state.ts";
import type { KeyFileDocument, KeyRecord } from "./schema.ts";

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
  /**
   * The store holds runtime state that other servers write too (the JSON file): saves merge with
   * it and the pool adopts it from what is read or written (file-merge.ts). Unset when runtime
   * state travels another way (Redis: as changes), and the pool takes only the key list from it.
   */
  readonly holdsSharedState?: boolean;
  load(): Promise<StoreLoad>;
  /**
   * Persists the server's records merged with whatever the store holds now (file-merge.ts): each
   * record's counters count beyond its `synced` base, each account beyond the `synced` it carries
   * (`accountsWithBase`). Returns what was written (so the pool can adopt outside changes), or an
   * error when the stored data is unreadable: then nothing is written over it.
   */
  save(ours: readonly KeyRecord[], accounts?: ReadonlyMap<string, AccountState>): Promise<StoreLoad>;
  /**
   * Read-modify-write for people's changes (CLI, admin API), under the store's lock. `change` may
   * run more than once (again when someone edits the file while it is being written), so it must
   * be a pure function of the document it is given.
   */
  update(change: (doc: KeyFileDocument) => KeyFileDocument): Promise<StoreLoad>;
  /** Calls back with the stored list when someone else changes it; returns an unsubscribe. */
  watch(onChange: (result: StoreLoad) => void): () => void;
}

/**
 * For a store that keeps no runtime state of its own (Redis: runtime state travels as changes):
 * the stored list wins for which keys exist and their labels, the server's memory for the rest,
 * except for a key a person has reset since (its `resetAt` differs).
 */
export function mergeKeyLists(theirs: readonly KeyRecord[], ours: readonly KeyRecord[]): KeyRecord[] {
  const oursById = new Map(ours.map((record) => [record.id, record]));
  return theirs.map((stored) => {
    const mine = oursById.get(stored.id);
    if (!mine || mine.resetAt !== stored.resetAt) return stored;
    const account = mine.account ?? stored.account;
    // What GET /key said last, whoever asked (add-key writes it; the server learns it too).
    const keyLimit = (stored.keyLimit?.checkedAt ?? 0) > (mine.keyLimit?.checkedAt ?? 0) ? stored.keyLimit : mine.keyLimit;
    return {
      ...mine,
      label: stored.label,
      extra: stored.extra,
      addedAt: stored.addedAt,
      ...(account === undefined ? {} : { account }),
      ...(keyLimit === undefined ? {} : { keyLimit }),
    };
  });
}
