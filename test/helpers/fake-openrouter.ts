/**
 * A scripted OpenRouter stand-in: a real HTTP server on a random loopback port. Each test says
 * how it answers (`reply` for every request, `replyOnce` for the next ones in order) and reads
 * what it received. Streams can be driven chunk by chunk from the test, so nothing sleeps.
 */

export interface FakeRequest {
  method: string;
  path: string;
  search: string;
  headers: Headers;
  body: string;
  /** The key the proxy chose (the bearer it sent). */
  key: string;
  /** Resolves when the proxy aborts this request (client gone, timeout). */
  aborted: Promise<void>;
  wasAborted: () => boolean;
}

export type FakeHandler = (request: FakeRequest) => Response | Promise<Response>;

export interface FakeOpenRouter {
  /** Base URL in OpenRouter's shape, e.g. http://127.0.0.1:PORT/api/v1 */
  url: string;
  requests: FakeRequest[];
  reply(handler: FakeHandler): void;
  replyOnce(...handlers: FakeHandler[]): void;
  /** Resolves with the next request to arrive (or the n-th overall, when given). */
  nextRequest(): Promise<FakeRequest>;
  /**
   * Serves GET /models with this catalog (each request still recorded, none taking a scripted
   * reply), or with what the handler answers; null: GET /models is scripted like any request.
   */
  serveCatalog(catalog: CatalogModel[] | FakeHandler | null): void;
  stop(): Promise<void>;
}

export function startFakeOpenRouter(): FakeOpenRouter {
  const requests: FakeRequest[] = [];
  const queue: FakeHandler[] = [];
  let fallback: FakeHandler = (request) => chatCompletion(`hello from ${request.key.slice(-4)}`);
  const waiters: Array<(request: FakeRequest) => void> = [];
  let catalog: FakeHandler | undefined;

  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    idleTimeout: 0,
    async fetch(raw) {
      const url = new URL(raw.url);
      let markAborted: () => void = () => {};
      let aborted = false;
      const abortedPromise = new Promise<void>((resolve) => {
        markAborted = () => {
          aborted = true;
          resolve();
        };
      });
      raw.signal.addEventListener("abort", markAborted, { once: true });
      const request: FakeRequest = {
        method: raw.method,
        path: url.pathname.replace(/^\/api\/v1/, ""),
        search: url.search,
        headers: raw.headers,
        body: await raw.text(),
        key: (raw.headers.get("authorization") ?? "").replace(/^Bearer /, ""),
        aborted: abortedPromise,
        wasAborted: () => aborted,
      };
      requests.push(request);
      if (catalog && raw.method === "GET" && request.path === "/models") return catalog(request);
      waiters.shift()?.(request);
      const handler = queue.shift() ?? fallback;
      return handler(request);
    },
  });

  return {
    url: `http://127.0.0.1:${server.port}/api/v1`,
    requests,
    reply(handler) {
      fallback = handler;
    },
    replyOnce(...handlers) {
      queue.push(...handlers);
    },
    nextRequest() {
      return new Promise((resolve) => waiters.push(resolve));
    },
    serveCatalog(models) {
      catalog = models === null ? undefined : typeof models === "function" ? models : () => Response.json({ data: models });
    },
    async stop() {
      await server.stop(true);
    },
  };
}

/** One model of OpenRouter's catalog (`GET /models`), as it lists them: prices are strings of USD per token. */
export interface CatalogModel {
  id: string;
  name: string;
  context_length: number;
  pricing: { prompt: string; completion: string; request: string; image: string };
}

/** A catalog entry priced in USD per million tokens, as OpenRouter's pages show prices. */
export function catalogModel(id: string, promptPerMillion: number, completionPerMillion: number): CatalogModel {
  const perToken = (perMillion: number) => String(perMillion / 1_000_000);
  return { id, name: id, context_length: 128_000, pricing: { prompt: perToken(promptPerMillion), completion: perToken(completionPerMillion), request: "0", image: "0" } };
}

export function chatCompletion(content: string, { model = "openai/gpt-4o-mini", headers = {} }: { model?: string; headers?: Record<string, string> } = {}): Response {
  return Response.json(
    {
      id: "gen-test-1",
      object: "chat.completion",
      created: 1_780_000_000,
      model,
      choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
      usage: { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8, cost: 0.00001 },
    },
    { headers },
  );
}

/** OpenRouter's error shape, with optional headers (rate-limit resets, Retry-After). */
export function errorReply(status: number, message: string, { headers = {}, metadata }: { headers?: Record<string, string>; metadata?: Record<string, unknown> } = {}): Response {
  return Response.json({ error: { code: status, message, ...(metadata ? { metadata } : {}) } }, { status, headers });
}

export function sseChunk(content: string, id = "gen-stream-1"): string {
  return `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created: 1_780_000_000, model: "openai/gpt-4o-mini", choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
}

export const usageChunk = `data: ${JSON.stringify({ id: "gen-stream-1", object: "chat.completion.chunk", created: 1_780_000_000, model: "openai/gpt-4o-mini", choices: [], usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7, cost: 0.00002 } })}\n\n`;

/** OpenRouter's mid-stream error: a chunk with a top-level `error` and finish_reason "error". */
export const lateErrorChunk = `data: ${JSON.stringify({
  id: "gen-stream-1",
  object: "chat.completion.chunk",
  created: 1_780_000_000,
  model: "openai/gpt-4o-mini",
  error: { code: 502, message: "Provider disconnected mid-answer" },
  choices: [{ index: 0, delta: { content: "" }, finish_reason: "error" }],
})}\n\n`;

/** A complete SSE answer as OpenRouter sends it: a keep-alive comment, content, usage, [DONE]. */
export function sseText(parts: string[]): string {
  return `: OPENROUTER PROCESSING\n\n${parts.map((part) => sseChunk(part)).join("")}${usageChunk}data: [DONE]\n\n`;
}

/** An SSE response whose chunks the test sends one at a time, or cuts off. */
export interface ControlledStream {
  response: Response;
  send(text: string): void;
  end(): void;
  /** Ends the stream with an error: the connection breaks mid-body. */
  cut(): void;
  /** Resolves when the reader (the proxy) cancels the stream. */
  cancelled: Promise<void>;
}

export function controlledStream(headers: Record<string, string> = {}): ControlledStream {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let onCancel: () => void = () => {};
  const cancelled = new Promise<void>((resolve) => (onCancel = resolve));
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    cancel() {
      onCancel();
    },
  });
  const encoder = new TextEncoder();
  return {
    response: new Response(body, { headers: { "content-type": "text/event-stream", ...headers } }),
    send: (text) => controller.enqueue(encoder.encode(text)),
    end: () => controller.close(),
    cut: () => controller.error(new Error("connection cut by the fake upstream")),
    cancelled,
  };
}
