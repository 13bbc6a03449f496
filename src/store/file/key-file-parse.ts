/**
 * The keys file's text to a document, or one line saying what is wrong and where: the line and
 * column of a JSON syntax error, the field of a shape error (`keys[1].key`). Never a key.
 */
import type { z } from "zod";
import { findJsonSyntaxError } from "./json-syntax.ts";
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
