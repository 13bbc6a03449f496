/**
 * The command line as a child process, for tests: `bun --no-env-file run src/main.ts` with a
 * minimal environment (nothing of the test process's settings leaks in), stdin from a string or
 * nothing, or on a real pseudo-terminal through util-linux `script`. Everything a child prints
 * goes into an `OutputLog`, which a test scans for key strings afterwards.
 */
import { expect } from "bun:test";
import { join } from "node:path";

export const mainPath = join(import.meta.dir, "..", "..", "src", "main.ts");

/** Collects every text a test saw leave the proxy (child output, HTTP bodies and headers). */
export interface OutputLog {
  record(...texts: string[]): void;
  /** Fails when any recorded text contains one of `secrets`; then forgets what it recorded. */
  expectNoSecrets(secrets: readonly string[]): void;
}

export function createOutputLog(): OutputLog {
  const texts: string[] = [];
  return {
    record: (...more) => void texts.push(...more),
    expectNoSecrets(secrets) {
      const all = texts.splice(0).join("\n");
      for (const secret of secrets) {
        // Not `toContain`: a failure would print the whole output, and so the key.
        if (all.includes(secret)) throw new Error(`a full key (${secret.slice(0, 12)}…) appeared in the output`);
      }
      expect(secrets.length).toBeGreaterThan(0);
    },
  };
}

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  cwd: string;
  env?: Record<string, string>;
  /** Text piped to the child's stdin; without it stdin is /dev/null. */
  stdin?: string;
  log: OutputLog;
  /** A child still running after this long is killed and the test fails. */
  limitMs?: number;
}

const baseEnv = (cwd: string) => ({ PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? cwd });

/** Runs `openrouter-proxy ARGS` to the end. */
export async function runCli(args: string[], { cwd, env = {}, stdin, log, limitMs = 5000 }: CliOptions): Promise<CliResult> {
  const proc = Bun.spawn([process.execPath, "--no-env-file", "run", mainPath, ...args], {
    cwd,
    env: { ...baseEnv(cwd), ...env },
    stdin: stdin === undefined ? "ignore" : new Blob([stdin]),
    stdout: "pipe",
    stderr: "pipe",
  });
  let timer: Timer | undefined;
  const overdue = new Promise<"overdue">((resolve) => (timer = setTimeout(() => resolve("overdue"), limitMs)));
  const output = Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  const first = await Promise.race([output, overdue]);
  clearTimeout(timer);
  if (first === "overdue") {
    proc.kill("SIGKILL");
    const [stdout, stderr] = await output;
    log.record(stdout, stderr);
    throw new Error(`\`openrouter-proxy ${args[0] ?? ""}\` was still running after ${limitMs} ms`);
  }
  const [stdout, stderr, code] = first;
  log.record(stdout, stderr);
  return { code, stdout, stderr };
}

/** A child on a pseudo-terminal: what it shows (the terminal's echo included) and a keyboard. */
export interface TerminalChild {
  /** Resolves once the screen shows `pattern`; rejects if the child ends first or takes too long. */
  waitFor(pattern: RegExp, limitMs?: number): Promise<void>;
  /** Types into the terminal (as a person would, `\r` for Enter). */
  type(text: string): void;
  /** The exit status; the terminal's output is complete by then. */
  exited: Promise<number>;
  screen(): string;
}

export const hasScript = Bun.which("script") !== null;

const shellQuote = (word: string) => `'${word.replaceAll("'", `'\\''`)}'`;

/**
 * Runs `command` on a new pseudo-terminal with util-linux `script -qec` (exit status passed
 * through, no typescript file). The child's stdin, stdout and stderr are all the terminal.
 */
export function startInTerminal(command: string[], { cwd, env = {}, log }: Omit<CliOptions, "stdin" | "limitMs">): TerminalChild {
  const proc = Bun.spawn(["script", "-qec", command.map(shellQuote).join(" "), "/dev/null"], {
    cwd,
    env: { ...baseEnv(cwd), TERM: "dumb", ...env },
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  let screen = "";
  let ended = false;
  const listeners = new Set<() => void>();
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      screen += decoder.decode(chunk, { stream: true });
      for (const listener of listeners) listener();
    }
  };
  const exited = Promise.all([pump(proc.stdout), pump(proc.stderr)])
    .then(() => proc.exited)
    .then((code) => {
      ended = true;
      log.record(screen);
      void proc.stdin.end();
      for (const listener of listeners) listener();
      return code;
    });
  return {
    screen: () => screen,
    exited,
    type(text) {
      proc.stdin.write(text);
      void proc.stdin.flush();
    },
    waitFor(pattern, limitMs = 5000) {
      return new Promise((resolve, reject) => {
        const done = (error?: Error) => {
          listeners.delete(check);
          clearTimeout(timer);
          if (error) {
            proc.kill("SIGKILL");
            reject(error);
          } else resolve();
        };
        const check = () => {
          if (pattern.test(screen)) done();
          else if (ended) done(new Error(`the program ended before the terminal showed ${pattern}`));
        };
        const timer = setTimeout(() => done(new Error(`the terminal did not show ${pattern} within ${limitMs} ms`)), limitMs);
        listeners.add(check);
        check();
      });
    },
  };
}

/** `bun --no-env-file run src/main.ts ARGS` as a command line for `startInTerminal`. */
export const cliCommand = (args: string[]) => [process.execPath, "--no-env-file", "run", mainPath, ...args];

/** An upstream base URL on loopback where nothing listens: a server on port 0, stopped. */
export async function unreachableUpstream(): Promise<string> {
  const server = Bun.serve({ port: 0, hostname: "127.0.0.1", fetch: () => new Response("") });
  const url = `http://127.0.0.1:${server.port}/api/v1`;
  await server.stop(true);
  return url;
}
