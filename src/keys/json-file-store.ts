/**
 * The key store as one JSON file (`KEYS_FILE`).
 *
 * - Writes go to a temporary file next to the file (next to its target, when `KEYS_FILE` is a
 *   symbolic link: the link stays a link), are flushed to disk and swapped (or renamed) with the
 *   old file (mode 0600): a crash at any instant leaves the old file or the new one, never a torn
 *   one, and an edit made while the store wrote is merged, not lost (see `writeDoc`).
 * - Every read-modify-write holds `<file>.lock` (file-lock.ts), so the server and the CLI never
 *   interleave; a lock left by a dead process is taken over at once.
 * - Nothing is thrown past the store: a file that does not parse (never written over) and a file
 *   system that refuses (a missing or read-only folder, a full disk) come back as values, with
 *   one line naming the file and the cause. A failed write leaves no temporary file and no lock.
 * - `watch` polls the file (async stat, a few times a second) and reports changes that are not
 *   the store's own writes.
 */
import { readFileSync, renameSync } from "node:fs";
import { readFile, stat, unlink } from "node:fs/promises";
import type { AccountState } from "./account-state.ts";
import { describeFileProblem, isNotFound, type FileAction } from "./file-problem.ts";
import { withFileLock } from "./file-lock.ts";
import { fileSignature, resolveTarget, writeTempFile } from "./file-target.ts";
import { parseKeyFile } from "./key-file-parse.ts";
import { countsOf, mergeAccountsForSave, mergeKeysForSave } from "./file-merge.ts";
import { type KeyStore, type StoreFailure, type StoreLoad } from "./key-store.ts";
import { fileTextFromDocument, type KeyFileDocument, type KeyRecord } from "./schema.ts";
import { swapFiles } from "./swap-files.ts";

/** How a write went: done; not done because the file changed; or done over an edit, returned to merge. */
type WriteResult =
  | { kind: "written"; text: string }
  | { kind: "changed" }
  | { kind: "replaced-edit"; text: string; theirs: string; keptIn: string };

export interface JsonFileStoreOptions {
  path: string;
  now?: () => number;
  /** How often `watch` looks at the file. */
  pollMs?: number;
  /** How old a lock of an owner that cannot be checked (another host) must be before it is broken. */
  staleLockMs?: number;
}

/** A failed file call, tagged with what was being done, so the message says "read" or "write". */
class FileProblem extends Error {
  constructor(
    readonly action: FileAction,
    readonly original: unknown,
  ) {
    super("file problem");
  }
}

