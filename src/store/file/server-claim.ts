/**
 * One server per keys file. The server is the only writer of runtime state (cooldowns, counters,
 * rests), so a second server on the same file would write over the first one's: it must not
 * start. Several instances share their state through Redis (REDIS_URL) instead.
 *
 * The claim is `<file>.server` next to the file's target, saying `<pid>\n<hostname>\n<address>\n`.
 * It is made whole or not at all (written to a temporary file, then hard-linked into place, which
 * fails if a claim exists). A claim whose process on this host has ended (killed, crashed) is
 * taken over; a live one, or one from another host, stops the start with one line naming it. The
 * CLI is not a server: it never looks here, and edits under the lock while the server runs.
 */
import { link, readFile, rename, unlink } from "node:fs/promises";
import { hostname } from "node:os";
import { ownerIsGone } from "./file-lock.ts";
import { isExists } from "./file-problem.ts";
import { resolveTarget, writeTempFile } from "./file-target.ts";

export interface ServerClaim {
  /** Says where this server listens now that it does (the port it was given). */
  listening(address: string): Promise<void>;
  /** Gives the file up (a stopped server, a start that failed later). */
  release(): Promise<void>;
}

export type ClaimResult = { ok: true; claim: ServerClaim } | { ok: false; message: string };

const claimText = (address: string) => `${process.pid}\n${hostname()}\n${address}\n`;

/** A claim that holds nothing: where no claim can be written, no other server could write the file either. */
const noClaim: ServerClaim = { listening: async () => {}, release: async () => {} };

export async function claimKeysFile(keysFile: string, address: string): Promise<ClaimResult> {
  let path: string;
  try {
    path = `${await resolveTarget(keysFile)}.server`;
  } catch {
    return { ok: true, claim: noClaim }; // the store says what is wrong with the path
  }
  for (let attempt = 0; attempt < 5; attempt++) {
    const text = claimText(address);
    let temp: string;
    try {
      temp = (await writeTempFile(path, text)).path;
    } catch {
      return { ok: true, claim: noClaim }; // a read-only folder: the store reports it on its first save
    }
    const linked = await link(temp, path).then(
      () => "claimed" as const,
      (error: unknown) => (isExists(error) ? ("held" as const) : ("failed" as const)),
    );
    await unlink(temp).catch(() => {});
    if (linked === "claimed") {
      heldHere.add(path);
      return { ok: true, claim: claimOf(path, text) };
    }
    if (linked === "failed") return { ok: true, claim: noClaim };
    const holder = await readFile(path, "utf8").catch(() => undefined);
    if (holder === undefined) continue; // released in between
    if (!ownerIsGone(holder) && !(leftByThisPid(holder) && !heldHere.has(path))) return { ok: false, message: heldBy(keysFile, holder) };
    // Left by a process that has ended: taken over, unless another starting server took it first.
    if ((await readFile(path, "utf8").catch(() => undefined)) === holder) await unlink(path).catch(() => {});
  }
  return { ok: false, message: `${keysFile} kept being claimed by other servers starting at the same time; one server per keys file (REDIS_URL to run several)` };
}

/** The claims this process holds now: a claim naming this pid and not among them is a leftover. */
const heldHere = new Set<string>();

/**
 * A claim naming this process's pid on this host, made before this start: a container restarted
 * in place runs as pid 1 again and finds the claim of its previous run, which no live server holds.
 */
function leftByThisPid(holder: string): boolean {
  const [pid, host] = holder.split("\n");
  return pid === String(process.pid) && host === hostname();
}

function heldBy(keysFile: string, holder: string): string {
  const [pid = "?", host = "?", address = "an unknown address"] = holder.split("\n");
  const where = host === hostname() ? "" : ` on host ${host}`;
  return `${keysFile} is held by another server (pid ${pid}${where}, listening on ${address}); one keys file has one server: stop that one, or set REDIS_URL to run several instances on shared state`;
}

function claimOf(path: string, claimed: string): ServerClaim {
  let text = claimed;
  const ours = async () => (await readFile(path, "utf8").catch(() => undefined)) === text;
  return {
    async listening(address) {
      if (!(await ours())) return;
      const next = await writeTempFile(path, claimText(address)).catch(() => undefined);
      if (!next) return;
      await rename(next.path, path).then(
        () => (text = claimText(address)),
        () => unlink(next.path).catch(() => {}),
      );
    },
    async release() {
      heldHere.delete(path);
      if (await ours()) await unlink(path).catch(() => {});
    },
  };
}
