/**
 * Reading and checking a client's request body before anything goes upstream: bounded in size
 * (MAX_BODY_BYTES) and in time (BODY_TIMEOUT_SECONDS, so a client sending a byte a second cannot
 * hold a connection forever), JSON, and an object. The bytes are kept exactly as they came.
 */
import { ProxyError } from "../domain/errors.ts";
import type { ProxyRequest } from "../upstream/forward-types.ts";
import { sessionFromBody } from "../upstream/session-affinity.ts";
import { createSilenceWatcher } from "../upstream/silence-watch.ts";

export interface BodyLimits {
  maxBytes: number;
  timeoutMs: number;
}

const methodsWithoutBody = new Set(["GET", "HEAD", "OPTIONS"]);
const decoder = new TextDecoder();

/**
 * Reads `raw`'s body into `request`: the bytes as they came (`body`, undefined when empty) and what
 * routing, limits and logs read from them (`model`, `models`, `stream`, `session`, `maxTokens`). Returns the
 * request, which is all the run needs: nothing of the body is kept twice.
 */
export async function readCheckedBody(raw: Request, { maxBytes, timeoutMs }: BodyLimits, request: ProxyRequest): Promise<ProxyRequest> {
  if (methodsWithoutBody.has(raw.method)) return request;
  const declared = raw.headers.get("content-length");
  if (declared !== null && Number(declared) > maxBytes) throw tooLarge(maxBytes);
  const reading = (declared !== null ? raw.arrayBuffer() : readCounting(raw, maxBytes)).catch(unreadable);
  const bytes = await withDeadline(reading, timeoutMs);
  if (bytes.byteLength > maxBytes) throw tooLarge(maxBytes);
  if (bytes.byteLength === 0) return request;

  const type = raw.headers.get("content-type") ?? "";
  if (!isJsonMediaType(type)) {
    throw new ProxyError(415, `the body must be JSON, sent with Content-Type: application/json (got ${type === "" ? "no Content-Type" : JSON.stringify(type.slice(0, 100))})`, {
      type: "invalid_request_error",
      code: "unsupported_content_type",
    });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(decoder.decode(bytes));
  } catch (error) {
    throw new ProxyError(400, `the body is not valid JSON: ${error instanceof Error ? error.message : String(error)}`, {
      type: "invalid_request_error",
      code: "invalid_json",
    });
  }
  if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new ProxyError(400, `the body must be a JSON object, like {"model":"…","messages":[…]} (got ${Array.isArray(parsed) ? "an array" : parsed === null ? "null" : `a ${typeof parsed}`})`, {
      type: "invalid_request_error",
      code: "invalid_body",
    });
  }
  // The one parse of the body: what routing needs is read here, the bytes go upstream as they came.
  const fields = parsed as BodyFields;
  request.body = bytes;
  request.model = modelOf(fields.model);
  request.models = otherModelsOf(fields);
  request.stream = fields.stream === true;
  request.session = sessionFromBody(fields);
  request.maxTokens = maxTokensOf(fields);
  return request;
}

interface BodyFields {
  model?: unknown;
  models?: unknown;
  fallbacks?: unknown;
  preset?: unknown;
  stream?: unknown;
  session_id?: unknown;
  prompt_cache_key?: unknown;
  user?: unknown;
  max_tokens?: unknown;
  max_completion_tokens?: unknown;
  max_output_tokens?: unknown;
}

/**
 * The most output the request asks for, by whichever name its API uses (Chat Completions'
 * `max_tokens` or `max_completion_tokens`, Responses' `max_output_tokens`, Messages' `max_tokens`):
 * what a client's budget reserves before it is sent (clients/reservations.ts). Not checked further:
 * the upstream judges the value, this only reads a usable number.
 */
function maxTokensOf({ max_tokens, max_completion_tokens, max_output_tokens }: BodyFields): number | undefined {
  for (const value of [max_tokens, max_completion_tokens, max_output_tokens]) {
    if (typeof value === "number" && Number.isFinite(value) && value >= 0) return Math.ceil(value);
  }
  return undefined;
}

/**
 * `model`, when present, is a string. Anything else is refused rather than passed on: the
 * upstream might read a model out of it (`["openai/gpt-4o"]`, `{"id": …}`) that no check saw.
 */
