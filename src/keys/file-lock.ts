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
import { open, readFile, rename, stat, unlink, link } from "node:fs/promises";
import { isExists, isNotFound } from "./file-problem.ts";

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
    const holder = await readFile(lockPath, "utf8").catch(() => undefined);
    if (holder === undefined) continue; // released in between: try again at once
    if (ownerIsGone(holder)) {
      await breakLock(lockPath, holder);
      continue;
    }
    const age = await stat(lockPath).then((info) => Date.now() - info.mtimeMs, () => 0);
    if (age > staleMs || Date.now() > deadline) await breakLock(lockPath, holder);
    await Bun.sleep(wait);
  }
  try {
    return await work();
  } finally {
    await unlink(lockPath).catch(() => {});
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
 * Whether the lock names a process on this host that has ended. A lock being written right now
 * (empty, or without a host) cannot be told, and neither can another host's: those wait for age.
 */
function ownerIsGone(holder: string): boolean {
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
 * Removes a dead or stale lock, but only the one that was judged: two waiters may judge the same
 * lock, and the slower one must not delete the lock the faster one has taken since. The lock is
 * moved aside first and looked at; a lock that is not the judged one is linked back (link fails
 * rather than replace a lock someone created meanwhile).
 */
async function breakLock(lockPath: string, judged: string): Promise<void> {
  const aside = `${lockPath}.${process.pid}.${Math.random().toString(36).slice(2)}.stale`;
  try {
    await rename(lockPath, aside);
  } catch (error) {
    if (isNotFound(error)) return; // someone else broke or released it
    throw error;
  }
  const moved = await readFile(aside, "utf8").catch(() => undefined);
  if (moved !== judged) await link(aside, lockPath).catch(() => {});
  await unlink(aside).catch(() => {});
}
