/**
 * What an answer says it used, for every shape the proxy relays: whole answers and streams of
 * Chat Completions, the Responses API and Anthropic's Messages API, each read by the usage tap
 * as its bytes pass (cut into chunks of many sizes) and from a whole answer's tail.
 */
import { describe, expect, test } from "bun:test";
import type { Usage } from "../src/domain/request-record.ts";
import { usageShapeOf, type UsageShape } from "../src/upstream/usage-shapes.ts";
import { readAnswerTail, readJsonAnswerTail, UsageTap } from "../src/upstream/usage-tap.ts";
import {
  messageObject,
  messagesErrorEvent,
  messagesStreamText,
  responseObject,
  responsesErrorEvent,
  responsesFailedEvent,
  responsesStreamStart,
  responsesStreamText,
} from "./helpers/api-shapes.ts";
import { lateErrorChunk, sseChunk, sseText } from "./helpers/fake-openrouter.ts";

const encoder = new TextEncoder();
const bytes = (text: string) => encoder.encode(text);

/** The tap fed `text` in chunks of `size` bytes. */
function tapped(text: string, size: number, shape: UsageShape, isEventStream: boolean) {
  const all = bytes(text);
  const tap = new UsageTap(shape);
  for (let at = 0; at < all.byteLength; at += size) tap.observe(all.subarray(at, at + size));
  return tap.finish(isEventStream);
}

const chunkSizes = [1, 7, 64, 1000, 100_000];

/** Every way the answer can arrive gives the same reading. */
function expectRead(text: string, shape: UsageShape, isEventStream: boolean, expected: { usage?: Usage; lateError?: string }) {
  expect(readAnswerTail(bytes(text), isEventStream, shape)).toEqual(expected);
  for (const size of chunkSizes) expect(tapped(text, size, shape, isEventStream)).toEqual(expected);
}

describe("the shape of an answer follows its API path", () => {
  test.each([
    ["/chat/completions", "chat"],
    ["/completions", "chat"],
    ["/embeddings", "chat"],
    ["/responses", "responses"],
    ["/messages", "messages"],
    ["/models", "chat"],
  ] as const)("%s answers in the %s shape", (path, shape) => {
    expect(usageShapeOf(path)).toBe(shape);
  });
});

const chatBody = JSON.stringify({
  id: "gen-1",
  object: "chat.completion",
  choices: [{ index: 0, message: { role: "assistant", content: "Hi" }, finish_reason: "stop" }],
  usage: { prompt_tokens: 194, completion_tokens: 2, total_tokens: 196, cost: 0.95, cost_details: { upstream_inference_cost: 19 }, prompt_tokens_details: { cached_tokens: 64, cache_write_tokens: 10, audio_tokens: 0 }, completion_tokens_details: { reasoning_tokens: 1 } },
});
const embeddingsBody = JSON.stringify({ object: "list", data: [{ object: "embedding", index: 0, embedding: [0.1, 0.2] }], model: "openai/text-embedding-3-small", usage: { prompt_tokens: 8, total_tokens: 8, cost: 0.00000016 } });

describe("usage shapes, whole answers", () => {
  test.each([
    ["a chat completion: prompt, completion, cached, cache-write and reasoning tokens and the cost", "chat", chatBody, { promptTokens: 194, completionTokens: 2, totalTokens: 196, cost: 0.95, cachedTokens: 64, cacheWriteTokens: 10, reasoningTokens: 1 }],
    ["an embeddings answer: prompt tokens only", "chat", embeddingsBody, { promptTokens: 8, completionTokens: 0, totalTokens: 8, cost: 0.00000016 }],
    [
      "a Responses answer: input, output, cached and reasoning tokens and the cost, past `\"error\":null`",
      "responses",
      JSON.stringify(responseObject("In a peaceful grove beneath a silver moon…", { input: 36, output: 87, cached: 12, reasoning: 20, cost: 0.00123 })),
      { promptTokens: 36, completionTokens: 87, totalTokens: 123, cost: 0.00123, cachedTokens: 12, reasoningTokens: 20 },
    ],
    [
      "an incomplete Responses answer still tells what it used",
      "responses",
      JSON.stringify(responseObject("Cut", { input: 36, output: 16 }, "incomplete")),
      { promptTokens: 36, completionTokens: 16, totalTokens: 52, cachedTokens: 0, reasoningTokens: 0 },
    ],
    [
      "an Anthropic message: the prompt is input plus cache reads and writes",
      "messages",
      JSON.stringify(messageObject("Hi! My name is Claude.", { input: 2095, output: 503, cached: 100, cacheWrite: 2051, cost: 0.0123 })),
      { promptTokens: 2095 + 100 + 2051, completionTokens: 503, totalTokens: 2095 + 100 + 2051 + 503, cost: 0.0123, cachedTokens: 100, cacheWriteTokens: 2051 },
    ],
  ] as const)("%s", (_what, shape, body, usage) => {
    expectRead(body, shape, false, { usage });
    expect(readJsonAnswerTail(bytes(body), shape)).toEqual({ usage });
  });

  test("a Responses answer far larger than the 16 KB tail still gives its usage, near its end", () => {
    const body = JSON.stringify(responseObject("y".repeat(100_000), { input: 10, output: 25_000, cost: 0.25 }));
    expectRead(body, "responses", false, { usage: { promptTokens: 10, completionTokens: 25_000, totalTokens: 25_010, cost: 0.25, cachedTokens: 0, reasoningTokens: 0 } });
  });

  test("a `usage` the answer's metadata happens to hold, after the real one, is not taken for it", () => {
    const answer = responseObject("Hi", { input: 36, output: 87, cost: 0.00123 });
    const body = JSON.stringify({ ...answer, metadata: { usage: "internal" } }).replace('"metadata":{"usage":"internal"}', '"metadata":{"usage":{"tier":"gold"},"note":{"usage":"x"}}');
    expectRead(body, "responses", false, { usage: { promptTokens: 36, completionTokens: 87, totalTokens: 123, cost: 0.00123, cachedTokens: 0, reasoningTokens: 0 } });
  });

  test("a failed Responses answer (status failed, its error set) is read as a late error", () => {
    const body = JSON.stringify(responseObject("", null, "failed", { code: "server_error", message: "The model failed to generate a response." }));
    expectRead(body, "responses", false, { lateError: "server_error: The model failed to generate a response." });
  });

  test("an Anthropic error answered with a 200 is read as a late error", () => {
    const body = JSON.stringify({ type: "error", error: { type: "overloaded_error", message: "Overloaded" } });
    expectRead(body, "messages", false, { lateError: "overloaded_error: Overloaded" });
  });
});

