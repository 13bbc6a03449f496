/**
 * `<keys file>.lock`: one read-modify-write at a time across every process on the file (the
 * server, `add-key`, another instance).
 *
 * The lock file is created exclusively and says who holds it: `<pid>\n<hostname>\n`. A lock whose
 * owner is a process on this host that no longer exists (killed mid-write) is taken over at once;
 * a lock from another host, or one whose owner cannot be told, is broken once it is older than
 * `staleMs`. A lock that cannot be written completely (a full disk) is removed again and its
 * handle closed: a failed attempt leaves nothing behind.
 */
import { hostname } from "node:os";
import { lstat, open, readFile, unlink } from "node:fs/promises";
import { errorCode, isExists, isNotFound } from "./file-problem.ts";

export interface FileLockOptions {
  /** How old a lock of an owner that cannot be checked must be before it is broken. */
  staleMs: number;
}

const thisHost = hostname();

/**
 * Runs `work` holding the lock at `lockPath`. Throws what the system said when the lock cannot be
 * created (a missing or read-only folder, a full disk); `work`'s own errors pass through.
 */
export async function withFileLock<T>(lockPath: string, { staleMs }: FileLockOptions, work: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + staleMs * 2;
  for (let wait = 2; ; wait = Math.min(wait * 2, 50)) {
    if (await tryCreate(lockPath)) break;
    const holder = await lockState(lockPath);
    if (holder === undefined) continue; // released in between: try again at once
    if (ownerIsGone(holder.text)) {
      await breakLock(lockPath, holder);
      continue;
    }
    if (Date.now() - holder.mtimeMs > staleMs || Date.now() > deadline) await breakLock(lockPath, holder);
    await Bun.sleep(wait);
  }
  try {
    return await work();
  } finally {
    await unlink(lockPath).catch(() => {});
  }
}

/** A lock file as it was judged: its text and which file it was (inode), so a new lock is never mistaken for it. */
interface LockState {
  text: string;
  ino: number;
  mtimeMs: number;
}

/**
 * The lock as it is now; undefined when there is none (released in between). A lock path that is
 * not a lock file this code could have made (a folder, a symbolic link, dangling or not) or that
 * cannot be read is thrown as one line: waiting would never end, and only a person can fix it.
 */
async function lockState(lockPath: string): Promise<LockState | undefined> {
  try {
    const info = await lstat(lockPath);
    if (!info.isFile()) throw new Error(`its lock ${lockPath} is ${info.isDirectory() ? "a folder" : info.isSymbolicLink() ? "a symbolic link" : "a special file"}, not a lock file: remove it`);
    return { text: await readFile(lockPath, "utf8"), ino: info.ino, mtimeMs: info.mtimeMs };
  } catch (error) {
    if (isNotFound(error)) return undefined;
    if (errorCode(error) === "EACCES" || errorCode(error) === "EPERM") throw new Error(`its lock ${lockPath} cannot be read (permission denied): remove it`);
    throw error;
  }
}

/** Creates the lock with its owner written in; false when someone else holds it. */
async function tryCreate(lockPath: string): Promise<boolean> {
  let handle;
  try {
    handle = await open(lockPath, "wx", 0o600);
  } catch (error) {
    if (isExists(error)) return false;
    throw error;
  }
  try {
    await handle.writeFile(`${process.pid}\n${thisHost}\n`);
    await handle.close();
    return true;
  } catch (error) {
    await handle.close().catch(() => {});
    await unlink(lockPath).catch(() => {});
    throw error;
  }
}

/**
 * Whether `<pid>\n<hostname>\n…` (a lock, a server's claim) names a process on this host that has
 * ended. One being written right now (empty, or without a host) cannot be told, and neither can
 * another host's: a lock waits for age then.
 */
export function ownerIsGone(holder: string): boolean {
  const [pidText = "", host = ""] = holder.split("\n");
  const pid = Number(pidText);
  if (!Number.isSafeInteger(pid) || pid <= 0 || host !== thisHost) return false;
  try {
    process.kill(pid, 0); // signal 0: only asks whether the process exists
    return false;
  } catch (error) {
    // EPERM: it exists, under another user.
    return (error as NodeJS.ErrnoException).code === "ESRCH";
  }
}

/**
 * Removes a dead or stale lock, but only the one that was judged. Several waiters may judge the
 * same lock; a slower one must not delete the lock a faster one has taken since. So breaking is
 * itself done under `<lock>.break` (created exclusively, held for two system calls): the lock is
 * looked at again there and removed only if it is still the judged file. A `.break` left by a
 * process that died in those two calls is cleared like a lock: at once if its pid is gone.
 */
async function breakLock(lockPath: string, judged: LockState): Promise<void> {
  const breaker = `${lockPath}.break`;
  if (!(await tryCreate(breaker))) {
    const other = await lockState(breaker);
    if (other && (ownerIsGone(other.text) || Date.now() - other.mtimeMs > 10_000)) await unlinkIfSame(breaker, other);
    return; // someone else is breaking it: look at the lock again
  }
  try {
    await unlinkIfSame(lockPath, judged);
  } finally {
    await unlink(breaker).catch(() => {});
  }
}

async function unlinkIfSame(path: string, judged: LockState): Promise<void> {
  const now = await lockState(path);
  if (now && now.ino === judged.ino && now.text === judged.text) await unlink(path).catch(() => {});
}
