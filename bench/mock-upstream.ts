/**
 * Fast mock of the OpenRouter API, used as the upstream in the benchmark.
 *
 *   bun run bench/mock-upstream.ts          (env: PORT=0 picks a free port, HOST=127.0.0.1)
 *
 * Prints one JSON line `{"ready":true,"port":N}` on stdout once listening.
 *
 * Routes (matched by path suffix, so `/api/v1/...` and `/v1/...` both work):
 *   POST .../chat/completions   non-streamed JSON with `usage`, or SSE when `"stream": true`
 *   GET  .../models             ~300 generated models (a few hundred KB), built once
 *   GET  .../healthz            200 "ok"
 *   GET  /__clock               this process's clock (ms), for cross-process clock sync
 *   GET  /__stats               requests seen per upstream key
 *
 * Streaming: `x-mock-chunks` (default env MOCK_CHUNKS or 50) content chunks, `x-mock-delay-ms`
 * (default env MOCK_DELAY_MS or 20) apart, the first one right away; then one usage chunk with
 * empty `choices`, then `data: [DONE]`. Every chunk carries `x_sent_ms`, this process's
 * `performance.timeOrigin + performance.now()` at the moment it was written.
 *
 * Requests must carry `Authorization: Bearer sk-or-v1-...` (what the proxy puts there), else 401.
 */

const HOST = process.env.HOST ?? "127.0.0.1";
const PORT = Number(process.env.PORT ?? "0");
const DEFAULT_CHUNKS = Number(process.env.MOCK_CHUNKS ?? "50");
const DEFAULT_DELAY_MS = Number(process.env.MOCK_DELAY_MS ?? "20");
const MAX_CHUNKS = 100_000;
const MAX_DELAY_MS = 60_000;
const MODEL_COUNT = Number(process.env.MOCK_MODELS ?? "300");

if (HOST !== "127.0.0.1" && HOST !== "localhost" && HOST !== "::1") {
  throw new Error(`mock-upstream only listens on loopback, got HOST=${HOST}`);
}

const now = (): number => performance.timeOrigin + performance.now();
const encoder = new TextEncoder();

// ---------------------------------------------------------------- models list

const PROVIDERS = ["openai", "anthropic", "google", "meta-llama", "mistralai", "qwen", "deepseek", "x-ai", "cohere", "nousresearch"] as const;
const FAMILIES = ["chat", "instruct", "turbo", "mini", "pro", "flash", "large", "small", "coder", "vision"] as const;
const WORDS = "a fast capable model for reasoning coding multilingual chat long context tool use structured output vision summarisation agents retrieval function calling with strong benchmark results and low latency".split(" ");

interface ModelEntry {
  id: string;
  canonical_slug: string;
  name: string;
  created: number;
  description: string;
  context_length: number;
  architecture: { modality: string; input_modalities: string[]; output_modalities: string[]; tokenizer: string; instruct_type: string | null };
  pricing: { prompt: string; completion: string; request: string; image: string; web_search: string; internal_reasoning: string };
  top_provider: { context_length: number; max_completion_tokens: number; is_moderated: boolean };
  per_request_limits: null;
  supported_parameters: string[];
}

