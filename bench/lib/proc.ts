/**
 * Child-process helpers: spawning targets, reading their CPU time and RSS from /proc (summed
 * over the process and its descendants, so a `sh -c` or launcher wrapper does not hide the real
 * server), waiting for health, and killing whole trees. Linux only.
 */
import { readdirSync, readFileSync } from "node:fs";

export const CLK_TCK: number = (() => {
  const out = Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim();
  const n = Number(out);
  return Number.isFinite(n) && n > 0 ? n : 100;
})();

interface StatFields {
  ppid: number;
  utime: number;
  stime: number;
}

function readStat(pid: number): StatFields | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // Fields after "(comm)": state ppid ... utime(14) stime(15), counted from field 3.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  return { ppid: Number(rest[1]), utime: Number(rest[11]), stime: Number(rest[12]) };
}

/** pid plus all of its live descendants. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync("/proc")) {
    const pid = Number(name);
    if (!Number.isInteger(pid)) continue;
    const st = readStat(pid);
    if (st === undefined) continue;
    const list = children.get(st.ppid);
    if (list === undefined) children.set(st.ppid, [pid]);
    else list.push(pid);
  }
  const out: number[] = [];
  const queue = [root];
  for (let i = 0; i < queue.length && i < 10_000; i++) {
    const pid = queue[i];
    if (pid === undefined) break;
    out.push(pid);
    for (const c of children.get(pid) ?? []) queue.push(c);
  }
  return out;
}

/** CPU time (user + system) of the tree, in milliseconds. */
export function cpuMs(root: number): number {
  let ticks = 0;
  for (const pid of processTree(root)) {
    const st = readStat(pid);
    if (st !== undefined) ticks += st.utime + st.stime;
  }
  return (ticks * 1000) / CLK_TCK;
}

/** Resident memory (VmRSS) of the tree, in bytes. */
export function rssBytes(root: number): number {
  let kb = 0;
  for (const pid of processTree(root)) {
    try {
      const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
      if (m?.[1] !== undefined) kb += Number(m[1]);
    } catch {
      // process exited between listing and reading
    }
  }
  return kb * 1024;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A port that was free a moment ago on 127.0.0.1. */
export function freePort(): number {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("") });
  const port = server.port;
  void server.stop(true);
  if (port === undefined) throw new Error("could not get a free port");
  return port;
}

/**
 * Splits a command line on whitespace; anything with shell syntax is run by `sh -c "exec ..."`
 * instead (the tree-wide /proc readings still see the real server).
 */
