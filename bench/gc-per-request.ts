/**
 * Garbage per request: how many collections (eden and full) the target runs, and how many bytes
 * it allocates, per 1,000 non-streamed chat completions, counted from JavaScriptCore's own log
 * (`BUN_JSC_logGC=1` on the target process; "bytes allocated this cycle" summed over cycles), and
 * its CPU time per request.
 *
 *   bun run bench/gc-per-request.ts [--requests 20000] [--connections 32] [command ...]
 *
 * The command defaults to ./dist/openrouter-proxy; `bun run bench/pass-through.ts` gives the floor.
 * A warm-up of 2,000 requests is not counted. The load comes from fetch in this process.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { commandArgv, cpuMs, freePort, killTree, readReadyLine, waitForOk } from "./lib/proc.ts";

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const at = args.indexOf(name);
  if (at === -1) return fallback;
  const value = Number(args[at + 1]);
  args.splice(at, 2);
  return value;
};
const requests = option("--requests", 20_000);
const connections = option("--connections", 32);
const command = args.length > 0 ? args.join(" ") : "./dist/openrouter-proxy";
const HOST = "127.0.0.1";
const ROOT = join(import.meta.dir, "..");

const dir = mkdtempSync(join(tmpdir(), "gc-per-request-"));
const mock = Bun.spawn([process.execPath, "run", join(import.meta.dir, "mock-upstream.ts")], { cwd: ROOT, env: { ...process.env, PORT: "0", HOST }, stdout: "pipe", stderr: "inherit" });
const ready = await readReadyLine(mock, 10_000);
const upstream = `http://${HOST}:${Number(ready.port)}/api/v1`;
const keys = ["a", "b", "c", "d"].map((label, i) => ({ key: `sk-or-v1-bench${i}${"0123456789abcdef".repeat(4)}`, label }));
writeFileSync(join(dir, "keys.json"), JSON.stringify({ keys }));
mkdirSync(join(dir, "logs"));
const port = freePort();
const gcLog = join(dir, "gc.log");
const env: Record<string, string> = {};
for (const [name, value] of Object.entries(process.env)) if (value !== undefined && !name.startsWith("OPENROUTER_")) env[name] = value;
Object.assign(env, { PORT: String(port), HOST, OPENROUTER_BASE_URL: upstream, KEYS_FILE: join(dir, "keys.json"), LOG_DIR: join(dir, "logs"), BUN_JSC_logGC: "1", BUN_CONFIG_MAX_HTTP_REQUESTS: "4096" });
const target = Bun.spawn(commandArgv(command), { cwd: ROOT, env, stdout: "ignore", stderr: Bun.file(gcLog) });
await waitForOk(`http://${HOST}:${port}/healthz`, performance.now(), 15_000, 5, target);

const body = JSON.stringify({ model: "openai/gpt-4o-mini", max_tokens: 64, messages: [{ role: "user", content: "What is the capital of France?" }] });
async function load(count: number): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) {
      next++;
      const response = await fetch(`http://${HOST}:${port}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json", authorization: "Bearer sk-client-bench" }, body });
      await response.arrayBuffer();
      if (response.status !== 200) throw new Error(`status ${response.status}`);
    }
  };
  await Promise.all(Array.from({ length: connections }, worker));
}

await load(2_000);
await Bun.sleep(200);
const from = readFileSync(gcLog, "utf8").length;
const started = performance.now();
const cpuBefore = cpuMs(target.pid);
await load(requests);
const cpuUsed = cpuMs(target.pid) - cpuBefore;
const seconds = (performance.now() - started) / 1000;
await Bun.sleep(200);
const text = readFileSync(gcLog, "utf8").slice(from);
await killTree(target);
await killTree(mock);
rmSync(dir, { recursive: true, force: true });

const eden = (text.match(/=> EdenCollection/g) ?? []).length;
const full = (text.match(/=> FullCollection/g) ?? []).length;
let allocated = 0;
for (const match of text.matchAll(/bytes allocated this cycle: (\d+)/g)) allocated += Number(match[1]);
const per1000 = (n: number) => ((n / requests) * 1000).toFixed(2);
console.log(
  JSON.stringify({
    command,
    requests,
    connections,
    seconds: Number(seconds.toFixed(2)),
    edenPer1000: Number(per1000(eden)),
    fullPer1000: Number(per1000(full)),
    allocatedBytesPerRequest: Math.round(allocated / requests),
    // utime + stime of the target's process tree over the counted requests: less sensitive to a
    // busy machine than requests/s (another process's load adds waiting, not CPU time).
    cpuMicrosPerRequest: Math.round((cpuUsed * 1000) / requests),
    loadAverage: readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" "),
  }),
);
