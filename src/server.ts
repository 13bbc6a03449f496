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

/** Stops accepting; waits up to `graceMs` for requests in flight, then closes the rest. */
export async function stopGracefully(server: HttpServer, graceMs: number): Promise<void> {
  const drained = server.stop(false);
  let timer: Timer | undefined;
  const graceOver = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), graceMs);
  });
  const result = await Promise.race([drained.then(() => "drained" as const), graceOver]);
  clearTimeout(timer);
  if (result === "timeout") await server.stop(true);
}