function buildModels(count: number): ModelEntry[] {
  const models: ModelEntry[] = [];
  for (let i = 0; i < count; i++) {
    const provider = PROVIDERS[i % PROVIDERS.length] ?? "openai";
    const family = FAMILIES[Math.floor(i / PROVIDERS.length) % FAMILIES.length] ?? "chat";
    const version = `${1 + (i % 4)}.${i % 10}`;
    const slug = `${provider}/${family}-${version}-${i}`;
    const words: string[] = [];
    for (let w = 0; w < 90; w++) words.push(WORDS[(i * 7 + w * 3) % WORDS.length] ?? "model");
    const ctx = [8192, 32768, 131072, 200000, 1048576][i % 5] ?? 8192;
    models.push({
      id: slug,
      canonical_slug: `${slug}-20250101`,
      name: `${provider.toUpperCase()}: ${family[0]?.toUpperCase() ?? ""}${family.slice(1)} ${version} (#${i})`,
      created: 1_700_000_000 + i * 3600,
      description: `${words.join(" ")}.`,
      context_length: ctx,
      architecture: {
        modality: i % 3 === 0 ? "text+image->text" : "text->text",
        input_modalities: i % 3 === 0 ? ["text", "image"] : ["text"],
        output_modalities: ["text"],
        tokenizer: provider === "openai" ? "GPT" : "Other",
        instruct_type: i % 4 === 0 ? "chatml" : null,
      },
      pricing: {
        prompt: (0.0000001 * (1 + (i % 30))).toFixed(10),
        completion: (0.0000004 * (1 + (i % 30))).toFixed(10),
        request: "0",
        image: i % 3 === 0 ? "0.001445" : "0",
        web_search: "0",
        internal_reasoning: "0",
      },
      top_provider: { context_length: ctx, max_completion_tokens: 16384, is_moderated: i % 2 === 0 },
      per_request_limits: null,
      supported_parameters: ["max_tokens", "temperature", "top_p", "stop", "frequency_penalty", "presence_penalty", "seed", "tools", "tool_choice", "response_format"],
    });
  }
  return models;
}

const MODELS_BODY = encoder.encode(JSON.stringify({ data: buildModels(MODEL_COUNT) }));
const MODELS_GZIP = Bun.gzipSync(MODELS_BODY);

// ---------------------------------------------------------------- chat completions

let seq = 0;
const nextId = (): string => `gen-${Date.now()}-${(++seq).toString(36).padStart(8, "0")}`;

const COMPLETION_TEXT =
  "Sure! Here is a short answer: the capital of France is Paris. It has been the country's capital since the 10th century, and it is also its largest city.";

function completionBody(model: string): string {
  return JSON.stringify({
    id: nextId(),
    provider: "MockProvider",
    model,
    object: "chat.completion",
    created: Math.floor(Date.now() / 1000),
    choices: [
      {
        logprobs: null,
        finish_reason: "stop",
        native_finish_reason: "stop",
        index: 0,
        message: { role: "assistant", content: COMPLETION_TEXT, refusal: null, reasoning: null },
      },
    ],
    system_fingerprint: "fp_mock",
    usage: {
      prompt_tokens: 28,
      completion_tokens: 36,
      total_tokens: 64,
      cost: 0.0000412,
      is_byok: false,
      prompt_tokens_details: { cached_tokens: 0 },
      completion_tokens_details: { reasoning_tokens: 0 },
    },
  });
}

const STREAM_WORDS = ["The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", "."];

function chunkLine(id: string, model: string, created: number, index: number): Uint8Array {
  const content = STREAM_WORDS[index % STREAM_WORDS.length] ?? ".";
  const role = index === 0 ? `"role":"assistant",` : "";
  return encoder.encode(
    `data: {"id":"${id}","provider":"MockProvider","model":"${model}","object":"chat.completion.chunk","created":${created},` +
      `"choices":[{"index":0,"delta":{${role}"content":${JSON.stringify(content)}},"finish_reason":null,"native_finish_reason":null,"logprobs":null}],` +
      `"x_chunk":${index},"x_sent_ms":${now()}}\n\n`,
  );
}

function finalLines(id: string, model: string, created: number, chunks: number): Uint8Array {
  return encoder.encode(
    `data: {"id":"${id}","provider":"MockProvider","model":"${model}","object":"chat.completion.chunk","created":${created},` +
      `"choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop","native_finish_reason":"stop","logprobs":null}],"x_chunk":${chunks},"x_sent_ms":${now()}}\n\n` +
      `data: {"id":"${id}","provider":"MockProvider","model":"${model}","object":"chat.completion.chunk","created":${created},` +
      `"choices":[],"usage":{"prompt_tokens":28,"completion_tokens":${chunks},"total_tokens":${28 + chunks},"cost":0.0000321,"is_byok":false},"x_sent_ms":${now()}}\n\n` +
      "data: [DONE]\n\n",
  );
}

