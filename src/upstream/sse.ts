/**
 * The one reader of server-sent events (https://html.spec.whatwg.org/multipage/server-sent-events.html)
 * in the proxy: the commit hold reads the first events of a stream as they arrive, the usage tap
 * the last ones when it ends. Only `data:` payloads matter to either: comments (OpenRouter's
 * `: OPENROUTER PROCESSING` keep-alives), blank lines and other fields are skipped, never parsed.
 */

/** The payload of one `data:` line, trimmed; undefined for every other line. */
export function dataOf(line: string): string | undefined {
  return line.startsWith("data:") ? line.slice(5).trim() : undefined;
}

/** Every `data:` payload in a piece of event-stream text, in order (a cut last line included). */
export function dataPayloads(text: string): string[] {
  const payloads: string[] = [];
  for (const line of text.split("\n")) {
    const data = dataOf(line);
    if (data !== undefined) payloads.push(data);
  }
  return payloads;
}

/** Reads a stream chunk by chunk: a line cut between two chunks is completed by the next one. */
export class SseScanner {
  private readonly decoder = new TextDecoder();
  private partial = "";

  /** The `data:` payloads of the lines these bytes complete. */
  push(bytes: Uint8Array): string[] {
    const lines = (this.partial + this.decoder.decode(bytes, { stream: true })).split("\n");
    this.partial = lines.pop() ?? "";
    const payloads: string[] = [];
    for (const line of lines) {
      const data = dataOf(line.trimEnd());
      if (data !== undefined) payloads.push(data);
    }
    return payloads;
  }
}
