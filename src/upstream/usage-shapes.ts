/**
 * What an answer says it used, for each shape of answer the proxy relays, and where each shape
 * puts an error that arrives inside a 200. The usage tap (usage-tap.ts) finds the bytes; this
 * module says what they mean. One function per shape:
 *
 * - Chat Completions, `/completions`, `/embeddings` (OpenAI's shape, OpenRouter's default):
 *   `usage.prompt_tokens`, `completion_tokens`, `total_tokens`, `cost`,
 *   `prompt_tokens_details.cached_tokens` / `cache_write_tokens`,
 *   `completion_tokens_details.reasoning_tokens`; in a stream, the last chunk before `[DONE]`.
 * - Responses (`/responses`): `usage.input_tokens`, `output_tokens`, `total_tokens`, `cost`,
 *   `input_tokens_details.cached_tokens`, `output_tokens_details.reasoning_tokens`; in a stream,
 *   the `response.completed` (or `response.incomplete`) event's `response.usage`
 *   (https://platform.openai.com/docs/api-reference/responses-streaming).
 * - Anthropic Messages (`/messages`): `usage.input_tokens`, `cache_read_input_tokens`,
 *   `cache_creation_input_tokens`, `output_tokens`; in a stream the input side comes first, in
 *   `message_start`'s `message.usage`, and the output side last, in the final `message_delta`'s
 *   `usage` (cumulative; newer versions repeat the input side there too)
 *   (https://docs.anthropic.com/en/docs/build-with-claude/streaming).
 */
import type { Usage } from "../domain/request-record.ts";

export type UsageShape = "chat" | "responses" | "messages";

/** The shape of the answers an API path gives (`/responses`, `/messages`; everything else speaks chat). */
export function usageShapeOf(path: string): UsageShape {
  if (path === "/responses" || path.startsWith("/responses/")) return "responses";
  if (path === "/messages") return "messages";
  return "chat";
}

function field(value: unknown, name: string): unknown {
  return value !== null && typeof value === "object" ? (value as Record<string, unknown>)[name] : undefined;
}

const count = (value: unknown): number | undefined => (typeof value === "number" && Number.isFinite(value) ? value : undefined);

/** The optional counts, left out when the answer does not report them (one object shape per reader). */
function usage(prompt: number, completion: number, total: number | undefined, extra: { cost: unknown; cached?: unknown; cacheWrite?: unknown; reasoning?: unknown }): Usage {
  const result: Usage = { promptTokens: prompt, completionTokens: completion, totalTokens: total ?? prompt + completion };
  const cached = count(extra.cached);
  const cacheWrite = count(extra.cacheWrite);
  const reasoning = count(extra.reasoning);
  const cost = count(extra.cost);
  if (cached !== undefined) result.cachedTokens = cached;
  if (cacheWrite !== undefined) result.cacheWriteTokens = cacheWrite;
  if (reasoning !== undefined) result.reasoningTokens = reasoning;
  if (cost !== undefined) result.cost = cost;
  return result;
}

/** Chat Completions (and `/completions`, `/embeddings`): the `usage` object. */
export function chatUsage(value: unknown): Usage | undefined {
  const prompt = count(field(value, "prompt_tokens"));
  const completion = count(field(value, "completion_tokens"));
  if (prompt === undefined && completion === undefined) return undefined;
  const details = field(value, "prompt_tokens_details");
  return usage(prompt ?? 0, completion ?? 0, count(field(value, "total_tokens")), {
    cost: field(value, "cost"),
    cached: field(details, "cached_tokens"),
    cacheWrite: field(details, "cache_write_tokens"),
    reasoning: field(field(value, "completion_tokens_details"), "reasoning_tokens"),
  });
}

/** Responses: the response's `usage` object (whole, or from `response.completed` / `response.incomplete`). */
export function responsesUsage(value: unknown): Usage | undefined {
  const input = count(field(value, "input_tokens"));
  const output = count(field(value, "output_tokens"));
  if (input === undefined && output === undefined) return undefined;
  return usage(input ?? 0, output ?? 0, count(field(value, "total_tokens")), {
    cost: field(value, "cost"),
    cached: field(field(value, "input_tokens_details"), "cached_tokens"),
    reasoning: field(field(value, "output_tokens_details"), "reasoning_tokens"),
  });
}

/**
 * Anthropic Messages: a message's `usage` (for a stream, `message_start`'s with the last
 * `message_delta`'s laid over it, see `mergedMessagesUsage`). Anthropic counts cache reads and
 * writes apart from `input_tokens`; the prompt's tokens are all three, as OpenAI's `prompt_tokens`
 * include the cached ones.
 */
export function messagesUsage(value: unknown): Usage | undefined {
  const input = count(field(value, "input_tokens"));
  const output = count(field(value, "output_tokens"));
  if (input === undefined && output === undefined) return undefined;
  const cacheRead = count(field(value, "cache_read_input_tokens"));
  const cacheWrite = count(field(value, "cache_creation_input_tokens"));
  const prompt = (input ?? 0) + (cacheRead ?? 0) + (cacheWrite ?? 0);
  return usage(prompt, output ?? 0, undefined, { cost: field(value, "cost"), cached: cacheRead, cacheWrite });
}

/** A stream's usage objects: `message_start`'s, with the last `message_delta`'s present fields over it. */
export function mergedMessagesUsage(start: unknown, last: unknown): unknown {
  if (start === undefined || start === null || typeof start !== "object") return last;
  const merged: Record<string, unknown> = { ...(start as Record<string, unknown>) };
  if (last !== null && typeof last === "object") {
    for (const [name, value] of Object.entries(last)) if (value !== null && value !== undefined) merged[name] = value;
  }
  return merged;
}

export const usageReaders: Record<UsageShape, (value: unknown) => Usage | undefined> = {
  chat: chatUsage,
  responses: responsesUsage,
  messages: messagesUsage,
};

/**
 * The error an event (or a whole answer) carries, for every shape at once (they do not collide):
 * a top-level `error` (OpenRouter's chat chunk, a 200 JSON error, Anthropic's `event: error`
 * `{"type":"error","error":{…}}`); a Responses `error` event, whose code and message are the
 * event's own; a `response.failed` event, whose response holds it.
 */
export function errorIn(event: unknown): unknown {
  const error = field(event, "error");
  if (error !== undefined && error !== null) return error;
  const type = field(event, "type");
  if (type === "error") return event;
  if (type === "response.failed") return field(field(event, "response"), "error") ?? "the response failed";
  return undefined;
}

/** The error of an event (see `errorIn`) as one line of text, or undefined when it carries none. */
export function lateErrorOf(event: unknown): string | undefined {
  const error = errorIn(event);
  if (error === undefined) return undefined;
  const message = field(error, "message");
  const code = field(error, "code") ?? (field(event, "type") === "error" && error !== event ? field(error, "type") : undefined);
  if (typeof message === "string") return code === undefined || code === null ? message : `${String(code)}: ${message}`;
  return typeof error === "string" ? error : JSON.stringify(error);
}
