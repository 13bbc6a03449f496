/**
 * The command line as a person meets it: `bun run src/main.ts` in a child process, its exit
 * status, what it prints, the `.env` in its working directory, and what SIGTERM leaves on disk.
 *
 * Children run with a minimal environment (nothing of this test process's settings leaks in)
 * and, unless a test says otherwise, with Bun's own `.env` loading off (`--no-env-file`), so that
 * what is tested is the program's loader, the one a compiled binary relies on.
 */
import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { errorReply, startFakeOpenRouter, type FakeOpenRouter } from "./helpers/fake-openrouter.ts";
import { tempDir, testKeys } from "./helpers/test-proxy.ts";

const mainPath = join(import.meta.dir, "..", "src", "main.ts");
const [keyA, keyB] = testKeys as [string, string];
const version = ((await Bun.file(join(import.meta.dir, "..", "package.json")).json()) as { version: string }).version;

type Launcher = "bun run" | "bun --no-env-file run";

interface Child {
  proc: Bun.Subprocess<"ignore", "pipe", "pipe">;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the match once stdout matches; rejects if the process ends first or it takes too long. */
  waitForStdout(pattern: RegExp, limitMs?: number): Promise<RegExpMatchArray>;
  exited: Promise<number>;
}

/** Everything every child printed, scanned for keys after each test. */
const printed: string[] = [];
const cleanups: Array<() => Promise<void>> = [];
let fake: FakeOpenRouter;

beforeAll(() => {
  fake = startFakeOpenRouter();
});
afterAll(() => fake.stop());
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  const output = printed.splice(0).join("\n");
  for (const key of testKeys) expect(output).not.toContain(key);
});

async function folder(): Promise<string> {
  const { dir, cleanup } = await tempDir();
  cleanups.push(cleanup);
  return dir;
}

function spawn(args: string[], { cwd, env = {}, launcher = "bun --no-env-file run" }: { cwd: string; env?: Record<string, string>; launcher?: Launcher }): Child {
  const bunArgs = launcher === "bun run" ? ["run"] : ["--no-env-file", "run"];
  const proc = Bun.spawn([process.execPath, ...bunArgs, mainPath, ...args], {
    cwd,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? cwd, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  let out = "";
  let err = "";
  const listeners = new Set<() => void>();
  const pump = async (stream: ReadableStream<Uint8Array>, append: (text: string) => void) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      append(decoder.decode(chunk, { stream: true }));
      for (const listener of listeners) listener();
    }
  };
  const pumped = Promise.all([pump(proc.stdout, (text) => (out += text)), pump(proc.stderr, (text) => (err += text))]);
  const exited = pumped.then(() => proc.exited).then((code) => {
    printed.push(out, err);
    for (const listener of listeners) listener();
    return code;
  });
  let ended = false;
  void exited.then(() => (ended = true));
  cleanups.push(async () => {
    if (!ended) {
      proc.kill("SIGKILL");
      await exited;
    }
  });

  return {
    proc,
    stdout: () => out,
    stderr: () => err,
    exited,
    waitForStdout(pattern, limitMs = 3000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          listeners.delete(check);
          reject(new Error(`nothing matching ${pattern} printed within ${limitMs} ms\nstdout: ${out}\nstderr: ${err}`));
        }, limitMs);
        const check = () => {
          const match = pattern.exec(out);
          if (match) {
            listeners.delete(check);
            clearTimeout(timer);
            resolve(match);
          } else if (ended) {
            listeners.delete(check);
            clearTimeout(timer);
            reject(new Error(`the process ended (status ${proc.exitCode}) before printing ${pattern}\nstdout: ${out}\nstderr: ${err}`));
          }
        };
        listeners.add(check);
        void exited.then(check);
        check();
      });
    },
  };
}

