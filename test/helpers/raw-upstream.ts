/**
 * Faults below HTTP: a raw TCP server on loopback (`Bun.listen`) that plays one scripted
 * behaviour per connection (answer, reset part way, go silent).
 */
import type { Socket, TCPSocketListener } from "bun";

/** What the raw upstream does with one connection, once the request's head has arrived. */
export type Behaviour = (socket: Socket<{ head: string }>) => void;

export interface RawUpstream {
  url: string;
  /** How many connections it has seen. */
  connections(): number;
  stop(): void;
}

/** A TCP server on loopback playing `behaviours[n]` on its n-th connection (the last one after that). */
export function startRawUpstream(behaviours: Behaviour[]): RawUpstream {
  let count = 0;
  const server: TCPSocketListener<{ head: string }> = Bun.listen<{ head: string }>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(socket) {
        socket.data = { head: "" };
      },
      data(socket, chunk) {
        const wasComplete = socket.data.head.includes("\r\n\r\n");
        socket.data.head += new TextDecoder().decode(chunk);
        if (wasComplete || !socket.data.head.includes("\r\n\r\n")) return;
        const behaviour = behaviours[Math.min(count, behaviours.length - 1)] as Behaviour;
        count++;
        behaviour(socket);
      },
      error() {},
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}/api/v1`,
    connections: () => count,
    stop: () => server.stop(true),
  };
}

