/**
 * The key store as one JSON file (`KEYS_FILE`).
 *
 * - Writes go to a temporary file in the same folder, are flushed to disk and renamed over the
 *   old file (mode 0600): a crash at any instant leaves the old file or the new one, never a torn one.
 * - Every read-modify-write holds `<file>.lock` (created exclusively), so the server and the CLI
 *   never interleave; a lock left by a dead process is broken after a few seconds.
 * - A file that does not parse is never written over; the error is returned as a value.
 * - `watch` polls the file (async stat, a few times a second) and reports changes that are not
 *   the store's own writes.
 */
import { open, readFile, rename, stat, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { findJsonSyntaxError } from "./json-syntax.ts";
import { mergeKeyLists, type KeyStore, type StoreLoad } from "./key-store.ts";
import { KeyFileSchema, fileTextFromDocument, recordsFromFile, type KeyFileDocument, type KeyRecord } from "./schema.ts";

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
    const issue = parsed.error.issues.find((candidate) => candidate.path.length > 0) ?? parsed.error.issues[0];
    const path = issue?.path.length ? issue.path.map((part) => (typeof part === "number" ? `[${part}]` : `.${String(part)}`)).join("") : "";
    const expected = 'expected {"keys":[{"key":"sk-or-v1-…","label":"…"}]} or ["sk-or-v1-…"]';
    return {
      ok: false,
      message: `${name} has the wrong shape${path ? ` at ${path.replace(/^\./, "")}` : ""}: ${issue?.message ?? "invalid"} (${expected})`,
    };
  }
  return { ok: true, doc: recordsFromFile(parsed.data, now), exists: true };
}

export function createJsonFileStore({ path, now = Date.now, pollMs = 250, staleLockMs = 5000 }: JsonFileStoreOptions): KeyStore {
  const lockPath = `${path}.lock`;
  const name = path;
  /** The text this store last wrote or read: a file still holding it has not been edited by anyone else. */
  let lastKnownText: string | undefined;

  async function readText(): Promise<string | undefined> {
    try {
      return await readFile(path, "utf8");
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  async function readDoc(): Promise<StoreLoad> {
    const text = await readText();
    if (text === undefined) return { ok: true, doc: { records: [], extraTopLevel: {} }, exists: false };
    const result = parseKeyFile(text, name, now());
    if (result.ok) lastKnownText = text;
    return result;
  }

  async function writeDoc(doc: KeyFileDocument): Promise<void> {
    const text = fileTextFromDocument(doc, now());
    const temp = join(dirname(path), `.${basename(path)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`);
    const handle = await open(temp, "w", 0o600);
    try {
      await handle.writeFile(text, "utf8");
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      await rename(temp, path);
    } catch (error) {
      await unlink(temp).catch(() => {});
      throw error;
    }
    lastKnownText = text;
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

    save(ours: readonly KeyRecord[]) {
      return withLock(async () => {
        const current = await readDoc();
        if (!current.ok) return current;
        // Nothing on disk and nothing to remember: do not create a file nobody asked for.
        if (!current.exists && ours.length === 0) return current;
        const merged: KeyFileDocument = {
          records: current.exists ? mergeKeyLists(current.doc.records, ours) : [...ours],
          extraTopLevel: current.doc.extraTopLevel,
        };
        await writeDoc(merged);
        return { ok: true, doc: merged, exists: true };
      });
    },

    update(change) {
      return withLock(async () => {
        const current = await readDoc();
        if (!current.ok) return current;
        const next = change(current.doc);
        await writeDoc(next);
        return { ok: true, doc: next, exists: true };
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
          const info = await stat(path).then(
            (s) => `${s.mtimeMs}:${s.size}:${s.ino}`,
            () => "missing",
          );
          if (info === lastSeen) return;
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

function isNotFound(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === "ENOENT";
}

function isExists(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === "EEXIST";
}
