/**
 * How a client is shown outside (list-clients, the admin API, the status page): its limits, what
 * it used this minute, today and this month, and, when a limit holds it back, until when. Never
 * its key or its key's hash: only the hint (`sk-orp-…Ab3x`).
 */
import type { ClientRecord } from "./client-schema.ts";
import { currentWindow, refusalFor } from "./usage-windows.ts";

export interface ClientView {
  name: string;
  keyHint: string | null;
  createdAt: string;
  expires: string | null;
  expired: boolean;
  models: string[] | null;
  limits: { rpm: number | null; rpd: number | null; tpm: number | null; usdPerDay: number | null; usdPerMonth: number | null };
  usage: {
    minute: { requests: number; tokens: number };
    today: { requests: number; tokens: number; cost: number };
    month: { requests: number; tokens: number; cost: number };
  };
  /** Set while a limit refuses the client's requests: which, and when it comes back. */
  limited: { code: string; reasons: string[]; until: string } | null;
}

export function viewClient(client: ClientRecord, now: number): ClientView {
  const usage = structuredClone(client.usage); // rolling windows over for the view must not touch the live counters
  const minute = currentWindow(usage, "minute", now);
  const day = currentWindow(usage, "day", now);
  const month = currentWindow(usage, "month", now);
  const refusal = refusalFor(client, usage, now);
  const round = (usd: number) => Math.round(usd * 1e6) / 1e6;
  return {
    name: client.name,
    keyHint: client.keyHint ?? null,
    createdAt: new Date(client.createdAt).toISOString(),
    expires: client.expires === undefined ? null : new Date(client.expires).toISOString(),
    expired: client.expires !== undefined && client.expires <= now,
    models: client.models ?? null,
    limits: {
      rpm: client.rpm ?? null,
      rpd: client.rpd ?? null,
      tpm: client.tpm ?? null,
      usdPerDay: client.usdPerDay ?? null,
      usdPerMonth: client.usdPerMonth ?? null,
    },
    usage: {
      minute: { requests: minute.requests, tokens: minute.tokens },
      today: { requests: day.requests, tokens: day.tokens, cost: round(day.cost) },
      month: { requests: month.requests, tokens: month.tokens, cost: round(month.cost) },
    },
    limited: refusal ? { code: refusal.code, reasons: refusal.reasons, until: new Date(refusal.until).toISOString() } : null,
  };
}

/** `12 of 100`, or just `12` without a limit. */
export const ofLimit = (used: number | string, limit: number | null, unit = "") => (limit === null ? `${unit}${used}` : `${unit}${used} of ${unit}${limit}`);

/** One line per column for list-clients' table. */
export function clientRow(view: ClientView): string[] {
  const { limits, usage } = view;
  return [
    view.name,
    view.keyHint ?? "-",
    view.models?.join(",") ?? "any",
    ofLimit(usage.minute.requests, limits.rpm),
    ofLimit(usage.today.requests, limits.rpd),
    ofLimit(usage.minute.tokens, limits.tpm),
    String(usage.today.tokens),
    ofLimit(usage.today.cost, limits.usdPerDay, "$"),
    String(usage.month.requests),
    String(usage.month.tokens),
    ofLimit(usage.month.cost, limits.usdPerMonth, "$"),
    view.expired ? `expired ${view.expires}` : view.limited ? `limited until ${view.limited.until} (${view.limited.reasons.join(", ")})` : view.expires ? `ok, expires ${view.expires}` : "ok",
  ];
}

export const clientTableHeader = ["NAME", "KEY", "MODELS", "REQ/MIN", "REQ TODAY", "TOKENS/MIN", "TOKENS TODAY", "COST TODAY", "REQ MONTH", "TOKENS MONTH", "COST MONTH", "STATUS"];
