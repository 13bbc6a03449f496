/**
 * What a standalone bench script (gc-per-request.ts, keys-file-writes.ts) starts with: its numeric
 * options, the mock OpenRouter, a keys file with the bench's four keys, and the proxy command on a
 * free port with the environment pointing at both. `stop` ends both processes and removes the folder.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Child, commandArgv, freePort, killTree, readReadyLine, waitForOk } from "./proc.ts";

export const HOST = "127.0.0.1";
export const ROOT = join(import.meta.dir, "..", "..");

/** `--name <number>` taken out of `args` (what is left is the command), or `fallback`. */
export function numberOption(args: string[], name: string, fallback: number): number {
  const at = args.indexOf(name);
  if (at === -1) return fallback;
  const value = Number(args[at + 1]);
  args.splice(at, 2);
  return value;
}

export interface StandaloneTarget {
  dir: string;
  keysFile: string;
  port: number;
  target: Child;
  stop(): Promise<void>;
}

/** `stderrTo`: a file name in the bench's folder for the proxy's stderr (else it is the bench's own). */
export async function startStandalone({ name, command, env: extra, stderrTo }: { name: string; command: string; env: Record<string, string>; stderrTo?: string }): Promise<StandaloneTarget> {
  const dir = mkdtempSync(join(tmpdir(), `${name}-`));
  const mock = Bun.spawn([process.execPath, "run", join(ROOT, "bench", "mock-upstream.ts")], { cwd: ROOT, env: { ...process.env, PORT: "0", HOST }, stdout: "pipe", stderr: "inherit" });
  const ready = await readReadyLine(mock, 10_000);
  const keysFile = join(dir, "keys.json");
  writeFileSync(keysFile, JSON.stringify({ keys: ["a", "b", "c", "d"].map((label, i) => ({ key: `sk-or-v1-bench${i}${"0123456789abcdef".repeat(4)}`, label })) }));
  mkdirSync(join(dir, "logs"));
  const port = freePort();
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) if (value !== undefined && !key.startsWith("OPENROUTER_")) env[key] = value;
  Object.assign(env, { PORT: String(port), HOST, OPENROUTER_BASE_URL: `http://${HOST}:${Number(ready.port)}/api/v1`, KEYS_FILE: keysFile, LOG_DIR: join(dir, "logs") }, extra);
  const target = Bun.spawn(commandArgv(command), { cwd: ROOT, env, stdout: "ignore", stderr: stderrTo === undefined ? "inherit" : Bun.file(join(dir, stderrTo)) });
  await waitForOk(`http://${HOST}:${port}/healthz`, performance.now(), 15_000, 5, target);
  return {
    dir,
    keysFile,
    port,
    target,
    async stop() {
      await killTree(target);
      await killTree(mock);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