function intHeader(req: Request, name: string, fallback: number, max: number): number {
  const raw = req.headers.get(name);
  if (raw === null) return fallback;
  const n = Number(raw);
  return Number.isFinite(n) && n >= 0 ? Math.min(Math.floor(n), max) : fallback;
}

function streamResponse(req: Request, model: string): Response {
  const chunks = intHeader(req, "x-mock-chunks", DEFAULT_CHUNKS, MAX_CHUNKS);
  const delayMs = intHeader(req, "x-mock-delay-ms", DEFAULT_DELAY_MS, MAX_DELAY_MS);
  const id = nextId();
  const created = Math.floor(Date.now() / 1000);
  let timer: ReturnType<typeof setTimeout> | undefined;
  let sent = 0;
  let closed = false;
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      const tick = (): void => {
        timer = undefined;
        if (closed) return;
        try {
          if (sent < chunks) {
            controller.enqueue(chunkLine(id, model, created, sent));
            sent++;
          }
          if (sent >= chunks) {
            controller.enqueue(finalLines(id, model, created, chunks));
            closed = true;
            controller.close();
            return;
          }
        } catch {
          closed = true; // client went away
          return;
        }
        timer = setTimeout(tick, delayMs);
      };
      tick();
    },
    cancel() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
    },
  });
  return new Response(body, {
    status: 200,
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache", "x-generation-id": id },
  });
}

// ---------------------------------------------------------------- server

const perKey = new Map<string, number>();
let unauthorized = 0;

interface ChatRequestShape {
  model?: unknown;
  stream?: unknown;
}

const server = Bun.serve({
  hostname: HOST,
  port: PORT,
  idleTimeout: 120,
  async fetch(req): Promise<Response> {
    const path = new URL(req.url).pathname;
    if (path === "/__clock") return new Response(String(now()));
    if (path === "/__stats") return Response.json({ perKey: Object.fromEntries(perKey), unauthorized });
    if (path.endsWith("/healthz")) return new Response("ok");

    const auth = req.headers.get("authorization") ?? "";
    if (!auth.startsWith("Bearer sk-or-v1-")) {
      unauthorized++;
      return Response.json({ error: { code: 401, message: "No auth credentials found" } }, { status: 401 });
    }
    perKey.set(auth, (perKey.get(auth) ?? 0) + 1);

    if (path.endsWith("/chat/completions") && req.method === "POST") {
      let parsed: ChatRequestShape;
      try {
        parsed = (await req.json()) as ChatRequestShape;
      } catch {
        return Response.json({ error: { code: 400, message: "invalid JSON body" } }, { status: 400 });
      }
      const model = typeof parsed.model === "string" ? parsed.model : "openai/gpt-4o-mini";
      if (parsed.stream === true) return streamResponse(req, model);
      return new Response(completionBody(model), { headers: { "content-type": "application/json" } });
    }
    if (path.endsWith("/models") && req.method === "GET") {
      // Like OpenRouter: gzip for a client that accepts it (compressed once, at startup).
      if (/\bgzip\b/.test(req.headers.get("accept-encoding") ?? "")) {
        return new Response(MODELS_GZIP, { headers: { "content-type": "application/json", "content-encoding": "gzip" } });
      }
      return new Response(MODELS_BODY, { headers: { "content-type": "application/json" } });
    }
    return Response.json({ error: { code: 404, message: `no route ${req.method} ${path}` } }, { status: 404 });
  },
});

process.stdout.write(`${JSON.stringify({ ready: true, port: server.port, modelsBytes: MODELS_BODY.byteLength, modelsGzipBytes: MODELS_GZIP.byteLength })}\n`);

const stop = (): void => {
  void server.stop(true);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

export {};
