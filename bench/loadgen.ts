/**
 * Fallback load generator for when `wrk` is not installed (apt-get install -y wrk).
 * Closed loop: `connections` workers each send a request, read the whole body, repeat, for
 * `durationMs`. Costs far more CPU than wrk, so its numbers are only comparable with each other.
 *
 *   bun run bench/loadgen.ts '<LoadgenConfig as JSON>'
 *
 * Prints the same `BENCH_JSON {...}` line as bench/wrk/report.lua.
 */
import { percentileSorted } from "./lib/stats.ts";

export interface LoadgenConfig {
  url: string;
  method: "GET" | "POST";
  headers: Record<string, string>;
  body?: string;
  connections: number;
  durationMs: number;
}

export interface LoadResult {
  requests: number;
  duration_us: number;
  bytes: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latency_us: { min: number; mean: number; stdev: number; max: number; p50: number; p90: number; p99: number; p999: number };
}

const MAX_SAMPLES = 5_000_000;

export async function runLoad(cfg: LoadgenConfig): Promise<LoadResult> {
  const target = new URL(cfg.url);
  if (!["127.0.0.1", "localhost", "[::1]"].includes(target.hostname)) throw new Error(`loadgen only targets loopback, got ${cfg.url}`);
  const samples = new Float64Array(MAX_SAMPLES);
  let n = 0;
  let bytes = 0;
  const errors = { connect: 0, read: 0, write: 0, status: 0, timeout: 0 };
  const start = performance.now();
  const end = start + cfg.durationMs;
  const worker = async (): Promise<void> => {
    for (let i = 0; i < MAX_SAMPLES && n < MAX_SAMPLES && performance.now() < end; i++) {
      const t0 = performance.now();
      try {
        const res = await fetch(cfg.url, {
          method: cfg.method,
          headers: cfg.headers,
          body: cfg.body,
          signal: AbortSignal.timeout(10_000),
        });
        const buf = await res.arrayBuffer();
        bytes += buf.byteLength;
        if (res.status >= 400) errors.status++;
        samples[n++] = (performance.now() - t0) * 1000;
      } catch (err) {
        if (err instanceof Error && err.name === "TimeoutError") errors.timeout++;
        else errors.connect++;
      }
    }
  };
  await Promise.all(Array.from({ length: cfg.connections }, worker));
  const elapsedUs = (performance.now() - start) * 1000;
  const sorted = samples.subarray(0, n).sort();
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i] ?? 0;
  const mean = n > 0 ? sum / n : 0;
  let sq = 0;
  for (let i = 0; i < n; i++) sq += ((sorted[i] ?? 0) - mean) ** 2;
  return {
    requests: n,
    duration_us: Math.round(elapsedUs),
    bytes,
    errors,
    latency_us: {
      min: sorted[0] ?? 0,
      mean,
      stdev: n > 1 ? Math.sqrt(sq / (n - 1)) : 0,
      max: sorted[n - 1] ?? 0,
      p50: percentileSorted(sorted, 50),
      p90: percentileSorted(sorted, 90),
      p99: percentileSorted(sorted, 99),
      p999: percentileSorted(sorted, 99.9),
    },
  };
}

if (import.meta.main) {
  const arg = process.argv[2];
  if (arg === undefined) throw new Error("usage: bun run bench/loadgen.ts '<config json>'");
  const result = await runLoad(JSON.parse(arg) as LoadgenConfig);
  process.stdout.write(`BENCH_JSON ${JSON.stringify(result)}\n`);
  process.exit(0);
}