function modelOf(model: unknown): string | undefined {
  if (model === undefined || typeof model === "string") return model;
  throw invalidModel(`\`model\` must be a string, like "openai/gpt-4o" (got ${kindOf(model)})`);
}

/**
 * Every other model the body names, which OpenRouter may route to: the fallback list `models`,
 * the Messages API's `fallbacks` (`[{"model": …}]`), and a `preset` (it can pick the model; named
 * as it is written in `model`, `@preset/<slug>`). Each must be a string, for the same reason as
 * `model`. Undefined when there are none.
 */
function otherModelsOf({ models, fallbacks, preset }: BodyFields): string[] | undefined {
  let names: string[] | undefined;
  if (models !== undefined) {
    if (!Array.isArray(models) || !models.every((each) => typeof each === "string")) throw invalidModel("`models` must be a list of model names (strings)");
    names = [...(models as string[])];
  }
  if (fallbacks !== undefined) {
    if (!Array.isArray(fallbacks)) throw invalidModel('`fallbacks` must be a list like [{"model": "anthropic/claude-sonnet-4.5"}]');
    for (const fallback of fallbacks) {
      const model = fallback !== null && typeof fallback === "object" ? (fallback as { model?: unknown }).model : undefined;
      if (typeof model !== "string") throw invalidModel('each of `fallbacks` must be {"model": "<a model name>"}');
      (names ??= []).push(model);
    }
  }
  if (preset !== undefined) {
    if (typeof preset !== "string") throw invalidModel("`preset` must be a preset's name (a string)");
    (names ??= []).push(`@preset/${preset}`);
  }
  return names;
}

const kindOf = (value: unknown) => (value === null ? "null" : Array.isArray(value) ? "a list" : `a ${typeof value}`);

function invalidModel(message: string): ProxyError {
  return new ProxyError(400, message, { type: "invalid_request_error", code: "invalid_body" });
}

/**
 * `application/json`, with parameters such as `; charset=utf-8` allowed; nothing else. A loose
 * "contains json" once let `text/plain; x=json` through: a type a web page can send with no
 * preflight. No Content-Type at all is refused too (`curl -d` sends a form type, which is refused
 * anyway; the OpenAI SDKs always send application/json).
 */
function isJsonMediaType(type: string): boolean {
  if (type === "application/json") return true;
  const semicolon = type.indexOf(";");
  return (semicolon === -1 ? type : type.slice(0, semicolon)).trim().toLowerCase() === "application/json";
}

function tooLarge(maxBytes: number): ProxyError {
  return new ProxyError(413, `the body is larger than MAX_BODY_BYTES (${maxBytes} bytes)`, { type: "invalid_request_error", code: "body_too_large" });
}

/**
 * The body stream failed: the client closed the connection mid-body, or sent broken chunked
 * framing (Bun's parser then errors the stream with "The connection was closed."). The client's
 * doing, so a 400 (if anyone is left to read it), not an internal error with a stack in the errors log.
 */
function unreadable(error: unknown): never {
  if (error instanceof ProxyError) throw error;
  const reason = error instanceof Error ? error.message : String(error);
  throw new ProxyError(400, `the request body could not be read to its end (${reason}): check its Content-Length or chunked encoding`, {
    type: "invalid_request_error",
    code: "body_unreadable",
    cause: error,
  });
}

/** A chunked body (no Content-Length): read while counting, and stop at the limit. */
async function readCounting(raw: Request, maxBytes: number): Promise<ArrayBuffer> {
  if (!raw.body) return new ArrayBuffer(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = raw.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      reader.cancel().catch(() => {});
      throw tooLarge(maxBytes);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).buffer as ArrayBuffer;
}

/** One shared timer for every body being read (see upstream/silence-watch.ts for why). */
const deadlines = createSilenceWatcher();

function withDeadline<T>(work: Promise<T>, timeoutMs: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const watch = deadlines.watch(timeoutMs, () =>
      reject(
        new ProxyError(408, `the request body did not arrive within BODY_TIMEOUT_SECONDS (${timeoutMs / 1000} s)`, {
          type: "invalid_request_error",
          code: "body_timeout",
          headers: { connection: "close" },
        }),
      ),
    );
    work.then(
      (value) => {
        watch.stop();
        resolve(value);
      },
      (error: unknown) => {
        watch.stop();
        reject(error);
      },
    );
  });
}
