/**
 * Reads the token usage (and a late error) from an answer while its bytes pass through, without
 * holding any back. Usage comes last: in a JSON body at its end, in a stream in its last events
 * (the chunk before `[DONE]`, `response.completed`, the last `message_delta`); an error after a
 * 200 also ends the stream. So the tap keeps only the last few KB of bytes and reads them once,
 * when the body ends: no per-chunk parsing. Anthropic's streams are the one exception: their
 * input tokens come first, in `message_start`, so for `/messages` the tap also reads the first
 * event (and only it) as it passes. What the found objects mean is usage-shapes.ts's to say.
 */
import type { Usage } from "../domain/request-record.ts";
import { dataPayloads } from "./sse.ts";
import { lateErrorOf, mergedMessagesUsage, usageReaders, type UsageShape } from "./usage-shapes.ts";

export interface TapResult {
  usage?: Usage;
  /** An error event that arrived inside a 200 stream (or a 200 JSON body carrying `error`). */
  lateError?: string;
}

/** A whole JSON answer's tail read, and, when it carries `error`, the answer as parsed (its facts need no second parse). */
export type JsonAnswerTail = TapResult & { errorAnswer?: unknown };

/** What a tail holds before its shape reads it: the last `usage` object as it came. */
interface RawTail {
  usage?: unknown;
  lateError?: string;
  errorAnswer?: unknown;
}

const TAIL_BYTES = 16 * 1024;
/** How much of a stream's end is read first (see `UsageTap.finish`). */
const FIRST_LOOK_BYTES = 4 * 1024;
/** How far into an Anthropic stream `message_start` is looked for (keep-alives may come first). */
const HEAD_BYTES = 8 * 1024;

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
  /** `/messages` only: the first chunks, until `message_start` is read from them (then undefined). */
  private head: Uint8Array[] | undefined;
  private headBytes = 0;
  /** `message_start`'s usage object, as it came. */
  private startUsage: unknown;

  constructor(
    private readonly shape: UsageShape = "chat",
    private readonly captureLimit = 0,
  ) {
    if (shape === "messages") this.head = [];
  }

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
    if (this.head !== undefined) this.readHead(chunk);
    this.chunks.push(chunk);
    this.bytes += chunk.byteLength;
    // Drop whole chunks from the front while the rest still covers the tail.
    while (this.chunks.length > 1 && this.bytes - (this.chunks[0] as Uint8Array).byteLength >= TAIL_BYTES) {
      this.bytes -= (this.chunks.shift() as Uint8Array).byteLength;
    }
  }

  /** Looks for `message_start` in the first chunks only: once found (or HEAD_BYTES in), never again. */
  private readHead(chunk: Uint8Array): void {
    const head = this.head as Uint8Array[];
    head.push(chunk);
    this.headBytes += chunk.byteLength;
    const found = messageStartUsage(joined(head, 0));
    if (found === "wait" && this.headBytes < HEAD_BYTES) return;
    if (found !== "wait") this.startUsage = found;
    this.head = undefined;
  }

  /**
   * Reads the kept tail. The last few KB (whole chunks) are looked at first: that is where the
   * usage event and a late error are, and hundreds of streams may end at once, so copying 16 KB
   * for each shows. Only when they hold neither is the whole tail read.
   */
  finish(isEventStream: boolean): TapResult {
    const chunks = this.chunks;
    this.chunks = [];
    let raw: RawTail = {};
    if (chunks.length > 0) {
      let from = chunks.length - 1;
      for (let bytes = (chunks[from] as Uint8Array).byteLength; from > 0 && bytes < FIRST_LOOK_BYTES; ) bytes += (chunks[--from] as Uint8Array).byteLength;
      raw = readRawTail(joined(chunks, from), isEventStream, this.shape);
      if (from > 0 && raw.usage === undefined && raw.lateError === undefined) raw = readRawTail(joined(chunks, 0), isEventStream, this.shape);
    }
    return shaped(this.shape, raw, isEventStream ? this.startUsage : undefined);
  }
}

