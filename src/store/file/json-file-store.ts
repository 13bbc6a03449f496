/**
 * The key store as one JSON file (`KEYS_FILE`), written by one server and edited by people.
 *
 * - Every read-modify-write holds `<file>.lock` (file-lock.ts): the server's saves, the CLI's and
 *   the admin API's edits never interleave, so a write needs no merge: what it read under the
 *   lock is what it replaces. A person's editor takes no lock: a file found changed just before
 *   the rename is read again and the change run on it (see `write` for the instant that is left).
 * - A write goes to a temporary file next to the file (next to its target, when `KEYS_FILE` is a
 *   symbolic link: the link stays a link), is flushed to disk and renamed over the file (mode
 *   0600): a crash at any instant leaves the old file or the new one, never a torn one.
 * - Nothing is thrown past the store: a file that does not parse (never written over) and a file
 *   system that refuses (a missing or read-only folder, a full disk, a broken lock path) come back
 *   as values, with one line naming the file and the cause. A failed write leaves no temporary
 *   file and no lock.
 * - `watch` polls the file (async stat, a few times a second) and reports changes that are not
 *   the store's own writes.
 */
import { readFileSync, renameSync } from "node:fs";
import { readFile, stat, unlink } from "node:fs/promises";
import { parseKeyFile } from "./key-file-parse.ts";
import type { KeyStore, StoreFailure, StoreLoad } from "../ports.ts";
import { fileTextFromDocument, type KeyFileDocument } from "../../keys/schema.ts";
import { describeFileProblem, isNotFound, type FileAction } from "./file-problem.ts";
import { withFileLock } from "./file-lock.ts";
import { fileSignature, resolveTarget, writeTempFile } from "./file-target.ts";

export interface JsonFileStoreOptions {
  path: string;
  now?: () => number;
  /** How often `watch` looks at the file. */
  pollMs?: number;
  /** How old a lock of an owner that cannot be checked (another host) must be before it is broken. */
  staleLockMs?: number;
  /** Called after each write of the file (tests count them). */
  onWrite?: () => void;
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

export function createJsonFileStore({ path, now = Date.now, pollMs = 250, staleLockMs = 5000, onWrite }: JsonFileStoreOptions): KeyStore {
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
   * Writes `doc` over `target`, which held `expected` when it was read. Every writer that knows of
   * the lock holds it; a person's editor does not, so the file is compared with what was read
   * right before the rename: if it changed, nothing is written ("changed") and the caller reads
   * the edit and runs its change again. Without an atomic exchange an editor's save landing
   * between that comparison and the rename (microseconds, more if the process is descheduled right
   * then) can still be replaced; the key commands and the admin API take the lock and never are.
   */
  async function write(target: string, doc: KeyFileDocument, expected: string | undefined): Promise<"written" | "changed"> {
    const text = fileTextFromDocument(doc, now());
    // The rename keeps inode, size and mtime: the watcher knows this file as ours without reading it.
    const { path: temp, signature } = await writeTempFile(target, text);
    try {
      // Compared and renamed with no await between, to keep that window as short as it can be.
      if (readTextSync(target) !== expected) {
        await unlink(temp);
        return "changed";
      }
      renameSync(temp, target);
    } catch (error) {
      await unlink(temp).catch(() => {});
      throw error;
    }
    lastKnownText = text;
    ownSignature = signature;
    onWrite?.();
    return "written";
  }

  return {
    name,
    load,

    async update(change) {
      try {
        const target = await resolveTarget(path);
        return await withFileLock(`${target}.lock`, { staleMs: staleLockMs }, async (): Promise<StoreLoad> => {
          for (let attempt = 1; attempt <= 10; attempt++) {
            const text = await readText(target);
            const current = loadText(text);
            if (!current.ok) return current;
            const next = change(current.doc);
            if (next === current.doc) return current; // unchanged: write nothing
            if ((await write(target, next, text)) === "written") return { ok: true, doc: next, exists: true };
          }
          return { ok: false, kind: "io", message: `cannot write ${name}: it kept changing while it was being written; try again` };
        });
      } catch (error) {
        return failure(error, "write");
      }
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
