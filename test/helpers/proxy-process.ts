/**
 * The proxy as a separate process (`bun run src/main.ts serve`, or a compiled binary), for tests
 * that need what only a process has: signals, `kill -9`, an exit status, its resident size and
 * its open file descriptors. Every child started here is remembered, so `killAllProxies()` in an
 * `afterAll` can end whatever a failed test left running.
 */
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
import { mainPath } from "./cli.ts";

export interface ProxyProcess {
  pid: number;
  /** The proxy's base URL (without /v1), from the line it prints once it listens. */
  url: string;
  port: number;
  stdout(): string;
  stderr(): string;
  /** Resolves with the exit status once the process has ended and its output is read. */
  exited: Promise<number>;
  hasExited(): boolean;
  /** Resolves with the match once stdout matches `pattern`; rejects if the process ends first or it takes too long. */
  waitForStdout(pattern: RegExp, limitMs?: number): Promise<RegExpMatchArray>;
  signal(name: "SIGTERM" | "SIGINT" | "SIGKILL"): void;
  /** SIGKILL unless it has already ended; resolves once it has. */
  kill(): Promise<void>;
}

export interface ProxyProcessOptions {
  cwd: string;
  env?: Record<string, string>;
  /** The program to run; default `bun --no-env-file run src/main.ts`. */
  command?: string[];
  /** How long it may take to print its listening line. */
  startLimitMs?: number;
}

const running = new Set<ProxyProcess>();

/** `[bun, --no-env-file, run, src/main.ts]`: the proxy from source. */
export const fromSource = (): string[] => [process.execPath, "--no-env-file", "run", mainPath];

/** Starts `serve --port 0` and waits for its listening line. */
export async function startProxyProcess({ cwd, env = {}, command = fromSource(), startLimitMs = 10_000 }: ProxyProcessOptions): Promise<ProxyProcess> {
  const proc = Bun.spawn([...command, "serve", "--port", "0", "--host", "127.0.0.1"], {
    cwd,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? cwd, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  let out = "";
  let err = "";
  let ended = false;
  const listeners = new Set<() => void>();
  const pump = async (stream: ReadableStream<Uint8Array>, append: (text: string) => void) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      append(decoder.decode(chunk, { stream: true }));
      for (const listener of [...listeners]) listener();
    }
  };
  // Output is bounded in what is kept: a long soak prints a line per request.
  const keep = (text: string) => (text.length > 1_000_000 ? text.slice(-500_000) : text);
  const pumped = Promise.all([pump(proc.stdout, (text) => (out = keep(out + text))), pump(proc.stderr, (text) => (err = keep(err + text)))]);
  const exited = pumped
    .then(() => proc.exited)
    .then((code) => {
      ended = true;
      for (const listener of [...listeners]) listener();
      return code;
    });

  const waitForStdout = (pattern: RegExp, limitMs = 5000) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const finish = (error?: Error, match?: RegExpMatchArray) => {
        listeners.delete(check);
        clearTimeout(timer);
        if (error) reject(error);
        else resolve(match as RegExpMatchArray);
      };
      const check = () => {
        const match = pattern.exec(out);
        if (match) finish(undefined, match);
        else if (ended) finish(new Error(`the proxy ended (status ${proc.exitCode}) before printing ${pattern}\nstdout: ${out.slice(-2000)}\nstderr: ${err.slice(-2000)}`));
      };
      const timer = setTimeout(() => finish(new Error(`nothing matching ${pattern} printed within ${limitMs} ms\nstdout: ${out.slice(-2000)}\nstderr: ${err.slice(-2000)}`)), limitMs);
      listeners.add(check);
      check();
    });

  const child: ProxyProcess = {
    pid: proc.pid,
    url: "",
    port: 0,
    stdout: () => out,
    stderr: () => err,
    exited,
    hasExited: () => ended,
    waitForStdout,
    signal: (name) => {
      if (!ended) proc.kill(name);
    },
    async kill() {
      if (!ended) proc.kill("SIGKILL");
      await exited;
      running.delete(child);
    },
  };
  running.add(child);
  try {
    const [, url = ""] = await waitForStdout(/listening on (http:\/\/\S+)\/v1 /, startLimitMs);
    child.url = url;
    child.port = Number(new URL(url).port);
  } catch (error) {
    await child.kill();
    throw error;
  }
  return child;
}

/** Kills every child this module started that is still running. */
export async function killAllProxies(): Promise<void> {
  await Promise.all([...running].map((child) => child.kill()));
}

/** Resident set size of a process, in bytes (Linux /proc). */
export function residentBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1]);
  if (!Number.isFinite(kb)) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return kb * 1024;
}

/** How many file descriptors a process has open (Linux /proc). */
export function openFdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

const tcpStates: Record<string, string> = {
  "01": "ESTABLISHED",
  "02": "SYN_SENT",
  "03": "SYN_RECV",
  "04": "FIN_WAIT1",
  "05": "FIN_WAIT2",
  "06": "TIME_WAIT",
  "07": "CLOSE",
  "08": "CLOSE_WAIT",
  "09": "LAST_ACK",
  "0A": "LISTEN",
  "0B": "CLOSING",
};

/**
 * A process's open descriptors by what they are: files, pipes, anon inodes, and TCP sockets by
 * state (Linux /proc/<pid>/fd and /proc/net/tcp{,6}); "socket-other" for non-TCP sockets. A
 * leaked connection shows as CLOSE_WAIT: the peer has closed it and the process never did.
 */
export function descriptorKinds(pid: number): Record<string, number> {
  const stateOf = new Map<string, string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const fields = line.trim().split(/\s+/);
      const [state, inode] = [fields[3], fields[9]];
      if (state && inode) stateOf.set(inode, tcpStates[state] ?? state);
    }
  }
  const kinds: Record<string, number> = {};
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    let target: string;
    try {
      target = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed while listing
    }
    const socket = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    const kind = socket !== undefined ? `tcp-${stateOf.get(socket) ?? "other"}`.replace("tcp-other", "socket-other") : (/^(pipe|anon_inode):/.exec(target)?.[1] ?? "file");
    kinds[kind] = (kinds[kind] ?? 0) + 1;
  }
  return kinds;
}
