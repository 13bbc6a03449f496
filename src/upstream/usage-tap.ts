/**
 * Reads the token usage (and a late error) from an answer while its bytes pass through, without
 * holding any back. OpenRouter puts `usage` last: in a JSON body at its end, in a stream in the
 * final chunk before `[DONE]`; an error after a 200 also ends the stream. So the tap keeps only
 * the last few KB of bytes and reads them once, when the body ends: no per-chunk parsing.
 */
import type { Usage } from "../domain/request-record.ts";
import { dataPayloads } from "./sse.ts";

export interface TapResult {
  usage?: Usage;
  /** An error event that arrived inside a 200 stream (or a 200 JSON body carrying `error`). */
  lateError?: string;
}

/** A whole JSON answer's tail read, and, when it carries `error`, the answer as parsed (its facts need no second parse). */
export type JsonAnswerTail = TapResult & { errorAnswer?: unknown };

const TAIL_BYTES = 16 * 1024;
/** How much of a stream's end is read first (see `UsageTap.finish`). */
const FIRST_LOOK_BYTES = 4 * 1024;

/** The chunks from index `from` on, as one array (no copy for a single chunk). */
function joined(chunks: readonly Uint8Array[], from: number): Uint8Array {
  return from === chunks.length - 1 ? (chunks[from] as Uint8Array) : Buffer.concat(chunks.slice(from));
}

export class UsageTap {
  private chunks: Uint8Array[] = [];
  private bytes = 0;
  /** With LOG_BODIES: the first bytes of the answer, up to `captureLimit`. */
  private captured: Uint8Array[] = [];
  private capturedBytes = 0;

  constructor(private readonly captureLimit = 0) {}

  /** The captured start of the answer (LOG_BODIES), or undefined when nothing was captured. */
  capturedBody(): Uint8Array | undefined {
    return this.captured.length > 0 ? Buffer.concat(this.captured) : undefined;
  }

  /**
   * Keeps the chunks themselves, not copies. (On Bun 1.3 a chunk read from a fetch body was a view
   * into a 256 KB buffer that stayed alive while any view of it did, oven-sh/bun#30593, so this
   * kept copies; Bun 1.4 reads each chunk into a buffer of its own size, checked in usage.test.ts.)
   */
  observe(chunk: Uint8Array): void {
    if (this.capturedBytes < this.captureLimit) {
      this.captured.push(chunk);
      this.capturedBytes += chunk.byteLength;
    }
    this.chunks.push(chunk);
    this.bytes += chunk.byteLength;
    // Drop whole chunks from the front while the rest still covers the tail.
    while (this.chunks.length > 1 && this.bytes - (this.chunks[0] as Uint8Array).byteLength >= TAIL_BYTES) {
      this.bytes -= (this.chunks.shift() as Uint8Array).byteLength;
    }
  }

  /**
   * Reads the kept tail. The last few KB (whole chunks) are looked at first: that is where the
   * usage event and a late error are, and hundreds of streams may end at once, so copying 16 KB
   * for each shows. Only when they hold neither is the whole tail read.
   */
  finish(isEventStream: boolean): TapResult {
    const chunks = this.chunks;
    this.chunks = [];
    if (chunks.length === 0) return {};
    let from = chunks.length - 1;
    for (let bytes = (chunks[from] as Uint8Array).byteLength; from > 0 && bytes < FIRST_LOOK_BYTES; ) bytes += (chunks[--from] as Uint8Array).byteLength;
    const first = readAnswerTail(joined(chunks, from), isEventStream);
    if (from === 0 || first.usage !== undefined || first.lateError !== undefined) return first;
    return readAnswerTail(joined(chunks, 0), isEventStream);
  }
}

/** Usage and late errors from the end of a whole answer (or its last bytes). */
export function readAnswerTail(bytes: Uint8Array, isEventStream: boolean): TapResult {
  const from = bytes.byteLength > TAIL_BYTES ? bytes.byteLength - TAIL_BYTES : 0;
  return isEventStream ? readStreamTail(bytes, from) : readJsonTail(bytes, from);
}

/** A whole JSON answer (as `readAnswerTail`), keeping the parsed answer when it carries an error. */
export function readJsonAnswerTail(bytes: Uint8Array): JsonAnswerTail {
  return readJsonTail(bytes, bytes.byteLength > TAIL_BYTES ? bytes.byteLength - TAIL_BYTES : 0, true);
}

/** The last place `key` starts at or after `from`, or -1: a search of the tail only, not of a whole large answer. */
function lastIndexIn(buffer: Buffer, key: Uint8Array, from: number): number {
  const at = buffer.subarray(from).lastIndexOf(key);
  return at === -1 ? -1 : from + at;
}

const decoder = new TextDecoder();
const USAGE_KEY = Buffer.from('"usage"');
const ERROR_KEY = Buffer.from('"error"');

