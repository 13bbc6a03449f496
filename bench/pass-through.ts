/**
 * The floor: the thinnest possible forwarder. Same env contract as the proxy:
 *   PORT (default 3000; 0 picks a free port), HOST (default 127.0.0.1),
 *   OPENROUTER_BASE_URL (e.g. http://127.0.0.1:PORT/api/v1), KEYS_FILE (uses the first key).
 *
 *   bun run bench/pass-through.ts
 *
 * `/v1/*` and `/api/v1/*` go to `${OPENROUTER_BASE_URL}/*` (other paths are appended as they are),
 * with Authorization swapped; the upstream body is returned as it streams. Nothing else.
 * Prints `{"ready":true,"port":N}` on stdout once listening.
 */

const HOST = process.env.HOST ?? "127.0.0.1";
const PORT = Number(process.env.PORT ?? "3000");
const BASE = (process.env.OPENROUTER_BASE_URL ?? "http://127.0.0.1:8080/api/v1").replace(/\/+$/, "");

interface KeysFile {
  keys: { key: string }[];
}

async function firstKey(): Promise<string> {
  const file = process.env.KEYS_FILE;
  if (file === undefined || file === "") return "sk-or-v1-pass-through-default";
  const parsed = (await Bun.file(file).json()) as KeysFile;
  const key = parsed.keys[0]?.key;
  if (key === undefined) throw new Error(`no keys in ${file}`);
  return key;
}

const AUTH = `Bearer ${await firstKey()}`;

const server = Bun.serve({
  hostname: HOST,
  port: PORT,
  idleTimeout: 120,
  async fetch(req): Promise<Response> {
    const url = new URL(req.url);
    const p = url.pathname;
    const rest = p.startsWith("/api/v1/") ? p.slice(7) : p.startsWith("/v1/") ? p.slice(3) : p;
    const headers = new Headers(req.headers);
    headers.set("authorization", AUTH);
    headers.delete("host");
    const upstream = await fetch(BASE + rest + url.search, {
      method: req.method,
      headers,
      body: req.method === "GET" || req.method === "HEAD" ? undefined : await req.arrayBuffer(),
      // Bytes as they came, compressed or not: the thinnest forwarder does not decode.
      decompress: false,
    });
    return new Response(upstream.body, { status: upstream.status, headers: upstream.headers });
  },
});

process.stdout.write(`${JSON.stringify({ ready: true, port: server.port })}\n`);

const stop = (): void => {
  void server.stop(true);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

export {};