/** Runs a command that should end by itself; one still running after `limitMs` fails the test. */
async function run(args: string[], options: Parameters<typeof spawn>[1], limitMs = 3000): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(args, options);
  let timer: Timer | undefined;
  const overdue = new Promise<"overdue">((resolve) => (timer = setTimeout(() => resolve("overdue"), limitMs)));
  const code = await Promise.race([child.exited, overdue]);
  clearTimeout(timer);
  if (code === "overdue") {
    child.proc.kill("SIGKILL");
    await child.exited;
    throw new Error(`\`${args.join(" ")}\` was still running after ${limitMs} ms\nstdout: ${child.stdout()}\nstderr: ${child.stderr()}`);
  }
  return { code, stdout: child.stdout(), stderr: child.stderr() };
}

/** The proxy's base URL, from the line it prints once it listens. */
async function listening(child: Child): Promise<string> {
  const [, url] = await child.waitForStdout(/listening on (http:\/\/\S+)\/v1 /);
  return url as string;
}

function oneLine(text: string): string {
  const lines = text.split("\n").filter((line) => line !== "");
  expect(lines).toHaveLength(1);
  return lines[0] as string;
}

describe("settings", () => {
  test("a bad environment value exits with status 2 and one line naming the variable, the value and what is allowed", async () => {
    const { code, stdout, stderr } = await run([], { cwd: await folder(), env: { MAX_ATTEMPTS: "0" } });
    expect(code).toBe(2);
    expect(oneLine(stderr)).toBe('openrouter-proxy: invalid MAX_ATTEMPTS="0": expected an integer from 1 to 20');
    expect(stdout).toBe("");
  });

  test.each<Launcher>(["bun --no-env-file run", "bun run"])("a .env in the working directory is read (%s)", async (launcher) => {
    const cwd = await folder();
    await writeFile(join(cwd, ".env"), "# local settings\nexport ROTATION=bogus\n");
    const { code, stderr } = await run([], { cwd, launcher });
    expect(code).toBe(2);
    expect(oneLine(stderr)).toBe('openrouter-proxy: invalid ROTATION="bogus": expected one of sticky, round-robin, least-recently-used');
  });

  test.each<Launcher>(["bun --no-env-file run", "bun run"])("a variable set in the environment wins over the same one in .env (%s)", async (launcher) => {
    const cwd = await folder();
    await writeFile(join(cwd, ".env"), "ROTATION=bogus\nKEYS_FILE=from-dotenv.json\n");
    await writeFile(join(cwd, "from-dotenv.json"), JSON.stringify([keyA, keyB]));
    const child = spawn(["--port", "0"], { cwd, launcher, env: { ROTATION: "round-robin" } });
    await listening(child);
    // .env supplied KEYS_FILE; the environment overrode its ROTATION.
    await child.waitForStdout(/2 keys from from-dotenv\.json, rotation round-robin/);
    child.proc.kill("SIGTERM");
    expect(await child.exited).toBe(0);
  });

  test.each([
    [["--port", "0", "--host", "127.0.0.1"]],
    [["--port=0", "--host=127.0.0.1"]],
  ])("--port and --host override PORT and HOST (%p); SIGTERM then stops the server with status 0", async (args) => {
    const cwd = await folder();
    const child = spawn(args, { cwd, env: { PORT: "not-a-port", HOST: "10.255.255.254" } });
    const url = await listening(child);
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(url).not.toMatch(/:0$/);
    const health = await fetch(`${url}/healthz`);
    expect(health.status).toBe(200);

    child.proc.kill("SIGTERM");
    expect(await child.exited).toBe(0);
    expect(child.stdout()).toContain("SIGTERM");
    expect(await fetch(`${url}/healthz`).then(() => "answered", () => "refused")).toBe("refused");
  });
});

describe("stopping", () => {
  test("SIGTERM sent the moment the startup lines appear is handled: the server stops cleanly with status 0", async () => {
    const cwd = await folder();
    await writeFile(join(cwd, "keys.json"), JSON.stringify([keyA]));
    // Five times, since a handler installed after the lines are printed loses only some races.
    for (let round = 0; round < 5; round++) {
      const child = spawn(["--port", "0"], { cwd });
      await child.waitForStdout(/1 key from keys\.json/);
      child.proc.kill("SIGTERM");
      expect(await child.exited).toBe(0);
      expect(child.stdout()).toContain("SIGTERM: finishing requests in flight");
    }
  });
});