/**
 * The end of a stream, searched as bytes (natively): the event line holding the last `"usage"` is
 * the only one decoded and parsed, unless an `"error"` is there too (rare), when every event line
 * of the tail is read. Thousands of streams can end in the same millisecond; this keeps their
 * bookkeeping from holding up the others' chunks.
 */
function readStreamTail(bytes: Uint8Array, from: number): TapResult {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer.indexOf(ERROR_KEY, from) !== -1) return readStreamLines(decoder.decode(bytes.subarray(from)));
  const usageAt = lastIndexIn(buffer, USAGE_KEY, from);
  if (usageAt === -1) return {};
  const lineStart = Math.max(from, buffer.lastIndexOf(0x0a, usageAt) + 1);
  const lineEnd = buffer.indexOf(0x0a, usageAt);
  return readStreamLines(decoder.decode(bytes.subarray(lineStart, lineEnd === -1 ? bytes.byteLength : lineEnd)));
}

/** Usage and errors from SSE text: every `data:` line that mentions one is parsed; the last wins. */
function readStreamLines(tail: string): TapResult {
  const result: TapResult = {};
  for (const data of dataPayloads(tail)) {
    if (data === "[DONE]" || !(data.includes('"usage"') || data.includes('"error"'))) continue;
    let event: unknown;
    try {
      event = JSON.parse(data);
    } catch {
      continue; // the first line of the tail may be cut; a broken line is not ours to judge
    }
    const usage = usageOf(field(event, "usage"));
    if (usage) result.usage = usage;
    const error = errorText(field(event, "error"));
    if (error) result.lateError = error;
  }
  return result;
}

/**
 * A whole JSON answer, searched as bytes (natively) for its last `"usage"`; only the text from
 * there on is decoded and parsed, not the answer: `usage` is the last thing in the body.
 */
function readJsonTail(bytes: Uint8Array, from: number, keepErrorAnswer = false): JsonAnswerTail {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const usageAt = lastIndexIn(buffer, USAGE_KEY, from);
  const usage = usageAt !== -1 ? usageOf(lastObjectAfter(decoder.decode(bytes.subarray(usageAt)), '"usage"')) : undefined;
  // A 200 that carries an error (OpenRouter does this) has a top-level "error"; rare, so the
  // parse of the tail happens only when the word is there at all.
  let error: string | undefined;
  let parsed: unknown;
  if (buffer.indexOf(ERROR_KEY, from) !== -1) {
    try {
      parsed = JSON.parse(decoder.decode(bytes.subarray(from)));
      error = errorText(field(parsed, "error"));
    } catch {
      // larger than the tail, or not JSON: nothing to say
    }
  }
  const result: JsonAnswerTail = {};
  if (usage !== undefined) result.usage = usage;
  if (error !== undefined) {
    result.lateError = error;
    if (keepErrorAnswer && from === 0) result.errorAnswer = parsed; // the whole answer, not a piece of it
  }
  return result;
}

/** The JSON object that follows the last occurrence of `key`, parsed; undefined if there is none. */
function lastObjectAfter(text: string, key: string): unknown {
  const at = text.lastIndexOf(key);
  const open = at === -1 ? -1 : text.indexOf("{", at);
  if (open === -1) return undefined;
  let depth = 0;
  let inString = false;
  for (let index = open; index < text.length; index++) {
    const char = text.charCodeAt(index);
    if (inString) {
      if (char === 92 /* \ */) index++;
      else if (char === 34 /* " */) inString = false;
    } else if (char === 34) inString = true;
    else if (char === 123 /* { */) depth++;
    else if (char === 125 /* } */ && --depth === 0) {
      try {
        return JSON.parse(text.slice(open, index + 1));
      } catch {
        return undefined;
      }
    }
  }
  return undefined;
}

function field(value: unknown, name: string): unknown {
  return value !== null && typeof value === "object" ? (value as Record<string, unknown>)[name] : undefined;
}

const count = (value: unknown): number | undefined => (typeof value === "number" && Number.isFinite(value) ? value : undefined);

function usageOf(value: unknown): Usage | undefined {
  const prompt = count(field(value, "prompt_tokens"));
  const completion = count(field(value, "completion_tokens"));
  if (prompt === undefined && completion === undefined) return undefined;
  const cached = count(field(field(value, "prompt_tokens_details"), "cached_tokens"));
  const reasoning = count(field(field(value, "completion_tokens_details"), "reasoning_tokens"));
  const cost = count(field(value, "cost"));
  return {
    promptTokens: prompt ?? 0,
    completionTokens: completion ?? 0,
    totalTokens: count(field(value, "total_tokens")) ?? (prompt ?? 0) + (completion ?? 0),
    cachedTokens: cached,
    reasoningTokens: reasoning,
    cost,
  };
}

function errorText(value: unknown): string | undefined {
  if (value === undefined || value === null) return undefined;
  const message = field(value, "message");
  const code = field(value, "code");
  if (typeof message === "string") return code === undefined ? message : `${String(code)}: ${message}`;
  return typeof value === "string" ? value : JSON.stringify(value);
}
