/**
 * Where the keys file really is, and the temporary file a write starts with.
 *
 * `KEYS_FILE` may be a symbolic link (a dotfiles repository, a mounted secret): the link must stay
 * a link and its target be what changes. So a write resolves the path first and puts its temporary
 * file next to the target: a rename or swap over the link itself would replace it by a regular
 * file, and the target would never see the new key.
 */
import { lstat, open, readlink, realpath, stat, unlink } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { isNotFound } from "./file-problem.ts";

/** Symbolic links followed at most, as the kernel does (MAXSYMLINKS is 40 on Linux). */
const maxLinks = 40;

/**
 * The file `path` names after following symbolic links; for a file that does not exist yet (or a
 * link to one) the path where it will be created. Throws what the system said otherwise.
 */
export async function resolveTarget(path: string): Promise<string> {
  // Links are followed by hand, and only the folder goes through realpath. Bun's realpath opens
  // the file and asks the kernel what that open file is called now: a file another process swaps
  // out at that instant comes back under the writer's temporary name, and the store would lock
  // and write that file instead of this one (an add-key's key was lost that way).
  let current = resolve(path);
  for (let hop = 0; hop < maxLinks; hop++) {
    const info = await lstat(current).catch((error: unknown) => {
      if (isNotFound(error)) return undefined;
      throw error;
    });
    if (!info?.isSymbolicLink()) return join(await realFolder(dirname(current)), basename(current));
    current = resolve(dirname(current), await readlink(current));
  }
  throw Object.assign(new Error(`too many symbolic links at ${path}`), { code: "ELOOP" });
}

/** The folder's real path; a folder that does not exist throws ENOENT (the write cannot happen). */
async function realFolder(folder: string): Promise<string> {
  const real = await realpath(folder);
  if (!(await stat(real)).isDirectory()) throw Object.assign(new Error(`${folder} is not a folder`), { code: "ENOTDIR" });
  return real;
}

export interface TempFile {
  path: string;
  /** inode, size and mtime of what was written (a rename keeps them). */
  signature: string;
}

/**
 * Writes `text` to a new temporary file next to `target` (mode 0600) and flushes it to disk.
 * On any failure (a full disk fails the write or the flush) the file is closed and removed before
 * the error is thrown: a failed save leaves nothing behind.
 */
export async function writeTempFile(target: string, text: string): Promise<TempFile> {
  const path = join(dirname(target), `.${basename(target)}.${process.pid}.${Math.random().toString(36).slice(2)}.tmp`);
  const handle = await open(path, "wx", 0o600);
  try {
    await handle.writeFile(text, "utf8");
    await handle.sync();
    const signature = fileSignature(await handle.stat());
    await handle.close();
    return { path, signature };
  } catch (error) {
    await handle.close().catch(() => {});
    await unlink(path).catch(() => {});
    throw error;
  }
}

export function fileSignature(info: { mtimeMs: number; size: number; ino: number }): string {
  return `${info.mtimeMs}:${info.size}:${info.ino}`;
}
