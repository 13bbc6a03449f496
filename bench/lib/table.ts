/** The one results table: every figure beside the bare pass-through's, with the issue's targets. */

export interface Row {
  /** section heading rows have only a title */
  title?: string | undefined;
  metric?: string | undefined;
  unit?: string | undefined;
  mock?: number | undefined;
  passThrough?: number | undefined;
  proxy?: number | undefined;
  /** proxy / pass-through; computed when both are present unless given */
  ratio?: number | undefined;
  target?: string | undefined;
  /** undefined = no target for this row */
  meets?: boolean | undefined;
}

export function fmt(n: number | undefined, unit = ""): string {
  if (n === undefined) return "-";
  if (!Number.isFinite(n)) return "n/a";
  const abs = Math.abs(n);
  let s: string;
  if (Number.isInteger(n) || abs >= 1000) s = Math.round(n).toLocaleString("en-US");
  else if (abs >= 100) s = n.toFixed(0);
  else if (abs >= 10) s = n.toFixed(1);
  else if (abs >= 1) s = n.toFixed(2);
  else s = n.toFixed(3);
  return unit === "" ? s : `${s} ${unit}`;
}

function ratioOf(row: Row): number | undefined {
  if (row.ratio !== undefined) return row.ratio;
  // a ratio of a negative or zero figure (e.g. an "added" latency within noise) means nothing
  if (row.proxy === undefined || row.passThrough === undefined || row.passThrough <= 0 || row.proxy < 0) return undefined;
  return row.proxy / row.passThrough;
}

export function renderTable(rows: Row[]): string {
  const header = ["metric", "mock direct", "pass-through", "proxy", "proxy/pass", "target", ""];
  const body: string[][] = [];
  const titles = new Map<number, string>();
  for (const row of rows) {
    if (row.title !== undefined) {
      titles.set(body.length, row.title);
      continue;
    }
    const ratio = ratioOf(row);
    body.push([
      `  ${row.metric ?? ""}${row.unit !== undefined && row.unit !== "" ? ` (${row.unit})` : ""}`,
      fmt(row.mock),
      fmt(row.passThrough),
      fmt(row.proxy),
      ratio === undefined ? "-" : `${ratio.toFixed(2)}x`,
      row.target ?? "",
      row.meets === undefined ? "" : row.meets ? "ok" : "MISS",
    ]);
  }
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 0 || i >= 5 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)))
      .join("  ")
      .trimEnd();
  const out: string[] = [line(header), widths.map((w) => "-".repeat(w)).join("  ")];
  body.forEach((r, i) => {
    const title = titles.get(i);
    if (title !== undefined) out.push(title);
    out.push(line(r));
  });
  const trailing = titles.get(body.length);
  if (trailing !== undefined) out.push(trailing);
  return out.join("\n");
}