export function commandArgv(cmd: string): string[] {
  if (/["'`$|&;<>(){}\\*?~]/.test(cmd)) return ["sh", "-c", `exec ${cmd}`];
  return cmd.trim().split(/\s+/);
}

export type Child = ReturnType<typeof Bun.spawn>;

/** SIGTERM the whole tree, then SIGKILL what is left after graceMs. */
export async function killTree(child: Child, graceMs = 2000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const pids = processTree(child.pid).reverse();
  for (const pid of pids) {
    try {
      process.kill(pid, "SIGTERM");
    } catch {
      // already gone
    }
  }
  const exited = await Promise.race([child.exited.then(() => true), sleep(graceMs).then(() => false)]);
  for (const pid of pids) {
    if (exited && pid === child.pid) continue;
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // already gone
    }
  }
  await Promise.race([child.exited, sleep(1000)]);
}

/**
 * Polls `url` every intervalMs until it answers 200; returns ms since `startedAt`
 * (a performance.now() value), or throws after timeoutMs.
 */
export async function waitForOk(url: string, startedAt: number, timeoutMs: number, intervalMs = 2, child?: Child): Promise<number> {
  const deadline = startedAt + timeoutMs;
  const maxPolls = Math.ceil(timeoutMs / Math.max(1, intervalMs)) + 10;
  for (let i = 0; i < maxPolls && performance.now() < deadline; i++) {
    if (child !== undefined && child.exitCode !== null) throw new Error(`process exited with code ${child.exitCode} before answering ${url}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(Math.max(50, intervalMs * 20)) });
      await res.arrayBuffer();
      if (res.status === 200) return performance.now() - startedAt;
    } catch {
      // not listening yet
    }
    await sleep(intervalMs);
  }
  throw new Error(`no 200 from ${url} within ${timeoutMs} ms`);
}

/** Reads stdout lines of a child until one parses as JSON with `ready: true`; returns it. */
export async function readReadyLine(child: Child, timeoutMs: number): Promise<Record<string, unknown>> {
  const stdout = child.stdout;
  if (!(stdout instanceof ReadableStream)) throw new Error("child stdout is not piped");
  const reader = stdout.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  const deadline = performance.now() + timeoutMs;
  try {
    for (let i = 0; i < 1000 && performance.now() < deadline; i++) {
      const left = deadline - performance.now();
      const next = await Promise.race([reader.read(), sleep(left).then(() => undefined)]);
      if (next === undefined) break;
      if (next.done) throw new Error("child closed stdout before it was ready");
      buf += decoder.decode(next.value, { stream: true });
      let nl = buf.indexOf("\n");
      while (nl >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line.startsWith("{")) {
          const parsed = JSON.parse(line) as Record<string, unknown>;
          if (parsed.ready === true) {
            drain(reader);
            return parsed;
          }
        }
        nl = buf.indexOf("\n");
      }
    }
  } catch (err) {
    reader.releaseLock();
    throw err;
  }
  reader.releaseLock();
  throw new Error(`child did not print a ready line within ${timeoutMs} ms`);
}

/** Keeps reading (and dropping) a child's output so it never blocks on a full pipe; ends with the child. */
function drain(reader: { read(): Promise<{ done: boolean }> }): void {
  void (async () => {
    for (let i = 0; i < 10_000_000; i++) {
      const r = await reader.read().catch(() => ({ done: true as const, value: undefined }));
      if (r.done) return;
    }
  })();
}

/**
 * Reads a child's stdout line by line, handing each line to onLine, until the child closes it or
 * timeoutMs passes (then the child is killed). Returns the child's exit code (null if killed).
 */
export async function forEachLine(
  child: Child,
  timeoutMs: number,
  onLine: (line: string) => void | Promise<void>,
): Promise<number | null> {
  const stdout = child.stdout;
  if (!(stdout instanceof ReadableStream)) throw new Error("child stdout is not piped");
  const reader = stdout.getReader();
  const decoder = new TextDecoder();
  const deadline = performance.now() + timeoutMs;
  let buf = "";
  let timedOut = false;
  for (let i = 0; i < 1_000_000; i++) {
    const left = deadline - performance.now();
    const next = left > 0 ? await Promise.race([reader.read(), sleep(left).then(() => undefined)]) : undefined;
    if (next === undefined) {
      timedOut = true;
      break;
    }
    if (next.done) break;
    buf += decoder.decode(next.value, { stream: true });
    let nl = buf.indexOf("\n");
    while (nl >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      await onLine(line);
      nl = buf.indexOf("\n");
    }
  }
  if (buf.length > 0 && !timedOut) await onLine(buf);
  if (timedOut) {
    await killTree(child, 500);
    throw new Error(`child ${child.pid} ran past its ${timeoutMs} ms cap and was killed`);
  }
  return Promise.race([child.exited, sleep(5000).then(() => null)]);
}

function cpuTotals(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  return { busy: total - idle, total };
}

/** Fraction (0..1) of all cores' time that was busy over the next `ms` milliseconds. */
export async function machineBusy(ms: number): Promise<number> {
  const a = cpuTotals();
  await sleep(ms);
  const b = cpuTotals();
  const total = b.total - a.total;
  return total > 0 ? (b.busy - a.busy) / total : 0;
}

/** Value of an environment variable as the process tree actually got it (first pid that has it). */
export function envOf(root: number, name: string): string | undefined {
  for (const pid of processTree(root)) {
    try {
      for (const entry of readFileSync(`/proc/${pid}/environ`, "utf8").split("\0")) {
        if (entry.startsWith(`${name}=`)) return entry.slice(name.length + 1);
      }
    } catch {
      // exited, or not readable
    }
  }
  return undefined;
}
