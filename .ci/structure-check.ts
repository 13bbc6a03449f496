/**
 * The layout's two rules, checked in CI (`bun run .ci/structure-check.ts`):
 * - no import cycles in src/, type imports and re-exports included, between files and between
 *   folders (src/keys importing src/upstream while src/upstream imports src/keys is a cycle too:
 *   it means neither folder can be read, or moved, without the other);
 * - no file in src/ over MAX_LINES lines (a file past that is two concepts).
 * Prints one line per finding and a summary line last; exits 1 on any finding.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";

const MAX_LINES = 400;
const root = join(import.meta.dir, "..");
const src = join(root, "src");

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith(".ts") && !entry.name.endsWith(".d.ts") ? [path] : [];
  });
}

/** `import … from "./x.ts"`, `import type …`, `export … from`, `import "./x.ts"`, `import("./x.ts")`. */
const importPattern = /(?:^|\n)\s*(?:import|export)\b[^'"]*?\bfrom\s*["'](\.[^"']+)["']|(?:^|\n)\s*import\s*["'](\.[^"']+)["']|\bimport\(\s*["'](\.[^"']+)["']\s*\)/g;

export function importsOf(file: string, text: string, known: ReadonlySet<string>): string[] {
  const found: string[] = [];
  for (const match of text.matchAll(importPattern)) {
    const spec = match[1] ?? match[2] ?? match[3];
    if (spec === undefined) continue;
    const target = normalize(join(dirname(file), spec));
    const resolved = [target, `${target}.ts`, join(target, "index.ts")].find((candidate) => known.has(candidate));
    if (resolved !== undefined) found.push(resolved);
  }
  return found;
}

/** Strongly connected components with more than one member (or a self-import): the cycles. */
export function cyclesOf(graph: ReadonlyMap<string, readonly string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (node: string): void => {
    index.set(node, counter);
    low.set(node, counter);
    counter += 1;
    stack.push(node);
    onStack.add(node);
    for (const next of graph.get(node) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node)!, low.get(next)!));
      } else if (onStack.has(next)) {
        low.set(node, Math.min(low.get(node)!, index.get(next)!));
      }
    }
    if (low.get(node) !== index.get(node)) return;
    const component: string[] = [];
    for (let member = stack.pop(); member !== undefined; member = stack.pop()) {
      onStack.delete(member);
      component.push(member);
      if (member === node) break;
    }
    if (component.length > 1 || (graph.get(node) ?? []).includes(node)) cycles.push(component.sort());
  };
  for (const node of graph.keys()) if (!index.has(node)) visit(node);
  return cycles;
}

/** src/keys/pool.ts → src/keys; a file directly in src/ is its own unit. */
function folderOf(file: string): string {
  const parts = file.split("/");
  return parts.length > 2 ? parts.slice(0, 2).join("/") : file;
}

if (import.meta.main) {
  const files = sourceFiles(src).map((path) => relative(root, path));
  const known = new Set(files);
  const fileGraph = new Map<string, string[]>();
  const folderGraph = new Map<string, string[]>();
  const findings: string[] = [];
  for (const file of files) {
    const text = readFileSync(join(root, file), "utf8");
    const lines = text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
    if (lines > MAX_LINES) findings.push(`over ${MAX_LINES} lines: ${file} (${lines})`);
    // The facts the code relies on are in the repository (docs/), not in notes beside a checkout.
    if (text.includes("../shared/")) findings.push(`cites ../shared/ (outside the repository; point to docs/ instead): ${file}`);
    const imports = importsOf(file, text, known);
    fileGraph.set(file, imports);
    const folder = folderOf(file);
    const crossings = imports.map(folderOf).filter((target) => target !== folder);
    folderGraph.set(folder, [...new Set([...(folderGraph.get(folder) ?? []), ...crossings])]);
  }
  for (const cycle of cyclesOf(fileGraph)) findings.push(`import cycle: ${cycle.join(" <-> ")}`);
  for (const cycle of cyclesOf(folderGraph)) findings.push(`folders import each other: ${cycle.join(" <-> ")}`);
  for (const finding of findings) console.log(finding);
  console.log(`structure: ${files.length} files in src/, ${findings.length} finding(s)`);
  process.exit(findings.length > 0 ? 1 : 0);
}
