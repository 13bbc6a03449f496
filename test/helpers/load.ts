/**
 * Load against a proxy process, shared by test/load.test.ts (short, in CI) and test/soak/soak.ts
 * (full size): a mock upstream that streams for as long as it is told and records every byte it
 * sends; streaming clients over raw sockets (the test process's own `fetch` would queue past 256
 * requests, BUN_CONFIG_MAX_HTTP_REQUESTS); and a steady rate of non-streamed requests.
 *
 * Every stream the client receives is compared byte for byte with what the mock sent for it.
 */
import type { Socket } from "bun";

// ---------------------------------------------------------------- the mock upstream

export interface LoadUpstream {
  /** OpenRouter-shaped base URL. */
  url: string;
  /** What the mock sent as the body of stream `id`, complete once it has ended. */
  sent(id: string): string | undefined;
  forget(id: string): void;
  /** Streams the mock has open right now. */
  openStreams(): number;
  requests(): number;
  stop(): Promise<void>;
}

export interface StreamPlan {
  id: string;
  chunks: number;
  intervalMs: number;
}

/** The body a client sends for one planned stream; the mock reads its plan from `load`. */
export function streamRequestBody(plan: StreamPlan): string {
  return JSON.stringify({ model: "load/stream", stream: true, messages: [{ role: "user", content: `stream ${plan.id}` }], load: plan });
}

export function jsonRequestBody(id: string): string {
  return JSON.stringify({ model: "load/json", messages: [{ role: "user", content: `request ${id}` }], load: { id } });
}

/** The mock's answer to a non-streamed request: a function of its id, so the client can check it. */
export function jsonAnswer(id: string): string {
  return JSON.stringify({
    id: `gen-${id}`,
    object: "chat.completion",
    model: "load/json",
    choices: [{ index: 0, message: { role: "assistant", content: `answer to ${id}: ${"lorem ipsum ".repeat(8)}` }, finish_reason: "stop" }],
    usage: { prompt_tokens: 9, completion_tokens: 30, total_tokens: 39 },
  });
}

function sseEvent(id: string, index: number): string {
  const content = `${id}/${index} ${"token ".repeat(1 + (index % 7))}`;
  return `data: ${JSON.stringify({ id: `gen-${id}`, object: "chat.completion.chunk", model: "load/stream", choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
}

export function startLoadUpstream(): LoadUpstream {
  const sentById = new Map<string, string>();
  let open = 0;
  let requests = 0;
  const encoder = new TextEncoder();
  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    // Idle keep-alive connections from the proxy's pool are closed after 10 s (a stream in
    // progress is not idle), so a settled proxy's descriptors return to where they started.
    idleTimeout: 10,
    async fetch(request) {
      requests++;
      const path = new URL(request.url).pathname;
      if (path.endsWith("/key")) return Response.json({ data: { label: "load", usage: 0, limit: null, is_free_tier: false } });
      const body = (await request.json()) as { stream?: boolean; load: StreamPlan | { id: string } };
      if (!body.stream) return new Response(jsonAnswer(body.load.id), { headers: { "content-type": "application/json" } });

      const { id, chunks, intervalMs } = body.load as StreamPlan;
      let sent = "";
      let timer: Timer | undefined;
      let index = 0;
      open++;
      const stream = new ReadableStream<Uint8Array>({
        start(controller) {
          const send = (text: string) => {
            sent += text;
            controller.enqueue(encoder.encode(text));
          };
          send(": OPENROUTER PROCESSING\n\n");
          send(sseEvent(id, index++));
          timer = setInterval(() => {
            if (index < chunks) {
              send(sseEvent(id, index++));
              return;
            }
            clearInterval(timer);
            send(`data: ${JSON.stringify({ id: `gen-${id}`, object: "chat.completion.chunk", choices: [], usage: { prompt_tokens: 9, completion_tokens: chunks, total_tokens: 9 + chunks } })}\n\ndata: [DONE]\n\n`);
            sentById.set(id, sent);
            open--;
            controller.close();
          }, intervalMs);
        },
        cancel() {
          clearInterval(timer);
          sentById.set(id, `${sent}<<cancelled>>`);
          open--;
        },
      });
      return new Response(stream, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache" } });
    },
  });
  return {
    url: `http://127.0.0.1:${server.port}/api/v1`,
    sent: (id) => sentById.get(id),
    forget: (id) => void sentById.delete(id),
    openStreams: () => open,
    requests: () => requests,
    stop: () => server.stop(true),
  };
}

