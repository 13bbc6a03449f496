/**
 * A real `redis-server` for a test file: loopback TCP on a free port and a unix socket in a temp
 * folder, no persistence. Ready when it says so on stdout and answers PING. `pause`/`resume` stop
 * and continue the process (SIGSTOP/SIGCONT: a Redis that accepts bytes but never answers);
 * `kill` + `restart` make an outage on the same port and socket.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";

export interface RedisServer {
  readonly port: number;
  /** redis://127.0.0.1:<port> */
  readonly url: string;
  /** redis+unix://<socket path> */
  readonly unixUrl: string;
  readonly pid: number;
  pause(): void;
  resume(): void;
  /** SIGKILL, and waits for the process to be gone. */
  kill(): Promise<void>;
  /** Starts it again on the same port and socket (empty: no persistence). */
  restart(): Promise<void>;
  /** Runs one command through redis-cli and returns its raw output, trimmed. */
  cli(...args: string[]): Promise<string>;
  stop(): Promise<void>;
}

export const redisServerPath = (): string | null => Bun.which("redis-server");

export async function startRedisServer(): Promise<RedisServer> {
  const binary = redisServerPath();
  if (binary === null) throw new Error("redis-server is not installed (.ci/run installs it from Debian)");
  const dir = await mkdtemp(join(tmpdir(), "orp-redis-"));
  const socket = join(dir, "redis.sock");
  let port = 0;
  let child: Subprocess<"ignore", "pipe", "pipe"> | undefined;

  const launch = async (): Promise<void> => {
    // A free port, asked of the kernel; on restart the same one again.
    if (port === 0) {
      const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      port = probe.port;
      probe.stop(true);
    }
    const proc = Bun.spawn(
      [binary, "--port", String(port), "--bind", "127.0.0.1", "--unixsocket", socket, "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", dir, "--loglevel", "notice"],
      { stdin: "ignore", stdout: "pipe", stderr: "pipe" },
    );
    child = proc;
    await readyLine(proc);
    const pong = await cliAt(port, ["PING"]);
    if (pong !== "PONG") throw new Error(`redis-server answered PING with ${JSON.stringify(pong)}`);
  };

  await launch();
  const current = (): Subprocess<"ignore", "pipe", "pipe"> => {
    if (!child) throw new Error("redis-server is not running");
    return child;
  };

  return {
    get port() {
      return port;
    },
    get url() {
      return `redis://127.0.0.1:${port}`;
    },
    get unixUrl() {
      return `redis+unix://${socket}`;
    },
    get pid() {
      return current().pid;
    },
    pause: () => current().kill("SIGSTOP"),
    resume: () => current().kill("SIGCONT"),
    async kill() {
      const proc = current();
      proc.kill("SIGKILL");
      await proc.exited;
      child = undefined;
    },
    async restart() {
      if (child) throw new Error("redis-server is still running: kill it first");
      await launch();
    },
    cli: (...args) => cliAt(port, args),
    async stop() {
      if (child) {
        child.kill("SIGCONT");
        child.kill("SIGKILL");
        await child.exited;
        child = undefined;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Resolves when redis-server prints that it accepts connections; rejects if it exits first. */
async function readyLine(proc: Subprocess<"ignore", "pipe", "pipe">): Promise<void> {
  const decoder = new TextDecoder();
  let seen = "";
  const reader = proc.stdout.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) {
        const stderr = await new Response(proc.stderr).text();
        throw new Error(`redis-server exited before it was ready: ${(seen + stderr).trim().split("\n").slice(-3).join(" | ")}`);
      }
      seen += decoder.decode(value, { stream: true });
      if (seen.includes("Ready to accept connections")) break;
    }
  } finally {
    reader.releaseLock();
  }
  // Keep draining its log so a full pipe never blocks it.
  void proc.stdout.pipeTo(new WritableStream()).catch(() => {});
  void proc.stderr.pipeTo(new WritableStream()).catch(() => {});
}

async function cliAt(port: number, args: string[]): Promise<string> {
  const proc = Bun.spawn(["redis-cli", "-h", "127.0.0.1", "-p", String(port), ...args], { stdout: "pipe", stderr: "pipe" });
  const [out] = await Promise.all([new Response(proc.stdout).text(), proc.exited]);
  return out.trim();
}