describe("the keys file", () => {
  test("a keys file that is not JSON exits with status 2 naming the file and where it breaks, and leaves it as it was", async () => {
    const cwd = await folder();
    const path = join(cwd, "broken-keys.json");
    const text = `{"keys": [{"key": "${keyA}",}]}`;
    await writeFile(path, text);
    const { code, stderr } = await run([], { cwd, env: { KEYS_FILE: path } });
    expect(code).toBe(2);
    const line = oneLine(stderr);
    expect(line).toContain(path);
    expect(line).toMatch(/not valid JSON \(line 1, column \d+/);
    expect(await readFile(path, "utf8")).toBe(text);
  });

  test("a keys file of the wrong shape exits with status 2 naming the file and the problem", async () => {
    const cwd = await folder();
    await writeFile(join(cwd, "keys.json"), JSON.stringify({ keys: [{ label: "forgot the key" }] }));
    const { code, stderr } = await run([], { cwd });
    expect(code).toBe(2);
    expect(oneLine(stderr)).toMatch(/^openrouter-proxy: keys\.json has the wrong shape at keys\[0\]\.key/);
  });

  test("SIGTERM right after a rate limit writes the key's cooldown to the file before exiting", async () => {
    const cwd = await folder();
    const path = join(cwd, "keys.json");
    await writeFile(path, JSON.stringify({ keys: [{ key: keyA, label: "only" }] }));
    const reset = Date.now() + 10 * 60_000;
    fake.reply(() => errorReply(429, "Rate limit exceeded: slow down", { headers: { "X-RateLimit-Reset": String(reset) } }));

    const child = spawn(["--port", "0"], { cwd, env: { OPENROUTER_BASE_URL: fake.url, RETRY_BACKOFF_MS: "0" } });
    const url = await listening(child);
    const response = await fetch(`${url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer anything" },
      body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
    });
    expect(response.status).toBe(429);
    expect(fake.requests.at(-1)?.key).toBe(keyA);
    await response.text();

    child.proc.kill("SIGTERM");
    expect(await child.exited).toBe(0);
    const file = JSON.parse(await readFile(path, "utf8")) as { keys: Array<{ id: string; state: Record<string, unknown> }> };
    expect(file.keys[0]?.id).toBe(keyIdOf(keyA));
    expect(file.keys[0]?.state).toMatchObject({ cooldownUntil: new Date(reset).toISOString(), cooldownSource: "header", requests: 1 });
  });
});

describe("commands and flags", () => {
  test.each([["--help"], ["-h"], ["help"]])("%s prints the usage and exits 0", async (flag) => {
    const { code, stdout, stderr } = await run([flag], { cwd: await folder() });
    expect(code).toBe(0);
    expect(stdout).toContain("Usage:");
    expect(stdout).toContain("--port");
    expect(stderr).toBe("");
  });

  test("help serve prints the serve command's help and exits 0", async () => {
    const { code, stdout } = await run(["help", "serve"], { cwd: await folder() });
    expect(code).toBe(0);
    expect(stdout).toContain("openrouter-proxy serve [--port N] [--host ADDRESS]");
  });

  test.each([["--version"], ["-v"]])("%s prints the version and exits 0", async (flag) => {
    const { code, stdout } = await run([flag], { cwd: await folder() });
    expect(code).toBe(0);
    expect(oneLine(stdout)).toStartWith(`openrouter-proxy ${version} (`);
  });

  test.each([
    [["frobnicate"], "unknown command frobnicate"],
    [["help", "frobnicate"], "unknown command frobnicate"],
    [["--frobnicate"], "unknown option --frobnicate"],
    [["--port"], "--port needs a value"],
    [["serve", "extra"], "serve takes no arguments"],
  ])("%p prints what is wrong and the usage, and exits 2", async (args, problem) => {
    const { code, stdout, stderr } = await run(args, { cwd: await folder() });
    expect(code).toBe(2);
    expect(stderr).toStartWith(`openrouter-proxy: ${problem}`);
    expect(stderr).toContain("Usage:");
    expect(stdout).toBe("");
  });
});
