/**
 * Finds where a JSON text goes wrong, as line and column, for a message a person can act on.
 * `JSON.parse` in JavaScriptCore names the problem but not its place; this scanner is only run
 * after `JSON.parse` has already failed, so its speed does not matter.
 */

export interface JsonSyntaxError {
  line: number;
  column: number;
  message: string;
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
    this.expect("{");
    this.whitespace();
    if (this.text[this.index] === "}") {
      this.index++;
      return;
    }
    for (;;) {
      this.whitespace();
      if (this.text[this.index] !== '"') this.fail(`expected a quoted property name but found ${this.describe()}`);
      this.string();
      this.whitespace();
      this.expect(":");
      this.value();
      this.whitespace();
      if (this.text[this.index] === ",") {
        this.index++;
        continue;
      }
      if (this.text[this.index] === "}") {
        this.index++;
        return;
      }
      this.fail(`expected ',' or '}' but found ${this.describe()}`);
    }
  }

  array(): void {
    this.expect("[");
    this.whitespace();
    if (this.text[this.index] === "]") {
      this.index++;
      return;
    }
    for (;;) {
      this.value();
      this.whitespace();
      if (this.text[this.index] === ",") {
        this.index++;
        continue;
      }
      if (this.text[this.index] === "]") {
        this.index++;
        return;
      }
      this.fail(`expected ',' or ']' but found ${this.describe()}`);
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
export function findJsonSyntaxError(text: string): JsonSyntaxError | undefined {
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
