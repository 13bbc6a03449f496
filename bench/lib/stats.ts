/** Small statistics helpers shared by the benchmark scripts. */

export interface Percentiles {
  count: number;
  min: number;
  mean: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentile of an ascending-sorted array (p in 0..100). */
export function percentileSorted(sorted: ArrayLike<number>, p: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const rank = Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1));
  return sorted[rank] ?? Number.NaN;
}

export function summarize(values: ArrayLike<number>): Percentiles {
  const sorted = Float64Array.from(values).sort();
  const n = sorted.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i] ?? 0;
  return {
    count: n,
    min: n > 0 ? (sorted[0] ?? Number.NaN) : Number.NaN,
    mean: n > 0 ? sum / n : Number.NaN,
    p50: percentileSorted(sorted, 50),
    p90: percentileSorted(sorted, 90),
    p99: percentileSorted(sorted, 99),
    max: n > 0 ? (sorted[n - 1] ?? Number.NaN) : Number.NaN,
  };
}

export function median(values: readonly number[]): number {
  return percentileSorted(Float64Array.from(values).sort(), 50);
}
