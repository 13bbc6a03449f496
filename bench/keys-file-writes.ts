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
import { countFileWrites } from "./lib/file-writes.ts";
import { HOST, numberOption, ROOT, startStandalone } from "./lib/standalone.ts";
import { join } from "node:path";

const args = process.argv.slice(2);
const rate = numberOption(args, "--rate", 1000);
const seconds = numberOption(args, "--seconds", 16);
const command = args.length > 0 ? args.join(" ") : `${process.execPath} run ${join(ROOT, "src", "main.ts")} serve`;

const { keysFile, port, stop } = await startStandalone({ name: "keys-file-writes", command, env: { LOG_LEVEL: "error" } });

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
await stop();

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