/** A raw tail read by its shape (for `/messages` streams, over `message_start`'s usage). */
function shaped(shape: UsageShape, raw: RawTail, startUsage: unknown): JsonAnswerTail {
  const result: JsonAnswerTail = {};
  const value = shape === "messages" && startUsage !== undefined ? mergedMessagesUsage(startUsage, raw.usage) : raw.usage;
  const usage = value === undefined ? undefined : usageReaders[shape](value);
  if (usage !== undefined) result.usage = usage;
  if (raw.lateError !== undefined) result.lateError = raw.lateError;
  if (raw.errorAnswer !== undefined) result.errorAnswer = raw.errorAnswer;
  return result;
}

/** Usage and late errors from the end of a whole answer (or its last bytes); a `/messages` stream's from its start too. */
export function readAnswerTail(bytes: Uint8Array, isEventStream: boolean, shape: UsageShape = "chat"): TapResult {
  const start = shape === "messages" && isEventStream ? messageStartUsage(bytes.subarray(0, HEAD_BYTES)) : undefined;
  return shaped(shape, readRawTail(bytes, isEventStream, shape), start === "wait" ? undefined : start);
}

/** A whole JSON answer (as `readAnswerTail`), keeping the parsed answer when it carries an error. */
export function readJsonAnswerTail(bytes: Uint8Array, shape: UsageShape = "chat"): JsonAnswerTail {
  return shaped(shape, readJsonTail(bytes, tailStart(bytes), shape, true), undefined);
}

const tailStart = (bytes: Uint8Array) => (bytes.byteLength > TAIL_BYTES ? bytes.byteLength - TAIL_BYTES : 0);

function readRawTail(bytes: Uint8Array, isEventStream: boolean, shape: UsageShape): RawTail {
  return isEventStream ? readStreamTail(bytes, tailStart(bytes), shape) : readJsonTail(bytes, tailStart(bytes), shape);
}

/** The last place `key` starts at or after `from`, or -1: a search of the tail only, not of a whole large answer. */
function lastIndexIn(buffer: Buffer, key: Uint8Array, from: number): number {
  const at = buffer.subarray(from).lastIndexOf(key);
  return at === -1 ? -1 : from + at;
}

const decoder = new TextDecoder();
const USAGE_KEY = Buffer.from('"usage"');
const ERROR_KEY = Buffer.from('"error"');
const MESSAGE_START = Buffer.from('"message_start"');
const NULL = Buffer.from("null");

const asBuffer = (bytes: Uint8Array) => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);

/**
 * True when an `"error"` in the bytes from `from` may be an error: every answer of the Responses
 * API says `"error":null` while all is well, and that alone must not cost a parse of the tail.
 */
function mentionsError(buffer: Buffer, from: number): boolean {
  for (let at = buffer.indexOf(ERROR_KEY, from); at !== -1; at = buffer.indexOf(ERROR_KEY, at + ERROR_KEY.byteLength)) {
    let next = skipSpaces(buffer, at + ERROR_KEY.byteLength);
    if (buffer[next] !== 0x3a /* : */) return true; // a value (`"type":"error"`), not a key
    next = skipSpaces(buffer, next + 1);
    if (!(buffer.subarray(next, next + NULL.byteLength).equals(NULL))) return true;
  }
  return false;
}

function skipSpaces(buffer: Buffer, at: number): number {
  while (at < buffer.byteLength && (buffer[at] === 0x20 || buffer[at] === 0x09)) at++;
  return at;
}

/**
 * `message_start`'s usage object from the first bytes of an Anthropic stream; "wait" while its
 * line is not complete yet; undefined when it has none.
 */
function messageStartUsage(bytes: Uint8Array): unknown {
  const buffer = asBuffer(bytes);
  const at = buffer.indexOf(MESSAGE_START);
  const lineEnd = at === -1 ? -1 : buffer.indexOf(0x0a, at);
  if (lineEnd === -1) return "wait";
  const usageAt = buffer.indexOf(USAGE_KEY, at);
  if (usageAt === -1 || usageAt > lineEnd) return undefined;
  return objectAfterKey(decoder.decode(bytes.subarray(usageAt, lineEnd)));
}

