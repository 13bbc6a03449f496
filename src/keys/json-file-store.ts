/**
 * The key store as one JSON file (`KEYS_FILE`).
 *
 * - Writes go to a temporary file in the same folder, are flushed to disk and swapped (or renamed)
 *   with the old file (mode 0600): a crash at any instant leaves the old file or the new one, never
 *   a torn one, and an edit made while the store wrote is merged, not lost (see `writeDoc`).
 * - Every read-modify-write holds `<file>.lock` (created exclusively), so the server and the CLI
 *   never interleave; a lock left by a dead process is broken after a few seconds.
 * - A file that does not parse is never written over; the error is returned as a value.
 * - `watch` polls the file (async stat, a few times a second) and reports changes that are not
 *   the store's own writes.
 */
import { readFileSync, renameSync } from "node:fs";
import { open, readFile, stat, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import type { z } from "zod";
import { findJsonSyntaxError } from "./json-syntax.ts";
import type { AccountState } from "./account-state.ts";
import { mergeKeyLists, type KeyStore, type StoreLoad } from "./key-store.ts";
import { KeyFileSchema, fileTextFromDocument, recordsFromFile, type KeyFileDocument, type KeyRecord } from "./schema.ts";
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
  /** How old a lock file must be before it is taken to be left by a dead process. */
  staleLockMs?: number;
}

export function parseKeyFile(text: string, name: string, now: number): StoreLoad {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    const where = findJsonSyntaxError(text);
    const detail = where
      ? `line ${where.line}, column ${where.column}: ${where.message}`
      : error instanceof Error
        ? error.message
        : String(error);
    return { ok: false, message: `${name} is not valid JSON (${detail})` };
  }
  const parsed = KeyFileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = deepestIssue(parsed.error.issues);
    const path = issue?.path.length ? issue.path.map((part) => (typeof part === "number" ? `[${part}]` : `.${String(part)}`)).join("") : "";
    const expected = 'expected {"keys":[{"key":"sk-or-v1-…","label":"…"}]} or ["sk-or-v1-…"]';
    return {
      ok: false,
      message: `${name} has the wrong shape${path ? ` at ${path.replace(/^\./, "")}` : ""}: ${issue?.message ?? "invalid"} (${expected})`,
    };
  }
  return { ok: true, doc: recordsFromFile(parsed.data, now), exists: true };
}

type ShapeIssue = { path: PropertyKey[]; message: string };

/**
 * The issue that says most precisely what is wrong. The file is a union (object form or bare
 * list) of unions (entry or key string), and zod reports a failed union as one "Invalid input" at
 * its root with each branch's issues inside, their paths relative to it: the deepest of those
 * names the field a person has to fix (`keys[1].key`), not just the file.
 */
function deepestIssue(issues: readonly z.core.$ZodIssue[], prefix: PropertyKey[] = []): ShapeIssue | undefined {
  let best: ShapeIssue | undefined;
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    const candidate =
      issue.code === "invalid_union" && issue.errors.length > 0
        ? deepestIssue(issue.errors.flat(), path)
        : { path, message: issue.message };
    if (candidate && (!best || candidate.path.length > best.path.length)) best = candidate;
  }
  return best;
}

