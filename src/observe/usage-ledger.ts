/**
 * Who used what: totals by model and by key in one-minute buckets (kept 8 days), and the last
 * requests, in memory. It answers `GET /admin/usage?since=…` and feeds the status page.
 */
import type { RequestRecord } from "../domain/request-record.ts";

export interface Totals {
  requests: number;
  errors: number;
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  cost: number;
}

export interface UsageReport {
  since: string;
  until: string;
  totals: Totals;
  byModel: Record<string, Totals>;
  byKey: Record<string, Totals & { successes: number }>;
  /** By client key name; requests made without a client key are not in it. */
  byClient: Record<string, Totals>;
}

export interface RecentRequest {
  time: string;
  requestId: string;
  method: string;
  path: string;
  model: string | null;
  stream: boolean;
  status: number;
  keyId: string | null;
  /** OpenRouter's generation id (X-Generation-Id or the answer's `id`): look the cost up with it later. */
  generationId: string | null;
  /** The client key's name, when client keys are in use. */
  client: string | null;
  attempts: number;
  durationMs: number;
  totalTokens: number | null;
  error: string | null;
}

const MINUTE = 60_000;
const KEEP_MS = 8 * 86_400_000;
const emptyTotals = (): Totals => ({ requests: 0, errors: 0, promptTokens: 0, completionTokens: 0, totalTokens: 0, cost: 0 });

interface Bucket {
  byModel: Map<string, Totals>;
  byClient: Map<string, Totals>;
  byKey: Map<string, Totals & { successes: number }>;
}

export interface UsageLedger {
  record(request: RequestRecord): void;
  report(since: number, now?: number): UsageReport;
  recent(limit?: number): RecentRequest[];
}

export function createUsageLedger({ now = Date.now, recentSize = 100 }: { now?: () => number; recentSize?: number } = {}): UsageLedger {
  const buckets = new Map<number, Bucket>();
  /** The last `recentSize` records, oldest overwritten first; `recentNext` is where the next one goes. */
  const recentRing: RequestRecord[] = [];
  let recentNext = 0;

  const add = (totals: Totals, request: RequestRecord) => {
    totals.requests++;
    if (request.status >= 400 || request.error) totals.errors++;
    if (request.usage) {
      totals.promptTokens += request.usage.promptTokens;
      totals.completionTokens += request.usage.completionTokens;
      totals.totalTokens += request.usage.totalTokens;
      totals.cost += request.usage.cost ?? 0;
    }
  };

  return {
    record(request) {
      const minute = Math.floor(request.startedAt / MINUTE) * MINUTE;
      let bucket = buckets.get(minute);
      if (!bucket) {
        buckets.set(minute, (bucket = { byModel: new Map(), byClient: new Map(), byKey: new Map() }));
        // A new minute: forget what is older than a week and a day.
        for (const start of buckets.keys()) if (start < minute - KEEP_MS) buckets.delete(start);
      }
      const model = request.model ?? "(none)";
      let modelTotals = bucket.byModel.get(model);
      if (!modelTotals) bucket.byModel.set(model, (modelTotals = emptyTotals()));
      add(modelTotals, request);
      if (request.client !== undefined) {
        let clientTotals = bucket.byClient.get(request.client);
        if (!clientTotals) bucket.byClient.set(request.client, (clientTotals = emptyTotals()));
        add(clientTotals, request);
      }
      for (const attempt of request.attempts) {
        let keyTotals = bucket.byKey.get(attempt.keyId);
        if (!keyTotals) bucket.byKey.set(attempt.keyId, (keyTotals = { ...emptyTotals(), successes: 0 }));
        const served = attempt.keyId === request.keyId && attempt.status > 0 && attempt.status < 400;
        keyTotals.requests++;
        if (served) {
          keyTotals.successes++;
          if (request.usage) {
            keyTotals.promptTokens += request.usage.promptTokens;
            keyTotals.completionTokens += request.usage.completionTokens;
            keyTotals.totalTokens += request.usage.totalTokens;
            keyTotals.cost += request.usage.cost ?? 0;
          }
        } else {
          keyTotals.errors++;
        }
      }
      // The record itself is kept (it no longer changes); the view is built only when asked for.
      recentRing[recentNext] = request;
      recentNext = (recentNext + 1) % recentSize;
    },

    report(since, at = now()) {
      const totals = emptyTotals();
      const byModel: Record<string, Totals> = {};
      const byKey: Record<string, Totals & { successes: number }> = {};
      const byClient: Record<string, Totals> = {};
      const from = Math.floor(since / MINUTE) * MINUTE;
      for (const [start, bucket] of buckets) {
        if (start < from) continue;
        for (const [model, each] of bucket.byModel) {
          const target = (byModel[model] ??= emptyTotals());
          merge(target, each);
          merge(totals, each);
        }
        for (const [client, each] of bucket.byClient) merge((byClient[client] ??= emptyTotals()), each);
        for (const [keyId, each] of bucket.byKey) {
          const target = (byKey[keyId] ??= { ...emptyTotals(), successes: 0 });
          merge(target, each);
          target.successes += each.successes;
        }
      }
      return { since: new Date(from).toISOString(), until: new Date(at).toISOString(), totals, byModel, byKey, byClient };
    },

    recent(limit = recentSize) {
      // Newest first: walk back from the slot before `recentNext`.
      const views: RecentRequest[] = [];
      for (let step = 1; step <= Math.min(limit, recentRing.length); step++) {
        views.push(recentView(recentRing[(recentNext - step + recentSize) % recentSize] as RequestRecord));
      }
      return views;
    },
  };
}

function merge(target: Totals, source: Totals): void {
  target.requests += source.requests;
  target.errors += source.errors;
  target.promptTokens += source.promptTokens;
  target.completionTokens += source.completionTokens;
  target.totalTokens += source.totalTokens;
  target.cost += source.cost;
}

/**
 * ISO 8601 as `Date.parse` reads it: a date, optionally a time, optionally a zone. Checked first
 * because `Date.parse` alone also takes free text ("-5", "5 May") and guesses a date from it.
 */
const isoDateTime = /^\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:\d{2})?)?$/;

/** `since` as given to /admin/usage: an ISO date or time, epoch milliseconds, or absent (start of today, UTC). */
export function parseSince(raw: string | undefined, now: number): number | undefined {
  if (raw === undefined || raw === "") return Math.floor(now / 86_400_000) * 86_400_000;
  if (/^\d+$/.test(raw)) return Number(raw);
  if (!isoDateTime.test(raw)) return undefined;
  const parsed = Date.parse(raw);
  return Number.isNaN(parsed) ? undefined : parsed;
}

function recentView(request: RequestRecord): RecentRequest {
  return {
    time: new Date(request.startedAt).toISOString(),
    requestId: request.requestId,
    method: request.method,
    path: request.path,
    model: request.model ?? null,
    stream: request.stream,
    status: request.status,
    keyId: request.keyId ?? null,
    generationId: request.generationId ?? null,
    client: request.client ?? null,
    attempts: request.attempts.length,
    durationMs: request.durationMs,
    totalTokens: request.usage?.totalTokens ?? null,
    error: request.error ?? null,
  };
}