/**
 * The end of a stream, searched as bytes (natively): only the text from the last `"usage"` to the
 * end of its line is decoded, and only its object parsed (a `response.completed` line repeats the
 * whole answer, far larger than the tail), unless an error may be there too (rare), when every
 * event line of the tail that mentions one is read. Thousands of streams can end in the same
 * millisecond; this keeps their bookkeeping from holding up the others' chunks.
 */
function readStreamTail(bytes: Uint8Array, from: number, shape: UsageShape): RawTail {
  const buffer = asBuffer(bytes);
  const result: RawTail = {};
  const usage = lastUsageObject(buffer, from, shape, true);
  if (usage !== undefined) result.usage = usage;
  if (mentionsError(buffer, from)) {
    const lateError = lastErrorIn(decoder.decode(bytes.subarray(from)));
    if (lateError !== undefined) result.lateError = lateError;
  }
  return result;
}

/** The last error among the `data:` lines of SSE text that mention one. */
function lastErrorIn(tail: string): string | undefined {
  let found: string | undefined;
  for (const data of dataPayloads(tail)) {
    if (!data.includes('"error"')) continue;
    let event: unknown;
    try {
      event = JSON.parse(data);
    } catch {
      continue; // the first line of the tail may be cut; a broken line is not ours to judge
    }
    found = lateErrorOf(event) ?? found;
  }
  return found;
}

/**
 * A whole JSON answer, searched as bytes (natively) for its last `"usage"`; only the text from
 * there on is decoded and parsed, not the answer: `usage` is the last thing in the body.
 */
function readJsonTail(bytes: Uint8Array, from: number, shape: UsageShape, keepErrorAnswer = false): RawTail {
  const buffer = asBuffer(bytes);
  const result: RawTail = {};
  const usage = lastUsageObject(buffer, from, shape, false);
  if (usage !== undefined) result.usage = usage;
  // A 200 that carries an error (OpenRouter does this): rare, so the tail is parsed only when the
  // word is there as more than `"error":null`.
  if (mentionsError(buffer, from)) {
    try {
      const parsed: unknown = JSON.parse(decoder.decode(bytes.subarray(from)));
      const error = lateErrorOf(parsed);
      if (error !== undefined) {
        result.lateError = error;
        if (keepErrorAnswer && from === 0) result.errorAnswer = parsed; // the whole answer, not a piece of it
      }
    } catch {
      // larger than the tail, or not JSON: nothing to say
    }
  }
  return result;
}

/** How many `"usage"` keys, from the last one back, are tried before a tail is said to have none. */
const USAGE_TRIES = 4;

/**
 * The last `usage` object from `from` on that reads as usage of `shape`, as it came. Usually the
 * last `"usage"` key is it; the few before it are tried when it is not (`"usage":null` in a later
 * chunk, a `metadata` field a user named `usage`). In a stream only the rest of its line is decoded.
 */
function lastUsageObject(buffer: Buffer, from: number, shape: UsageShape, lineBound: boolean): unknown {
  let end = buffer.byteLength;
  for (let tries = 0; tries < USAGE_TRIES; tries++) {
    const at = lastIndexIn(buffer.subarray(0, end), USAGE_KEY, from);
    if (at === -1) return undefined;
    const lineEnd = lineBound ? buffer.indexOf(0x0a, at) : -1;
    const value = objectAfterKey(decoder.decode(buffer.subarray(at, lineEnd === -1 ? buffer.byteLength : lineEnd)));
    if (value !== undefined && usageReaders[shape](value) !== undefined) return value;
    end = at + USAGE_KEY.byteLength - 1; // the next search ends before this key
  }
  return undefined;
}

/** The JSON object that is the value of the key `text` starts with (`"usage": {…}`), parsed; undefined for anything else (`null`). */
function objectAfterKey(text: string): unknown {
  let open = text.indexOf(":");
  if (open === -1) return undefined;
  do open++;
  while (text.charCodeAt(open) === 32 || text.charCodeAt(open) === 9);
  if (text.charCodeAt(open) !== 123 /* { */) return undefined;
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