// ---------------------------------------------------------------- streaming clients

export interface StreamOutcome {
  id: string;
  status: number;
  /** The de-chunked body, as latin1 text (one character per byte). */
  body: string;
  /** The response ended with its final chunk (not cut). */
  complete: boolean;
  error?: string;
  firstByteMs?: number;
}

/** Decodes a chunked body; `complete` when the final zero-size chunk was seen. */
function dechunk(raw: string): { body: string; complete: boolean } {
  let body = "";
  let at = 0;
  for (;;) {
    const lineEnd = raw.indexOf("\r\n", at);
    if (lineEnd === -1) return { body, complete: false };
    const size = Number.parseInt(raw.slice(at, lineEnd), 16);
    if (!Number.isFinite(size)) return { body, complete: false };
    if (size === 0) return { body, complete: true };
    body += raw.slice(lineEnd + 2, lineEnd + 2 + size);
    at = lineEnd + 2 + size + 2;
    if (at > raw.length) return { body, complete: false };
  }
}

/** One streamed chat completion over a raw socket (Connection: close), read to its end. */
export function streamOverSocket(port: number, plan: StreamPlan, limitMs: number): Promise<StreamOutcome> {
  const body = streamRequestBody(plan);
  const request = `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`;
  const started = performance.now();
  return new Promise((resolve) => {
    let raw = "";
    let firstByteMs: number | undefined;
    let settled = false;
    let socket: Socket<undefined> | undefined;
    const finish = (error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket?.end();
      const headEnd = raw.indexOf("\r\n\r\n");
      const head = headEnd === -1 ? raw : raw.slice(0, headEnd);
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0);
      const { body: decoded, complete } = /transfer-encoding: chunked/i.test(head) ? dechunk(raw.slice(headEnd + 4)) : { body: raw.slice(headEnd + 4), complete: false };
      resolve({ id: plan.id, status, body: decoded, complete, ...(error ? { error } : {}), ...(firstByteMs === undefined ? {} : { firstByteMs }) });
    };
    const timer = setTimeout(() => finish(`no end within ${limitMs} ms`), limitMs);
    Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        open(opened) {
          socket = opened;
          opened.write(request);
        },
        data(_socket, chunk) {
          firstByteMs ??= performance.now() - started;
          raw += Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength).toString("latin1");
          // The final chunk: the proxy keeps the connection open (Bun does not close on
          // Connection: close), so the end of the body is the end of the exchange.
          if (raw.endsWith("\r\n0\r\n\r\n")) finish();
        },
        close: () => finish(),
        error: (_socket, error) => finish(String(error)),
        connectError: (_socket, error) => finish(`connect: ${String(error)}`),
      },
    }).catch((error: unknown) => finish(`connect: ${String(error)}`));
  });
}

// ---------------------------------------------------------------- a steady rate of plain requests

export interface RateResult {
  sent: number;
  ok: number;
  failures: string[];
  latenciesMs: number[];
}

/** Sends `perSecond` non-streamed requests a second until `stop()`; checks each answer's bytes. */
export function steadyRequests(baseUrl: string, perSecond: number, prefix: string): { stop: () => Promise<RateResult> } {
  const result: RateResult = { sent: 0, ok: 0, failures: [], latenciesMs: [] };
  const inFlight = new Set<Promise<void>>();
  const tickMs = 50;
  const started = performance.now();
  const one = async (id: string) => {
    const sentAt = performance.now();
    try {
      const response = await fetch(`${baseUrl}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: jsonRequestBody(id) });
      const text = await response.text();
      result.latenciesMs.push(performance.now() - sentAt);
      if (response.status === 200 && text === jsonAnswer(id)) result.ok++;
      else if (result.failures.length < 20) result.failures.push(`${id}: ${response.status} ${text.slice(0, 200)}`);
    } catch (error) {
      if (result.failures.length < 20) result.failures.push(`${id}: ${String(error)}`);
    }
  };
  const timer = setInterval(() => {
    // Open loop: as many as the elapsed time calls for, whatever is still in flight.
    const due = Math.floor(((performance.now() - started) / 1000) * perSecond);
    while (result.sent < due) {
      const promise = one(`${prefix}-${result.sent++}`);
      inFlight.add(promise);
      void promise.finally(() => inFlight.delete(promise));
    }
  }, tickMs);
  return {
    async stop() {
      clearInterval(timer);
      await Promise.all(inFlight);
      return result;
    },
  };
}

export function percentile(values: number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}
