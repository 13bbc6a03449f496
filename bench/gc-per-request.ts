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
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { cpuMs } from "./lib/proc.ts";
import { HOST, numberOption, startStandalone } from "./lib/standalone.ts";

const args = process.argv.slice(2);
const requests = numberOption(args, "--requests", 20_000);
const connections = numberOption(args, "--connections", 32);
const command = args.length > 0 ? args.join(" ") : "./dist/openrouter-proxy";

const { dir, port, target, stop } = await startStandalone({ name: "gc-per-request", command, env: { BUN_JSC_logGC: "1", BUN_CONFIG_MAX_HTTP_REQUESTS: "4096" }, stderrTo: "gc.log" });
const gcLog = join(dir, "gc.log");

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
await stop();

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
