/**
 * A small file system of its own for the tests of failing disks: a tmpfs of a few pages mounted
 * on a temporary folder, which a test can fill to the last byte, free again, or remount read-only.
 * Mounting needs root (or CAP_SYS_ADMIN); `whyNoSmallDisk()` says why it cannot be had here, so
 * the tests that need it skip with that reason instead of passing without testing anything.
 */
import { mkdtemp, open, readdir, readlink, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface SmallDisk {
  dir: string;
  /** Fills every free byte; `leavePages` pages (4 KiB each) stay free. */
  fill(leavePages?: number): Promise<void>;
  /** Removes what `fill` wrote. */
  free(): Promise<void>;
  readOnly(): Promise<void>;
  writable(): Promise<void>;
  /** Unmounts (lazily, so a leaked handle cannot block it) and removes the folder. */
  remove(): Promise<void>;
}

const page = 4096;

async function run(command: string[]): Promise<{ code: number; stderr: string }> {
  let proc;
  try {
    proc = Bun.spawn(command, { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  } catch (error) {
    return { code: -1, stderr: `cannot run ${command[0]}: ${error instanceof Error ? error.message : String(error)}` }; // no mount(8) here
  }
  const [stderr, code] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
  return { code, stderr: stderr.trim() };
}

async function mountSmallDisk(sizeKiB: number): Promise<SmallDisk | string> {
  if (process.platform !== "linux") return `tmpfs mounts are a Linux test (this is ${process.platform})`;
  const dir = await mkdtemp(join(tmpdir(), "orp-disk-"));
  const mounted = await run(["mount", "-t", "tmpfs", "-o", `size=${sizeKiB}k,mode=0755`, "tmpfs", dir]);
  if (mounted.code !== 0) {
    await rm(dir, { recursive: true, force: true });
    const why = (mounted.stderr || `mount exited ${mounted.code}`).replace(/\s+/g, " ");
    return `cannot mount a tmpfs here (${why}); run the tests as root to include them`;
  }
  const fillers: string[] = [];
  const remount = async (mode: "ro" | "rw") => {
    const result = await run(["mount", "-o", `remount,${mode}`, dir]);
    if (result.code !== 0) throw new Error(`remount ${mode} failed: ${result.stderr}`);
  };
  return {
    dir,
    async fill(leavePages = 0) {
      const spare = join(dir, `.spare-${fillers.length}`);
      if (leavePages > 0) await writeFile(spare, Buffer.alloc(leavePages * page));
      const filler = join(dir, `.filler-${fillers.length}`);
      fillers.push(filler);
      const handle = await open(filler, "w");
      try {
        for (;;) await handle.write(Buffer.alloc(page));
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "ENOSPC") throw error;
      } finally {
        await handle.close();
      }
      if (leavePages > 0) await rm(spare);
    },
    async free() {
      for (const filler of fillers.splice(0)) await rm(filler, { force: true });
    },
    readOnly: () => remount("ro"),
    writable: () => remount("rw"),
    async remove() {
      await run(["umount", "-l", dir]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

let probe: Promise<string | undefined> | undefined;

/** Why no small disk can be mounted here; undefined when it can. */
export function whyNoSmallDisk(): Promise<string | undefined> {
  probe ??= mountSmallDisk(64).then(async (disk) => {
    if (typeof disk === "string") return disk;
    await disk.remove();
    return undefined;
  });
  return probe;
}

/** A mounted small disk (64 KiB unless told), removed by `cleanups`. */
export async function smallDisk(cleanups: Array<() => Promise<void>>, sizeKiB = 64): Promise<SmallDisk> {
  const disk = await mountSmallDisk(sizeKiB);
  if (typeof disk === "string") throw new Error(disk);
  cleanups.push(() => disk.remove());
  return disk;
}

/** Files in `dir` other than the fillers: what a test expects to find there. */
export async function filesIn(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => !name.startsWith(".filler-") && !name.startsWith(".spare-")).sort();
}

/** This process's open file descriptors that point under `dir` (a leaked handle shows here). */
export async function openHandlesUnder(dir: string): Promise<string[]> {
  const fds = await readdir("/proc/self/fd");
  const targets = await Promise.all(fds.map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => "")));
  return targets.filter((target) => target.startsWith(`${dir}/`));
}
