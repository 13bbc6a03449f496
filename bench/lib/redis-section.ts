/**
 * Section (g) of `bun run bench`: the proxy with REDIS_URL against the proxy on its keys file
 * (bench/redis-proxy.ts, also `bun run bench:redis` on its own). It starts its own redis-server,
 * mock and proxies, so it runs after the other sections have stopped theirs. Without redis-server
 * on the machine it says so and is skipped.
 */
import { dirname, join } from "node:path";

const BENCH_DIR = dirname(import.meta.dir);

export async function redisSection(quick: boolean): Promise<string> {
  if (Bun.which("redis-server") === null) return "(g) REDIS_URL: skipped, redis-server is not installed (apt-get install -y redis-server)";
  const args = quick ? ["--duration", "1", "--rounds", "1", "--free", "40", "--connections", "8"] : [];
  const child = Bun.spawn([process.execPath, "run", join(BENCH_DIR, "redis-proxy.ts"), ...args], { stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(child.stdout).text(), new Response(child.stderr).text(), child.exited]);
  if (code !== 0) throw new Error(`(g) bench/redis-proxy.ts exited ${code}: ${err.trim().split("\n").slice(-3).join(" | ")}`);
  const table = out.split("\n").filter((line) => line.trim() !== "" && !line.startsWith("BENCH_JSON "));
  return ["(g) the proxy with REDIS_URL (local redis-server) against the proxy on its keys file:", ...table].join("\n");
}
