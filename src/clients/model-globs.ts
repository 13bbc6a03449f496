/**
 * `--models openai/*,*:free`: which models a client may ask for. `*` stands for any run of
 * characters (slashes included); everything else matches itself exactly, case included, so a
 * pattern never lets through a model name it does not literally spell.
 */

export type ModelMatcher = (model: string) => boolean;

/** The patterns of a comma-separated list, trimmed, empty ones dropped; an error names the bad one. */
export function parseModelPatterns(list: string): { ok: true; patterns: string[] } | { ok: false; message: string } {
  const patterns = list
    .split(",")
    .map((pattern) => pattern.trim())
    .filter((pattern) => pattern !== "");
  if (patterns.length === 0) return { ok: false, message: "models: give at least one pattern, e.g. openai/*,*:free" };
  for (const pattern of patterns) {
    if (/\s/.test(pattern)) return { ok: false, message: `models: ${JSON.stringify(pattern)} contains a space; separate patterns with commas` };
    if (pattern.length > 200) return { ok: false, message: "models: a pattern must be at most 200 characters" };
  }
  return { ok: true, patterns };
}

/** One regular expression for the whole list, built once when the client is loaded. */
export function compileModelPatterns(patterns: readonly string[]): ModelMatcher {
  const alternatives = patterns.map((pattern) => pattern.split("*").map(escapeRegExp).join(".*"));
  const regex = new RegExp(`^(?:${alternatives.join("|")})$`, "s");
  return (model) => regex.test(model);
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
}

/**
 * The names one model string stands for, each of which a client's patterns must allow: a preset
 * can choose the model itself (https://openrouter.ai/docs/guides/features/presets), so
 * `openai/gpt-4o@preset/slug` is both `openai/gpt-4o` and `@preset/slug`, and a preset is let
 * through only by a pattern that spells it (`@preset/slug`, `@preset/*`).
 */
export function modelNamesIn(model: string): string[] {
  const at = model.indexOf("@preset/");
  return at <= 0 ? [model] : [model.slice(0, at), model.slice(at)];
}
