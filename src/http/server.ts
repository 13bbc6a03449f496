/**
 * Bun.serve wiring and a graceful stop: stop accepting, let requests and streams in flight
 * finish within the grace period, then close what is left.
 */
import type { HttpHandler } from "./app.ts";

export interface ServerOptions {
  handler: HttpHandler;
  port: number;
  hostname: string;
  /**
   * Seconds an idle keep-alive connection is kept. Bun does not apply it to a request whose
   * answer is pending or streaming, so long silences from a reasoning model are not cut by it
   * (tested in test/streaming.test.ts).
   */
  idleTimeoutSeconds?: number;
  /** MAX_BODY_BYTES: the proxy answers over-long bodies itself (OpenAI-shaped); Bun's own limit
   * sits well above it only as a backstop for bodies that never say their length. */
  maxRequestBodySize: number;
}

export type HttpServer = ReturnType<typeof Bun.serve>;

export function startHttpServer({ handler, port, hostname, idleTimeoutSeconds = 30, maxRequestBodySize }: ServerOptions): HttpServer {
  return Bun.serve({
    port,
    hostname,
    idleTimeout: idleTimeoutSeconds,
    maxRequestBodySize: Math.max(maxRequestBodySize * 4, 128 * 1024 * 1024),
    fetch: handler,
  });
}

/** How long requests ended by `endInFlight` get to settle before the stop goes on regardless. */
const SETTLE_MS = 2000;

/**
 * Stops accepting; waits up to `graceMs` for requests in flight, then ends the rest.
 *
 * `endInFlight` (the proxy aborting its upstream requests) ends them: each answer then ends the
 * way an upstream failure ends it, with its log record and key state written. On Bun 1.3.14 it was
 * also the only way, as `server.stop(true)` after `server.stop(false)` was a silent no-op
 * (oven-sh/bun#35130); `stop(true)` is still asked for, not awaited, to close what is left.
 */
export async function stopGracefully(server: HttpServer, graceMs: number, endInFlight?: () => void): Promise<void> {
  await pendingReads();
  const drained = server.stop(false).then(() => "drained" as const);
  if ((await raceTimer(drained, graceMs)) === "drained") return;
  endInFlight?.();
  await raceTimer(drained, SETTLE_MS);
  server.stop(true).catch(() => {});
}

/**
 * Resolves once the event loop has read what is already waiting on the sockets. `stop(false)`
 * closes every connection on which Bun has not seen a request begin, and it sees only bytes it has
 * read: a client whose next request had reached the socket, unread, when the signal was handled
 * would lose its connection with no answer instead of getting 503 shutting_down. The readiness
 * poll comes before the timers in each turn of Bun's loop and after its immediates (one
 * setImmediate was measured not to be enough), so a zero timer fires only after that read.
 */
function pendingReads(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

async function raceTimer<T>(work: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: Timer | undefined;
  const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), ms)));
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
