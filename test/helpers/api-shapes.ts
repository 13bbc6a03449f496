/**
 * Answers of the Responses API (`/responses`) and of Anthropic's Messages API (`/messages`) as
 * OpenRouter relays them, whole and streamed. The bodies follow the examples of OpenAI's
 * (platform.openai.com/docs/api-reference/responses, …/responses-streaming) and Anthropic's
 * (docs.anthropic.com/en/api/messages, …/build-with-claude/streaming) references, with
 * OpenRouter's `cost` added to `usage` as it reports it.
 */

export interface ShapeUsage {
  input: number;
  output: number;
  cost?: number;
  cached?: number;
  reasoning?: number;
  /** Anthropic only: tokens written to the cache. */
  cacheWrite?: number;
}

const RESPONSE_ID = "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b";
const MESSAGE_ID = "msg_013Zva2CMHLNnXjNJJKqJ2EF";

function responsesUsageObject({ input, output, cost, cached = 0, reasoning = 0 }: ShapeUsage): Record<string, unknown> {
  return {
    input_tokens: input,
    input_tokens_details: { cached_tokens: cached },
    output_tokens: output,
    output_tokens_details: { reasoning_tokens: reasoning },
    total_tokens: input + output,
    ...(cost === undefined ? {} : { cost }),
  };
}

/** A Responses API response object (`status`, `output` and `usage` as given). */
export function responseObject(text: string, usage: ShapeUsage | null, status = "completed", error: unknown = null): Record<string, unknown> {
  return {
    id: RESPONSE_ID,
    object: "response",
    created_at: 1741476542,
    status,
    error,
    incomplete_details: status === "incomplete" ? { reason: "max_output_tokens" } : null,
    instructions: null,
    max_output_tokens: null,
    model: "openai/gpt-4.1",
    output:
      status === "in_progress"
        ? []
        : [
            {
              type: "message",
              id: "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
              status: "completed",
              role: "assistant",
              content: [{ type: "output_text", text, annotations: [] }],
            },
          ],
    parallel_tool_calls: true,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    store: false,
    temperature: 1.0,
    text: { format: { type: "text" } },
    tool_choice: "auto",
    tools: [],
    top_p: 1.0,
    truncation: "disabled",
    usage: usage === null ? null : responsesUsageObject(usage),
    user: null,
    metadata: {},
  };
}

const event = (type: string, body: Record<string, unknown>) => `event: ${type}\ndata: ${JSON.stringify({ type, ...body })}\n\n`;

/** A Responses stream: created, in progress, the text in deltas, and the final event (`response.completed` by default). */
export function responsesStreamText(deltas: string[], usage: ShapeUsage, final: "response.completed" | "response.incomplete" = "response.completed"): string {
  const text = deltas.join("");
  const itemId = "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b";
  let sequence = 0;
  const next = () => sequence++;
  let out = ": OPENROUTER PROCESSING\n\n";
  out += event("response.created", { response: responseObject("", null, "in_progress"), sequence_number: next() });
  out += event("response.in_progress", { response: responseObject("", null, "in_progress"), sequence_number: next() });
  out += event("response.output_item.added", { output_index: 0, item: { id: itemId, type: "message", status: "in_progress", role: "assistant", content: [] }, sequence_number: next() });
  out += event("response.content_part.added", { item_id: itemId, output_index: 0, content_index: 0, part: { type: "output_text", text: "", annotations: [] }, sequence_number: next() });
  for (const delta of deltas) out += event("response.output_text.delta", { item_id: itemId, output_index: 0, content_index: 0, delta, sequence_number: next() });
  out += event("response.output_text.done", { item_id: itemId, output_index: 0, content_index: 0, text, sequence_number: next() });
  out += event("response.content_part.done", { item_id: itemId, output_index: 0, content_index: 0, part: { type: "output_text", text, annotations: [] }, sequence_number: next() });
  out += event("response.output_item.done", { output_index: 0, item: { id: itemId, type: "message", status: "completed", role: "assistant", content: [{ type: "output_text", text, annotations: [] }] }, sequence_number: next() });
  out += event(final, { response: responseObject(text, usage, final === "response.completed" ? "completed" : "incomplete"), sequence_number: next() });
  return out;
}

/** Responses' late failures: an `error` event, and `response.failed`. */
export const responsesErrorEvent = event("error", { code: "server_error", message: "The model failed to generate a response.", param: null, sequence_number: 5 });
export const responsesFailedEvent = event("response.failed", {
  response: responseObject("", null, "failed", { code: "server_error", message: "The model failed to generate a response." }),
  sequence_number: 5,
});

/** The start of a Responses stream, before any text: what a late failure follows. */
export function responsesStreamStart(): string {
  return event("response.created", { response: responseObject("", null, "in_progress"), sequence_number: 0 }) + event("response.output_text.delta", { item_id: "msg_1", output_index: 0, content_index: 0, delta: "Partial", sequence_number: 1 });
}

function messagesUsageObject({ input, output, cost, cached = 0, cacheWrite = 0 }: ShapeUsage): Record<string, unknown> {
  return { input_tokens: input, cache_creation_input_tokens: cacheWrite, cache_read_input_tokens: cached, output_tokens: output, ...(cost === undefined ? {} : { cost }) };
}

/** An Anthropic Messages answer. */
export function messageObject(text: string, usage: ShapeUsage): Record<string, unknown> {
  return {
    id: MESSAGE_ID,
    type: "message",
    role: "assistant",
    model: "anthropic/claude-sonnet-4.5",
    content: [{ type: "text", text }],
    stop_reason: "end_turn",
    stop_sequence: null,
    usage: messagesUsageObject(usage),
  };
}

/**
 * An Anthropic stream: `message_start` (the input side of the usage, and `output_tokens: 1`),
 * a text block in deltas with a `ping`, `message_delta` (the output side, cumulative) and
 * `message_stop`. With `cost`, OpenRouter's figure rides on the final `message_delta`.
 */
export function messagesStreamText(deltas: string[], usage: ShapeUsage): string {
  const { cost, ...counts } = usage;
  const start = messagesUsageObject({ ...counts, output: 1 });
  let out = ": OPENROUTER PROCESSING\n\n";
  out += event("message_start", { message: { id: MESSAGE_ID, type: "message", role: "assistant", content: [], model: "anthropic/claude-sonnet-4.5", stop_reason: null, stop_sequence: null, usage: start } });
  out += event("content_block_start", { index: 0, content_block: { type: "text", text: "" } });
  out += event("ping", {});
  for (const text of deltas) out += event("content_block_delta", { index: 0, delta: { type: "text_delta", text } });
  out += event("content_block_stop", { index: 0 });
  out += event("message_delta", { delta: { stop_reason: "end_turn", stop_sequence: null }, usage: { output_tokens: usage.output, ...(cost === undefined ? {} : { cost }) } });
  out += event("message_stop", {});
  return out;
}

/** Anthropic's late failure. */
export const messagesErrorEvent = event("error", { error: { type: "overloaded_error", message: "Overloaded" } });

/** A whole answer or a stream as the fake upstream's reply. */
export const jsonAnswer = (body: unknown) => Response.json(body);
export const streamAnswer = (text: string) => new Response(text, { headers: { "content-type": "text/event-stream" } });
