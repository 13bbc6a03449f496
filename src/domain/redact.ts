/**
 * Secrets never leave the process in clear. An upstream may echo back the `Authorization` it
 * received (in an error body, a header, an in-band stream error); OPENROUTER_BASE_URL may carry
 * `user:pass@`. Everything the proxy relays, stores or prints passes through one of these first.
 * The masked form is the one people already see in `list-keys` (keys/key-identity.ts).
 */
import { maskKey } from "./key-identity.ts";

/** `text` with every occurrence of `secret` replaced by its masked form. */
export function redactSecret(text: string, secret: string): string {
  return secret !== "" && text.includes(secret) ? text.replaceAll(secret, maskKey(secret)) : text;
}

/** Header values that carry `secret` get its masked form; changes `headers` in place (rare). */
export function redactHeaders(headers: Headers, secret: string): void {
  let found: string[] | undefined;
  headers.forEach((value, name) => {
    if (value.includes(secret)) (found ??= []).push(name);
  });
  if (!found) return;
  // Header values are ASCII: the mask's ellipsis is written as three dots there.
  const masked = maskKey(secret).replace("…", "...");
  for (const name of found) headers.set(name, (headers.get(name) ?? "").replaceAll(secret, masked));
}

/** A base URL for messages: credentials shown as `***` (`http://***@host:port/api/v1`). */
export function displayUrl(raw: string): string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return raw.replace(/([a-z][a-z0-9+.-]*:\/\/)[^/?#\s]*@/gi, "$1***@"); // not a URL (a config error): still no credentials
  }
  if (url.username === "" && url.password === "") return raw;
  return `${url.protocol}//***@${url.host}${url.pathname === "/" && !raw.endsWith("/") ? "" : url.pathname}${url.search}`;
}

/**
 * A redactor for messages that may quote a URL with credentials (Bun's fetch errors name the
 * URL): the `user:pass@` part and the password alone become `***`.
 */
export function urlCredentialsRedactor(raw: string): (text: string) => string {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return (text) => text;
  }
  if (url.username === "" && url.password === "") return (text) => text;
  const needles = new Set<string>();
  for (const user of [url.username, safeDecode(url.username)]) {
    for (const pass of [url.password, safeDecode(url.password)]) needles.add(pass === "" ? `${user}@` : `${user}:${pass}@`);
  }
  // A password on its own (an error that quotes it without the user): only when it is long
  // enough not to match ordinary words.
  if (url.password.length >= 4) {
    needles.add(url.password);
    needles.add(safeDecode(url.password));
  }
  const ordered = [...needles].sort((a, b) => b.length - a.length);
  return (text) => {
    let out = text;
    for (const needle of ordered) if (out.includes(needle)) out = out.replaceAll(needle, needle.endsWith("@") ? "***@" : "***");
    return out;
  };
}

function safeDecode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

const encoder = new TextEncoder();

/** `bytes` with every `secret` replaced by `masked`; the same object when there is none. */
function replaceAllBytes(bytes: Uint8Array, secret: Buffer, masked: Buffer): Uint8Array {
  const view = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let at = view.indexOf(secret);
  if (at === -1) return bytes;
  const parts: Buffer[] = [];
  let from = 0;
  for (; at !== -1; at = view.indexOf(secret, from)) {
    parts.push(view.subarray(from, at), masked);
    from = at + secret.byteLength;
  }
  parts.push(view.subarray(from));
  return Buffer.concat(parts);
}

interface Needle {
  secret: Buffer;
  masked: Buffer;
}

/** The encoded forms per secret, made once: the pool holds a handful of keys. */
const needles = new Map<string, Needle>();

function needleOf(secret: string): Needle {
  let needle = needles.get(secret);
  if (!needle) {
    if (needles.size >= 1024) needles.clear(); // keys checked once by the CLI or admin API: no growth
    needle = { secret: Buffer.from(encoder.encode(secret)), masked: Buffer.from(encoder.encode(maskKey(secret))) };
    needles.set(secret, needle);
  }
  return needle;
}

/** A whole body with `secret` masked (the same object when it holds none). */
export function redactBytes(bytes: Uint8Array, secret: string): Uint8Array {
  if (secret === "") return bytes;
  const { secret: needle, masked } = needleOf(secret);
  return replaceAllBytes(bytes, needle, masked);
}

/**
 * Replaces a secret in a byte stream, whatever the chunk boundaries. A chunk is passed on as the
 * same object when it holds no part of the secret (the common case: one native search per chunk).
 * Only bytes at a chunk's end that could be the start of the secret are held back until the next
 * chunk says whether they are: never for an SSE event (they end in a blank line), and at most the
 * secret's length minus one.
 */
export class SecretScrubber {
  private readonly secret: Buffer;
  private readonly masked: Buffer;
  private held: Buffer | undefined;

  constructor(secret: string) {
    ({ secret: this.secret, masked: this.masked } = needleOf(secret));
  }

  /** The bytes to pass on for `chunk` (possibly empty while a possible secret start is held). */
  push(chunk: Uint8Array): Uint8Array {
    let bytes = this.held ? Buffer.concat([this.held, chunk]) : chunk;
    this.held = undefined;
    bytes = replaceAllBytes(bytes, this.secret, this.masked);
    const keep = this.partialAtEnd(bytes);
    if (keep === 0) return bytes;
    this.held = Buffer.from(bytes.subarray(bytes.byteLength - keep));
    return bytes.subarray(0, bytes.byteLength - keep);
  }

  /** What is still held when the stream ends (a secret's start that never completed). */
  flush(): Uint8Array | undefined {
    const rest = this.held;
    this.held = undefined;
    return rest;
  }

  /** The length of the longest end of `bytes` that is a proper start of the secret. */
  private partialAtEnd(bytes: Uint8Array): number {
    const first = this.secret[0];
    const longest = Math.min(this.secret.byteLength - 1, bytes.byteLength);
    for (let length = longest; length > 0; length--) {
      const start = bytes.byteLength - length;
      if (bytes[start] !== first) continue;
      let matches = true;
      for (let index = 1; index < length; index++) {
        if (bytes[start + index] !== this.secret[index]) {
          matches = false;
          break;
        }
      }
      if (matches) return length;
    }
    return 0;
  }
}

/** One read of a body: a chunk, or the end. */
export type ReadResult = Awaited<ReturnType<ReadableStreamDefaultReader<Uint8Array>["read"]>>;

/**
 * A body reader whose chunks have the secret replaced: every consumer of an upstream body (the
 * commit hold, the relay, the bounded reads of answers and errors) reads through one of these.
 */
export class ScrubbedReader {
  private readonly scrubber: SecretScrubber;
  private finished = false;

  constructor(
    private readonly inner: ChunkReader,
    secret: string,
  ) {
    this.scrubber = new SecretScrubber(secret);
  }

  async read(): Promise<ReadResult> {
    for (;;) {
      if (this.finished) return { done: true, value: undefined };
      const result = await this.inner.read();
      if (result.done) {
        this.finished = true;
        const rest = this.scrubber.flush();
        return rest ? { done: false, value: rest } : { done: true, value: undefined };
      }
      const value = this.scrubber.push(result.value);
      if (value.byteLength > 0) return { done: false, value };
    }
  }

  cancel(reason?: unknown): Promise<void> {
    return this.inner.cancel(reason);
  }
}

/** The reading side that the relay and the commit hold need: `read` and `cancel`. */
export interface ChunkReader {
  read(): Promise<ReadResult>;
  cancel(reason?: unknown): Promise<void>;
}
