/**
 * How the real `openai` package (the version in bun.lock) reacts to the proxy's 429s and their
 * Retry-After: for each announced wait, the gaps between the SDK's attempts as the proxy saw
 * them, how many attempts it made, and how long `create()` took before it threw. Run:
 * `bun run bench/openai-retry-after.ts [seconds…]` (about five minutes: the SDK really waits; waits
 * over 60 s are measured with maxRetries 1 to halve the time).
 *
 * The upstream answers every request 429. With `reset` set it announces `X-RateLimit-Reset`
 * (so the proxy rests the key and answers its own 429 with `Retry-After`); without it, it
 * announces nothing and the proxy passes its 429 back with no Retry-After.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import { defaultConfig } from "../src/config.ts";
import { startProxy } from "../src/compose.ts";

/** Seconds to announce; `none` for no reset at all. */
const asked = process.argv.slice(2).map((word) => (word === "none" ? undefined : Number(word))).filter((n) => n === undefined || Number.isFinite(n));
const cases: Array<number | undefined> = asked.length > 0 ? asked : [undefined, 1, 2, 5, 30, 61, 90];

let resetSeconds: number | undefined;
const upstream = Bun.serve({
  port: 0,
  hostname: "127.0.0.1",
  fetch() {
    const headers: Record<string, string> = resetSeconds === undefined ? {} : { "X-RateLimit-Reset": String(Date.now() + resetSeconds * 1000) };
    return Response.json({ error: { message: "Rate limit exceeded", code: 429 } }, { status: 429, headers });
  },
});

const dir = await mkdtemp(join(tmpdir(), "orp-retry-after-"));
const version = ((await Bun.file("node_modules/openai/package.json").json()) as { version: string }).version;

/** One `create()` through a fresh proxy (no rest left from the last case): what the SDK did. */
async function measure(seconds: number | undefined, maxRetries: number): Promise<string> {
  resetSeconds = seconds;
  const keysFile = join(dir, `keys-${seconds ?? "none"}.json`);
  await writeFile(keysFile, JSON.stringify({ keys: [{ key: `sk-or-v1-${"m".repeat(64)}` }] }));
  const started = await startProxy(
    defaultConfig({ PORT: 0, OPENROUTER_BASE_URL: `http://127.0.0.1:${upstream.port}/api/v1`, KEYS_FILE: keysFile, LOG_DIR: join(dir, "logs"), RETRY_BACKOFF_MS: 0, LOG_LEVEL: "error" }),
    { discoverAccounts: false, logOut: () => {}, logErr: () => {} },
  );
  if (!started.ok) throw new Error(started.message);
  const proxy = started.proxy;
  const times: number[] = [];
  const retryAfters: string[] = [];
  const client = new OpenAI({
    apiKey: "client",
    baseURL: `${proxy.url}/v1`,
    maxRetries,
    fetch: async (url, init) => {
      times.push(performance.now());
      const response = await fetch(url, init);
      retryAfters.push(response.headers.get("retry-after") ?? "none");
      return response;
    },
  });
  const t0 = performance.now();
  await client.chat.completions.create({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }).catch(() => {});
  const total = (performance.now() - t0) / 1000;
  await proxy.stop(0);
  const gaps = times.slice(1).map((at, i) => ((at - (times[i] as number)) / 1000).toFixed(2));
  return `| ${seconds === undefined ? "no reset" : `${seconds} s`} | ${retryAfters.join(", ")} | ${maxRetries} | ${times.length} | ${gaps.join(", ")} | ${total.toFixed(2)} |`;
}

console.log(`openai ${version}, Bun ${Bun.version}`);
console.log("| upstream announced | Retry-After of each answer | maxRetries | attempts | gaps between attempts (s) | create() threw after (s) |");
console.log("| --- | --- | --- | --- | --- | --- |");
for (const seconds of cases) console.log(await measure(seconds, seconds !== undefined && seconds > 60 ? 1 : 2));
upstream.stop(true);
await rm(dir, { recursive: true, force: true });
