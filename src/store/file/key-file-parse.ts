/**
 * The keys file's text to a document, or one line saying what is wrong and where: the line and
 * column of a JSON syntax error, the field of a shape error (`keys[1].key`). Never a key.
 *
 * `JSON.parse` in JavaScriptCore names a syntax problem but not its place: a scanner finds it,
 * run only after `JSON.parse` has failed, so its speed does not matter.
 */
import type { z } from "zod";
import type { StoreLoad } from "../ports.ts";
import { KeyFileSchema, recordsFromFile } from "../../keys/schema.ts";

export function parseKeyFile(text: string, name: string, now: number): StoreLoad {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    const where = findJsonSyntaxError(text);
    const detail = where
      ? `line ${where.line}, column ${where.column}: ${where.message}`
      : error instanceof Error
        ? error.message
        : String(error);
    return { ok: false, kind: "invalid", message: `${name} is not valid JSON (${detail})` };
  }
  const parsed = KeyFileSchema.safeParse(json);
  if (!parsed.success) {
    const issue = deepestIssue(parsed.error.issues);
    const path = issue?.path.length ? issue.path.map((part) => (typeof part === "number" ? `[${part}]` : `.${String(part)}`)).join("") : "";
    const expected = 'expected {"keys":[{"key":"sk-or-v1-…","label":"…"}]} or ["sk-or-v1-…"]';
    return {
      ok: false,
      kind: "invalid",
      message: `${name} has the wrong shape${path ? ` at ${path.replace(/^\./, "")}` : ""}: ${issue?.message ?? "invalid"} (${expected})`,
    };
  }
  return { ok: true, doc: recordsFromFile(parsed.data, now), exists: true };
}

type ShapeIssue = { path: PropertyKey[]; message: string };

/**
 * The issue that says most precisely what is wrong. The file is a union (object form or bare
 * list) of unions (entry or key string), and zod reports a failed union as one "Invalid input" at
 * its root with each branch's issues inside, their paths relative to it: the deepest of those
 * names the field a person has to fix (`keys[1].key`), not just the file.
 */
function deepestIssue(issues: readonly z.core.$ZodIssue[], prefix: PropertyKey[] = []): ShapeIssue | undefined {
  let best: ShapeIssue | undefined;
  for (const issue of issues) {
    const path = [...prefix, ...issue.path];
    const candidate =
      issue.code === "invalid_union" && issue.errors.length > 0
        ? deepestIssue(issue.errors.flat(), path)
        : { path, message: issue.message };
    if (candidate && (!best || candidate.path.length > best.path.length)) best = candidate;
  }
  return best;
}

class Scan {
  index = 0;
  constructor(readonly text: string) {}

  fail(message: string): never {
    throw new ScanError(this.index, message);
  }

  whitespace(): void {
    while (this.index < this.text.length && " \t\r\n".includes(this.text[this.index] ?? "")) this.index++;
  }

  expect(char: string): void {
    if (this.text[this.index] !== char) this.fail(`expected '${char}' but found ${this.describe()}`);
    this.index++;
  }

  describe(): string {
    return this.index >= this.text.length ? "the end of the file" : `'${this.text[this.index]}'`;
  }

  value(): void {
    this.whitespace();
    const char = this.text[this.index];
    if (char === "{") return this.object();
    if (char === "[") return this.array();
    if (char === '"') return this.string();
    if (char !== undefined && /[-0-9]/.test(char)) return this.number();
    for (const word of ["true", "false", "null"]) {
      if (this.text.startsWith(word, this.index)) {
        this.index += word.length;
        return;
      }
    }
    this.fail(this.index >= this.text.length ? "the file ends where a value should be" : `unexpected ${this.describe()}`);
  }

  object(): void {
    this.list("{", "}", () => {
      if (this.text[this.index] !== '"') this.fail(`expected a quoted property name but found ${this.describe()}`);
      this.string();
      this.whitespace();
      this.expect(":");
      this.value();
    });
  }

  array(): void {
    this.list("[", "]", () => this.value());
  }

  /** `open` item, item, … `close`: an object's members or an array's values. */
  list(open: string, close: string, item: () => void): void {
    this.expect(open);
    this.whitespace();
    if (this.text[this.index] === close) {
      this.index++;
      return;
    }
    for (;;) {
      this.whitespace();
      item();
      this.whitespace();
      if (this.text[this.index] === ",") this.index++;
      else if (this.text[this.index] === close) {
        this.index++;
        return;
      } else this.fail(`expected ',' or '${close}' but found ${this.describe()}`);
    }
  }

  string(): void {
    this.expect('"');
    while (this.index < this.text.length) {
      const char = this.text[this.index];
      if (char === '"') {
        this.index++;
        return;
      }
      if (char === "\\") this.index++;
      else if (char !== undefined && char < " ") this.fail("control character inside a string");
      this.index++;
    }
    this.fail("unterminated string");
  }

  number(): void {
    const match = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(this.text.slice(this.index));
    if (!match) this.fail(`invalid number`);
    this.index += match[0].length;
  }
}

class ScanError extends Error {
  constructor(
    readonly index: number,
    message: string,
  ) {
    super(message);
  }
}

/** The first syntax error in `text`, or undefined when the scanner finds none. */
function findJsonSyntaxError(text: string): { line: number; column: number; message: string } | undefined {
  const scan = new Scan(text);
  try {
    scan.value();
    scan.whitespace();
    if (scan.index < text.length) scan.fail(`unexpected ${scan.describe()} after the end of the JSON value`);
    return undefined;
  } catch (error) {
    if (!(error instanceof ScanError)) throw error;
    const before = text.slice(0, error.index);
    const line = before.split("\n").length;
    const column = error.index - before.lastIndexOf("\n");
    return { line, column, message: error.message };
  }
}
