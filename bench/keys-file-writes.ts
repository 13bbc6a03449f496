/**
 * How often the keys file is written under a steady load: the server saves decisions within
 * 500 ms but counters alone at most once per 5 s, so a steady stream of plain successes should
 * rewrite `KEYS_FILE` at most once per 5 s, whatever the rate.
 *
 *   bun run bench/keys-file-writes.ts [--rate 1000] [--seconds 16] [command ...]
 *
 * The command defaults to the proxy from source (`bun run src/main.ts`). Each write is a rename of
 * a new file over the old one, so the writes are counted as changes of the file's inode
 * (bench/lib/file-writes.ts, polled every 2 ms). The first 2 s (startup, the first save) are not counted.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { countFileWrites } from "./lib/file-writes.ts";
import { commandArgv, freePort, killTree, readReadyLine, waitForOk } from "./lib/proc.ts";

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const at = args.indexOf(name);
  if (at === -1) return fallback;
  const value = Number(args[at + 1]);
  args.splice(at, 2);
  return value;
};
const rate = option("--rate", 1000);
const seconds = option("--seconds", 16);
const ROOT = join(import.meta.dir, "..");
const command = args.length > 0 ? args.join(" ") : `${process.execPath} run ${join(ROOT, "src", "main.ts")} serve`;
const HOST = "127.0.0.1";

const dir = mkdtempSync(join(tmpdir(), "keys-file-writes-"));
const mock = Bun.spawn([process.execPath, "run", join(import.meta.dir, "mock-upstream.ts")], { cwd: ROOT, env: { ...process.env, PORT: "0", HOST }, stdout: "pipe", stderr: "inherit" });
const ready = await readReadyLine(mock, 10_000);
const upstream = `http://${HOST}:${Number(ready.port)}/api/v1`;
const keysFile = join(dir, "keys.json");
writeFileSync(keysFile, JSON.stringify({ keys: ["a", "b", "c", "d"].map((label, i) => ({ key: `sk-or-v1-bench${i}${"0123456789abcdef".repeat(4)}`, label })) }));
mkdirSync(join(dir, "logs"));
const port = freePort();
const env: Record<string, string> = {};
for (const [name, value] of Object.entries(process.env)) if (value !== undefined && !name.startsWith("OPENROUTER_")) env[name] = value;
Object.assign(env, { PORT: String(port), HOST, OPENROUTER_BASE_URL: upstream, KEYS_FILE: keysFile, LOG_DIR: join(dir, "logs"), LOG_LEVEL: "error" });
const target = Bun.spawn(commandArgv(command), { cwd: ROOT, env, stdout: "ignore", stderr: "inherit" });
await waitForOk(`http://${HOST}:${port}/healthz`, performance.now(), 15_000, 5, target);

const watcher = countFileWrites(keysFile, 2);

const body = JSON.stringify({ model: "openai/gpt-4o-mini", max_tokens: 64, messages: [{ role: "user", content: "hi" }] });
const started = performance.now();
const countFrom = started + 2000;
let sent = 0;
let failed = 0;
const inFlight = new Set<Promise<void>>();
// Paced: request n leaves at started + n / rate, whatever the answers' latency.
while (performance.now() - started < seconds * 1000) {
  const due = started + (sent / rate) * 1000;
  const wait = due - performance.now();
  if (wait > 1) await Bun.sleep(wait);
  sent++;
  const request: Promise<void> = fetch(`http://${HOST}:${port}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer sk-client-bench" }, body })
    .then(async (response) => {
      await response.arrayBuffer();
      if (response.status !== 200) failed++;
    })
    .catch(() => void failed++)
    .finally(() => inFlight.delete(request));
  inFlight.add(request);
}
await Promise.all(inFlight);
const ended = performance.now();
const writes = await watcher.stop();
await killTree(target);
await killTree(mock);
rmSync(dir, { recursive: true, force: true });

const counted = writes.filter((at) => at >= countFrom);
const gaps = counted.slice(1).map((at, i) => at - (counted[i] as number));
const window = (ended - countFrom) / 1000;
console.log(
  JSON.stringify({
    requests: sent,
    failed,
    requestsPerSecond: Math.round(sent / ((ended - started) / 1000)),
    countedSeconds: Number(window.toFixed(1)),
    writes: counted.length,
    writesPer5s: Number(((counted.length / window) * 5).toFixed(2)),
    minGapMs: gaps.length > 0 ? Math.round(Math.min(...gaps)) : null,
  }),
);
