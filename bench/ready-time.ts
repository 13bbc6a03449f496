/**
 * Spawn to the first 200 from /readyz of the compiled binary, with and without its re-execution
 * (src/main.ts re-executes `serve` once to raise BUN_CONFIG_MAX_HTTP_REQUESTS; with the variable
 * already set it does not). Runs alternate between the two; medians and ranges are printed.
 *
 *   bun run bench/ready-time.ts [--runs 15] [binary]      (binary: ./dist/openrouter-proxy)
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, killTree, waitForOk } from "./lib/proc.ts";
import { median } from "./lib/stats.ts";

const args = process.argv.slice(2);
const runsAt = args.indexOf("--runs");
const runs = runsAt === -1 ? 15 : Number(args.splice(runsAt, 2)[1]);
const binary = args[0] ?? "./dist/openrouter-proxy";
const HOST = "127.0.0.1";

const dir = mkdtempSync(join(tmpdir(), "ready-time-"));
writeFileSync(join(dir, "keys.json"), JSON.stringify({ keys: [{ key: `sk-or-v1-bench0${"0123456789abcdef".repeat(4)}`, label: "a" }] }));
mkdirSync(join(dir, "logs"));
const env: Record<string, string> = {};
for (const [name, value] of Object.entries(process.env)) if (value !== undefined && !name.startsWith("OPENROUTER_") && name !== "BUN_CONFIG_MAX_HTTP_REQUESTS") env[name] = value;
// The upstream is never asked: /readyz answers from the key file alone.
Object.assign(env, { HOST, OPENROUTER_BASE_URL: "http://127.0.0.1:9/api/v1", KEYS_FILE: join(dir, "keys.json"), LOG_DIR: join(dir, "logs") });

async function once(reexec: boolean): Promise<number> {
  const port = freePort();
  const started = performance.now();
  const child = Bun.spawn([binary], { env: { ...env, PORT: String(port), ...(reexec ? {} : { BUN_CONFIG_MAX_HTTP_REQUESTS: "4096" }) }, stdout: "ignore", stderr: "ignore" });
  try {
    return await waitForOk(`http://${HOST}:${port}/readyz`, started, 10_000, 2, child);
  } finally {
    await killTree(child);
  }
}

const times: Record<"with re-exec" | "without re-exec", number[]> = { "with re-exec": [], "without re-exec": [] };
for (let run = 0; run < runs; run++) {
  times["with re-exec"].push(await once(true));
  times["without re-exec"].push(await once(false));
}
rmSync(dir, { recursive: true, force: true });
for (const [name, values] of Object.entries(times)) {
  const sorted = [...values].sort((a, b) => a - b);
  console.log(`${name.padEnd(16)} median ${median(values).toFixed(1)} ms, fastest ${sorted[0]?.toFixed(1)} ms, slowest ${sorted.at(-1)?.toFixed(1)} ms (${runs} runs)`);
}
console.log(`load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`);
