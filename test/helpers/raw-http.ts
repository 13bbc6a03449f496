/**
 * HTTP/1.1 by hand over a raw TCP socket (`Bun.connect`), for what `fetch` will not send: a body
 * dribbled a byte at a time, chunked bodies without Content-Length, oversized or malformed
 * headers. Records what came back, and when and how the connection ended.
 */
import type { Socket } from "bun";

export interface RawConnection {
  /** Writes all of `data`, waiting for the socket to drain as needed; false if it closed first. */
  write(data: string | Uint8Array): Promise<boolean>;
  /** Everything received so far, as text. */
  received(): string;
  /** Resolves once the received text matches `pattern` (or the connection closes, or `limitMs` passes). */
  waitFor(pattern: RegExp, limitMs?: number): Promise<boolean>;
  /** Resolves when either side has closed the connection. */
  closed: Promise<void>;
  isClosed(): boolean;
  /** Milliseconds from connecting until it closed, if it has. */
  closedAfterMs(): number | undefined;
  end(): void;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export async function connectRaw(port: number, hostname = "127.0.0.1"): Promise<RawConnection> {
  let text = "";
  let closedAt: number | undefined;
  const openedAt = performance.now();
  const listeners = new Set<() => void>();
  const notify = () => {
    for (const listener of [...listeners]) listener();
  };
  let markClosed: () => void = () => {};
  const closed = new Promise<void>((resolve) => (markClosed = resolve));
  let drained: (() => void) | undefined;
  const onClose = () => {
    closedAt ??= performance.now();
    markClosed();
    drained?.();
    notify();
  };
  const socket: Socket<undefined> = await Bun.connect({
    hostname,
    port,
    socket: {
      data(_socket, chunk) {
        text += decoder.decode(chunk, { stream: true });
        notify();
      },
      drain() {
        drained?.();
      },
      close: onClose,
      error: onClose,
      end: onClose,
    },
  });

  return {
    async write(data) {
      let bytes = typeof data === "string" ? encoder.encode(data) : data;
      while (bytes.byteLength > 0) {
        if (closedAt !== undefined) return false;
        const written = socket.write(bytes);
        if (written < 0) return false;
        bytes = bytes.subarray(written);
        if (bytes.byteLength > 0) await new Promise<void>((resolve) => (drained = resolve));
      }
      return closedAt === undefined;
    },
    received: () => text,
    waitFor(pattern, limitMs = 5000) {
      return new Promise((resolve) => {
        const done = (value: boolean) => {
          listeners.delete(check);
          clearTimeout(timer);
          resolve(value);
        };
        const check = () => {
          if (pattern.test(text)) done(true);
          else if (closedAt !== undefined) done(false);
        };
        const timer = setTimeout(() => done(false), limitMs);
        listeners.add(check);
        check();
      });
    },
    closed,
    isClosed: () => closedAt !== undefined,
    closedAfterMs: () => (closedAt === undefined ? undefined : closedAt - openedAt),
    end() {
      socket.end();
    },
  };
}

/** A parsed HTTP/1.1 response head and body (Content-Length bodies only; enough for error answers). */
export interface RawResponse {
  status: number;
  headers: Headers;
  body: string;
}

/** The first complete response in `text`, or undefined when none has fully arrived. */
export function parseRawResponse(text: string): RawResponse | undefined {
  const headEnd = text.indexOf("\r\n\r\n");
  if (headEnd === -1) return undefined;
  const [statusLine = "", ...lines] = text.slice(0, headEnd).split("\r\n");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1]);
  if (!Number.isInteger(status)) return undefined;
  const headers = new Headers();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon > 0) headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
  }
  const length = Number(headers.get("content-length") ?? "0");
  // Content-Length counts bytes, and messages may hold non-ASCII characters ("…").
  const rest = Buffer.from(text.slice(headEnd + 4), "utf8");
  if (rest.length < length) return undefined;
  return { status, headers, body: rest.subarray(0, length).toString("utf8") };
}