const responsesUsage = { promptTokens: 37, completionTokens: 11, totalTokens: 48, cost: 0.000211, cachedTokens: 0, reasoningTokens: 0 };
const messagesUsage = { promptTokens: 25 + 5 + 3, completionTokens: 15, totalTokens: 48, cost: 0.00031, cachedTokens: 5, cacheWriteTokens: 3 };

describe("usage shapes, streams", () => {
  test("a chat stream: the usage chunk before [DONE]", () => {
    expectRead(sseText(["Hel", "lo"]), "chat", true, { usage: { promptTokens: 5, completionTokens: 2, totalTokens: 7, cost: 0.00002 } });
  });

  test("a Responses stream: response.completed's response.usage", () => {
    expectRead(responsesStreamText(["Hi", " there"], { input: 37, output: 11, cost: 0.000211 }), "responses", true, { usage: responsesUsage });
  });

  test("a Responses stream cut short by max_output_tokens: response.incomplete's response.usage", () => {
    expectRead(responsesStreamText(["Hi"], { input: 37, output: 11, cost: 0.000211 }, "response.incomplete"), "responses", true, { usage: responsesUsage });
  });

  test("a Responses stream whose response.completed (it repeats the whole answer) is larger than the 16 KB tail", () => {
    const deltas = Array.from({ length: 400 }, (_, index) => `word${index} `.repeat(20));
    const text = responsesStreamText(deltas, { input: 37, output: 11, cost: 0.000211 });
    const completed = text.slice(text.lastIndexOf("event: response.completed"));
    expect(bytes(completed).byteLength).toBeGreaterThan(16 * 1024);
    expectRead(text, "responses", true, { usage: responsesUsage });
  });

  test("an Anthropic stream: input tokens from message_start, output tokens and the cost from the last message_delta", () => {
    expectRead(messagesStreamText(["Hello", "!"], { input: 25, cached: 5, cacheWrite: 3, output: 15, cost: 0.00031 }), "messages", true, { usage: messagesUsage });
  });

  test("an Anthropic stream far longer than the tail still has message_start's input tokens", () => {
    const deltas = Array.from({ length: 2000 }, (_, index) => `part ${index} `);
    const text = messagesStreamText(deltas, { input: 25, cached: 5, cacheWrite: 3, output: 15, cost: 0.00031 });
    expect(bytes(text).byteLength).toBeGreaterThan(10 * 16 * 1024);
    for (const size of [1, 7, 333, 4096]) expect(tapped(text, size, "messages", true)).toEqual({ usage: messagesUsage });
  });

  test("an Anthropic message_delta that repeats the input side (cumulative) is taken over message_start's", () => {
    const text = messagesStreamText(["Hi"], { input: 25, output: 15 }).replace('"usage":{"output_tokens":15}', '"usage":{"input_tokens":30,"cache_read_input_tokens":0,"output_tokens":15}');
    expectRead(text, "messages", true, { usage: { promptTokens: 30, completionTokens: 15, totalTokens: 45, cachedTokens: 0, cacheWriteTokens: 0 } });
  });

  test.each([
    ["a chat stream's error chunk", "chat", `${sseChunk("partial")}${lateErrorChunk}`, "502: Provider disconnected mid-answer"],
    ["a Responses `error` event", "responses", `${responsesStreamStart()}${responsesErrorEvent}`, "server_error: The model failed to generate a response."],
    ["a Responses `response.failed` event", "responses", `${responsesStreamStart()}${responsesFailedEvent}`, "server_error: The model failed to generate a response."],
    ["an Anthropic `event: error`", "messages", `${messagesStreamText(["Hel"], { input: 25, output: 3 }).split("event: message_delta")[0]}${messagesErrorEvent}`, "overloaded_error: Overloaded"],
  ] as const)("%s is a late error", (_what, shape, text, lateError) => {
    for (const size of chunkSizes) expect(tapped(text, size, shape, true).lateError).toBe(lateError);
    expect(readAnswerTail(bytes(text), true, shape).lateError).toBe(lateError);
  });

  test("a Responses stream that went well is no late error for all its `\"error\":null`", () => {
    expect(tapped(responsesStreamText(["Hi"], { input: 1, output: 1 }), 64, "responses", true).lateError).toBeUndefined();
  });
});