export function createJsonFileStore({ path, now = Date.now, pollMs = 250, staleLockMs = 5000 }: JsonFileStoreOptions): KeyStore {
  const lockPath = `${path}.lock`;
  const name = path;
  /** The text this store last wrote or read: a file still holding it has not been edited by anyone else. */
  let lastKnownText: string | undefined;
  /** inode, size and mtime of the file this store last wrote. */
  let ownSignature: string | undefined;

  async function readText(): Promise<string | undefined> {
    try {
      return await readFile(path, "utf8");
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  function loadText(text: string | undefined): StoreLoad {
    if (text === undefined) return { ok: true, doc: { records: [], accounts: new Map(), extraTopLevel: {} }, exists: false };
    const result = parseKeyFile(text, name, now());
    if (result.ok) lastKnownText = text;
    return result;
  }

  function readTextSync(): string | undefined {
    try {
      return readFileSync(path, "utf8");
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async function readDoc(): Promise<StoreLoad> {
    return loadText(await readText());
  }

  /**
   * Writes `doc` over the file, which held `expected` when the caller read it.
   *
   * Where the system can exchange two files atomically (swap-files.ts), the new file is swapped in
   * and what came out is looked at: if it is not `expected`, someone edited the file after the
   * read; their text is returned (and kept in the temporary file) to be merged and written again.
   * Nothing anyone wrote is lost, whatever the timing. Elsewhere the file is compared with
   * `expected` and renamed over right after (returns "changed" on a difference); an edit landing
   * exactly between those two system calls is lost there.
   */
  async function writeDoc(doc: KeyFileDocument, expected: string | undefined): Promise<WriteResult> {
    const text = fileTextFromDocument(doc, now());
    const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`);
    const handle = await open(temp, "w", 0o600);
    let written: string;
    try {
      await handle.writeFile(text, "utf8");
      await handle.sync();
      // The rename keeps inode, size and mtime: the watcher knows this file as ours without reading it.
      written = signature(await handle.stat());
    } finally {
      await handle.close();
    }
    try {
      if (expected !== undefined && swapFiles(temp, path) === "swapped") {
        lastKnownText = text;
        ownSignature = written;
        const replaced = await readFile(temp, "utf8");
        if (replaced === expected) {
          await unlink(temp);
          return { kind: "written", text };
        }
        return { kind: "replaced-edit", text, theirs: replaced, keptIn: temp };
      }
      if (readTextSync() !== expected) {
        await unlink(temp);
        return { kind: "changed" };
      }
      renameSync(temp, path);
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
  function readModifyWrite(change: (current: Extract<StoreLoad, { ok: true }>) => KeyFileDocument | undefined): Promise<StoreLoad> {
    return withLock(async () => {
      let text = await readText();
      let expected = text;
      /** A temporary file holding an edit our write replaced, until that edit is back in the file. */
      let keptEdit: string | undefined;
      for (let attempt = 1; ; attempt++) {
        const current = loadText(text);
        if (!current.ok) {
          // An edit we replaced does not parse: it goes back in place, as its author left it.
          if (keptEdit) return { ...current, message: await putBack(keptEdit, expected, current.message) };
          return current;
        }
        const next = change(current) ?? (keptEdit ? current.doc : undefined);
        if (next === undefined) return current;
        const result = await writeDoc(next, expected);
        if (result.kind !== "changed" && keptEdit) await unlink(keptEdit).catch(() => {}); // merged into what was written
        if (result.kind === "written") return { ok: true, doc: next, exists: true };
        if (result.kind === "replaced-edit") {
          keptEdit = result.keptIn;
          text = result.theirs;
          expected = result.text;
        } else {
          text = await readText();
          expected = text;
        }
        if (attempt >= 10) throw new Error(`${name} kept changing while it was being written`);
      }
    });
  }

  /** Swaps an edit we replaced back into place; says where our own text went if it is not ours alone. */
  async function putBack(keptEdit: string, ours: string | undefined, message: string): Promise<string> {
    if (swapFiles(keptEdit, path) !== "swapped") return `${message} (the edit is kept in ${keptEdit})`;
    const cameOut = await readFile(keptEdit, "utf8").catch(() => undefined);
    if (cameOut === ours) {
      await unlink(keptEdit).catch(() => {});
      return message;
    }
    return `${message} (a version written in the meantime is kept in ${keptEdit})`;
  }

  async function withLock<T>(work: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + staleLockMs * 2;
    for (let wait = 2; ; wait = Math.min(wait * 2, 50)) {
      try {
        const handle = await open(lockPath, "wx", 0o600);
        await handle.writeFile(`${process.pid}\n`);
        await handle.close();
        break;
      } catch (error) {
        if (!isExists(error)) throw error;
        const age = await stat(lockPath).then((info) => Date.now() - info.mtimeMs, () => 0);
        if (age > staleLockMs || Date.now() > deadline) await unlink(lockPath).catch(() => {});
        await Bun.sleep(wait);
      }
    }
    try {
      return await work();
    } finally {
      await unlink(lockPath).catch(() => {});
    }
  }

  return {
    name,
    load: readDoc,

    save(ours: readonly KeyRecord[], accounts?: ReadonlyMap<string, AccountState>) {
      return readModifyWrite((current) => {
        // Nothing on disk and nothing to remember: do not create a file nobody asked for.
        if (!current.exists && ours.length === 0) return undefined;
        return {
          records: current.exists ? mergeKeyLists(current.doc.records, ours) : [...ours],
          // Account state is the server's alone: its memory wins.
          accounts: new Map(accounts ?? current.doc.accounts),
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
          const info = await stat(path).then(signature, () => "missing");
          if (info === lastSeen || info === ownSignature) return;
          lastSeen = info;
          const text = await readText();
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

function signature(info: { mtimeMs: number; size: number; ino: number }): string {
  return `${info.mtimeMs}:${info.size}:${info.ino}`;
}

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}

function isExists(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === "EEXIST";
}
