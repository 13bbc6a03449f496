/** How a key is shown to people (CLI, admin API): its id and masked form, never the key. */
import { maskKey } from "./key-identity.ts";
import type { KeyRecord } from "./schema.ts";

export type KeyStatusName = "active" | "cooling" | "disabled";

export interface KeyView {
  id: string;
  label: string | null;
  masked: string;
  status: KeyStatusName;
  cooldownUntil: string | null;
  cooldownReason: string | null;
  consecutiveFailures: number;
  disabledReason: string | null;
  disabledAt: string | null;
  lastUsedAt: string | null;
  addedAt: string;
  requests: number;
  successes: number;
  failures: number;
}

const iso = (ms: number | undefined): string | null => (ms ? new Date(ms).toISOString() : null);

export function viewKey(record: KeyRecord, now: number): KeyView {
  const cooling = record.cooldownUntil > now;
  return {
    id: record.id,
    label: record.label ?? null,
    masked: maskKey(record.secret),
    status: record.disabled ? "disabled" : cooling ? "cooling" : "active",
    cooldownUntil: cooling ? iso(record.cooldownUntil) : null,
    cooldownReason: cooling ? (record.cooldownReason ?? null) : null,
    consecutiveFailures: record.consecutiveFailures,
    disabledReason: record.disabled?.reason ?? null,
    disabledAt: iso(record.disabled?.at),
    lastUsedAt: iso(record.lastUsedAt),
    addedAt: iso(record.addedAt) ?? new Date(0).toISOString(),
    requests: record.requests,
    successes: record.successes,
    failures: record.failures,
  };
}

/** One human line of status: "active", "cooling down until …", "disabled: why". */
export function describeStatus(view: KeyView): string {
  switch (view.status) {
    case "active":
      return "active";
    case "cooling":
      return `cooling down until ${view.cooldownUntil}${view.cooldownReason ? ` (${view.cooldownReason})` : ""}`;
    case "disabled":
      return `disabled: ${view.disabledReason ?? "no reason recorded"}`;
  }
}

/**
 * A word a person typed where a command or a key id belongs, fit to echo back in an error. People
 * paste keys into the wrong place (`remove-key sk-or-v1-…`, `DELETE /admin/keys/sk-or-v1-…`), and
 * an error must not print the key in full: anything longer than an id, or shaped like a key, is
 * shown masked.
 */
export function echoInput(word: string): string {
  return word.length > 24 || /^sk-/i.test(word) ? maskKey(word) : word;
}