export function createJsonFileStore({ path, now = Date.now, pollMs = 250, staleLockMs = 5000 }: JsonFileStoreOptions): KeyStore {
  const name = path;
  /** The text this store last wrote or read: a file still holding it has not been edited by anyone else. */
  let lastKnownText: string | undefined;
  /** inode, size and mtime of the file this store last wrote. */
  let ownSignature: string | undefined;

  const failure = (error: unknown, action: FileAction): StoreFailure => {
    if (error instanceof FileProblem) return { ok: false, kind: "io", message: describeFileProblem(error.action, name, error.original) };
    return { ok: false, kind: "io", message: describeFileProblem(action, name, error) };
  };

  async function readText(file: string): Promise<string | undefined> {
    try {
      return await readFile(file, "utf8");
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw new FileProblem("read", error);
    }
  }

  function loadText(text: string | undefined): StoreLoad {
    if (text === undefined) return { ok: true, doc: { records: [], accounts: new Map(), extraTopLevel: {} }, exists: false };
    const result = parseKeyFile(text, name, now());
    if (result.ok) lastKnownText = text;
    return result;
  }

  function readTextSync(file: string): string | undefined {
    try {
      return readFileSync(file, "utf8");
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw new FileProblem("read", error);
    }
  }

  async function load(): Promise<StoreLoad> {
    try {
      const text = await readText(path);
      // No file yet: fine, unless its folder is missing too (then no write could ever succeed).
      if (text === undefined) await resolveTarget(path);
      return loadText(text);
    } catch (error) {
      return failure(error, "read");
    }
  }

  /**
   * Writes `doc` over `target`, which held `expected` when the caller read it.
   *
   * Where the system can exchange two files atomically (swap-files.ts), the new file is swapped in
   * and what came out is looked at: if it is not `expected`, someone edited the file after the
   * read; their text is returned (and kept in the temporary file) to be merged and written again.
   * Nothing anyone wrote is lost, whatever the timing. Elsewhere the file is compared with
   * `expected` and renamed over right after (returns "changed" on a difference); an edit landing
   * exactly between those two system calls is lost there.
   */
  async function writeDoc(target: string, doc: KeyFileDocument, expected: string | undefined): Promise<WriteResult> {
    const text = fileTextFromDocument(doc, now());
    // The rename keeps inode, size and mtime: the watcher knows this file as ours without reading it.
    const { path: temp, signature: written } = await writeTempFile(target, text);
    try {
      if (expected !== undefined && swapFiles(temp, target) === "swapped") {
        lastKnownText = text;
        ownSignature = written;
        const replaced = await readFile(temp, "utf8");
        if (replaced === expected) {
          await unlink(temp);
          return { kind: "written", text };
        }
        return { kind: "replaced-edit", text, theirs: replaced, keptIn: temp };
      }
      if (readTextSync(target) !== expected) {
        await unlink(temp);
        return { kind: "changed" };
      }
      renameSync(temp, target);
    } catch (error) {
      await unlink(temp).catch(() => {});
      throw error;
    }
    lastKnownText = text;
    ownSignature = written;
    return { kind: "written", text };
  }

  /**
   * Read, change, write, under the lock; read and change again when someone edited the file
   * while it was being written. `change` returns undefined to leave the file as it is.
   */
  async function readModifyWrite(change: (current: Extract<StoreLoad, { ok: true }>) => KeyFileDocument | undefined): Promise<StoreLoad> {
    try {
      const target = await resolveTarget(path);
      return await withFileLock(`${target}.lock`, { staleMs: staleLockMs }, () => changeLocked(target, change));
    } catch (error) {
      return failure(error, "write");
    }
  }

  async function changeLocked(target: string, change: (current: Extract<StoreLoad, { ok: true }>) => KeyFileDocument | undefined): Promise<StoreLoad> {
    let text = await readText(target);
    let expected = text;
    /** A temporary file holding an edit our write replaced, until that edit is back in the file. */
    let keptEdit: string | undefined;
    for (let attempt = 1; ; attempt++) {
      const current = loadText(text);
      if (!current.ok) {
        // An edit we replaced does not parse: it goes back in place, as its author left it.
        if (keptEdit) return { ...current, message: await putBack(target, keptEdit, expected, current.message) };
        return current;
      }
      const next = change(current) ?? (keptEdit ? current.doc : undefined);
      if (next === undefined) return current;
      const result = await writeDoc(target, next, expected);
      if (result.kind !== "changed" && keptEdit) await unlink(keptEdit).catch(() => {}); // merged into what was written
      if (result.kind === "written") return { ok: true, doc: next, exists: true };
      if (result.kind === "replaced-edit") {
        keptEdit = result.keptIn;
        text = result.theirs;
        expected = result.text;
      } else {
        text = await readText(target);
        expected = text;
      }
      if (attempt >= 10) return { ok: false, kind: "io", message: `cannot write ${name}: it kept changing while it was being written; try again` };
    }
  }

  /** Swaps an edit we replaced back into place; says where our own text went if it is not ours alone. */
  async function putBack(target: string, keptEdit: string, ours: string | undefined, message: string): Promise<string> {
    if (swapFiles(keptEdit, target) !== "swapped") return `${message} (the edit is kept in ${keptEdit})`;
    const cameOut = await readFile(keptEdit, "utf8").catch(() => undefined);
    if (cameOut === ours) {
      await unlink(keptEdit).catch(() => {});
      return message;
    }
    return `${message} (a version written in the meantime is kept in ${keptEdit})`;
  }

  return {
    name,
    holdsSharedState: true,
    load,

    save(ours: readonly KeyRecord[], accounts?: ReadonlyMap<string, AccountState>) {
      return readModifyWrite((current) => {
        // Nothing on disk and nothing to remember: do not create a file nobody asked for.
        if (!current.exists && ours.length === 0) return undefined;
        // Another server may share the file: its news is merged with ours, not written over (file-merge.ts).
        return {
          records: current.exists ? mergeKeysForSave(current.doc.records, ours) : ours.map((record) => ({ ...record, synced: countsOf(record) })),
          accounts: accounts === undefined ? current.doc.accounts : mergeAccountsForSave(current.doc.accounts, accounts, now()),
          extraTopLevel: current.doc.extraTopLevel,
        };
      });
    },

    update(change) {
      return readModifyWrite((current) => {
        const next = change(current.doc);
        return next === current.doc ? undefined : next; // unchanged: write nothing
      });
    },

    watch(onChange) {
      let lastSeen = "";
      let busy = false;
      let reportedText: string | undefined;
      const timer = setInterval(async () => {
        if (busy) return;
        busy = true;
        try {
          const info = await stat(path).then(fileSignature, () => "missing");
          if (info === lastSeen || info === ownSignature) return;
          lastSeen = info;
          const text = await readText(path);
          if (text === undefined || text === lastKnownText || text === reportedText) return;
          const result = parseKeyFile(text, name, now());
          if (result.ok) lastKnownText = text;
          else reportedText = text; // report a broken file once, not on every poll
          onChange(result);
        } catch {
          // A file caught mid-replace or briefly unreadable: the next poll looks again.
        } finally {
          busy = false;
        }
      }, pollMs);
      timer.unref();
      return () => clearInterval(timer);
    },
  };
}
