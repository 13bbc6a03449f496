/** What a command may touch of the terminal: two output lines, stdin, and whether it is a TTY. */
import type { Config } from "../config.ts";
import type { KeyStore } from "../store/ports.ts";

export interface CommandIO {
  out: (line: string) => void;
  err: (line: string) => void;
  /** All of standard input as text (for `add-key < keys.txt`). */
  readStdin?: () => Promise<string>;
  /** Asks on the terminal without echoing what is typed; undefined when stdin is not a terminal. */
  promptHidden?: (question: string) => Promise<string>;
}

/** What a subcommand runs with; `store` is Redis's when REDIS_URL is set, else KEYS_FILE. */
export interface CommandContext {
  config: Config;
  io: CommandIO;
  store?: KeyStore | undefined;
  now?: () => number;
  fetch?: typeof fetch;
}

/** Columns padded to their widest cell, two spaces apart. */
export function printTable(io: CommandIO, header: readonly string[], rows: string[][]): void {
  const widths = header.map((title, column) => Math.max(title.length, ...rows.map((row) => (row[column] ?? "").length)));
  const line = (cells: readonly string[]) => cells.map((cell, column) => cell.padEnd(widths[column] ?? 0)).join("  ").trimEnd();
  io.out(line(header));
  for (const row of rows) io.out(line(row));
}

export function processIO(): CommandIO {
  return {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    readStdin: () => new Response(Bun.stdin.stream()).text(),
    ...(process.stdin.isTTY ? { promptHidden } : {}),
  };
}

/** Raw-mode read of one line with no echo: the key never shows on screen or in scrollback. */
function promptHidden(question: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const stdin = process.stdin;
    // Raw mode (no echo) goes on before the question shows: a key typed or pasted the instant the
    // prompt appears would otherwise still be echoed by the terminal's line discipline.
    stdin.setRawMode(true);
    process.stderr.write(question);
    stdin.resume();
    let typed = "";
    const finish = (error?: Error) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off("data", onData);
      process.stderr.write("\n");
      if (error) reject(error);
      else resolve(typed);
    };
    const onData = (chunk: Buffer) => {
      for (const char of chunk.toString("utf8")) {
        if (char === "\r" || char === "\n") return finish();
        if (char === "\u0003") return finish(new Error("cancelled")); // Ctrl-C
        if (char === "\u007f" || char === "\b") typed = typed.slice(0, -1);
        else if (char >= " ") typed += char;
      }
    };
    stdin.on("data", onData);
  });
}
