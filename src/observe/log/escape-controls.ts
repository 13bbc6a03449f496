/**
 * Control characters escaped in every log line, so that no client-supplied value (a model name,
 * a path, a header, an upstream message quoting them) can start a forged line with CR or LF, or
 * drive the terminal with ESC sequences. C0 (U+0000–U+001F), DEL, C1 (U+0080–U+009F) and the
 * Unicode line and paragraph separators are written as `\n`, `\r`, `\t` or `\uXXXX`.
 *
 * Each line is tested once with a compiled pattern; only a line that holds one is rewritten.
 */

/** In a human line: any control character, and a newline anywhere but at the very end. */
const humanUnsafe = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029]|\n(?!$)/;
const humanUnsafeAll = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/g;
/** In a JSON line: `JSON.stringify` already escapes C0, so DEL, C1 and the separators remain. */
const jsonUnsafe = /[\u007f-\u009f\u2028\u2029]/;
const jsonUnsafeAll = /[\u007f-\u009f\u2028\u2029]/g;

const named: Record<string, string> = { "\n": "\\n", "\r": "\\r", "\t": "\\t" };
const escapeOne = (char: string): string => named[char] ?? `\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`;

/** A human log line (stdout/stderr), its one final newline kept. */
export function escapeHumanLine(line: string): string {
  if (!humanUnsafe.test(line)) return line;
  const ends = line.endsWith("\n");
  const escaped = (ends ? line.slice(0, -1) : line).replace(humanUnsafeAll, escapeOne);
  return ends ? `${escaped}\n` : escaped;
}

/** A JSON log line (made by JSON.stringify); stays valid JSON with the same values. */
export function escapeJsonLine(line: string): string {
  return jsonUnsafe.test(line) ? line.replace(jsonUnsafeAll, escapeOne) : line;
}
