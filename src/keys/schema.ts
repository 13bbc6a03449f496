/**
 * The key file's shape (`KEYS_FILE`). People write `{"keys":[{"key":"sk-or-v1-…","label":"main"}]}`
 * or a bare array of key strings; the proxy adds each key's id and runtime state and writes the
 * object form back. Fields it does not know are kept as they were: nothing a user wrote is lost.
 */
import { z } from "zod";
import { RestCauses } from "../domain/model-class.ts";
import { utcDay } from "../domain/time-text.ts";
import type { AccountState } from "./account-state.ts";
import { keyIdOf } from "../domain/key-identity.ts";

const isoDate = z.iso.datetime({ offset: true });

export const CooldownSource = z.enum(["header", "body", "retry-after", "default"]);

export const KeyStateSchema = z.looseObject({
  cooldownUntil: isoDate.optional(),
  cooldownSource: CooldownSource.optional(),
  cooldownReason: z.string().optional(),
  consecutiveFailures: z.number().int().min(0).default(0),
  disabled: z.object({ reason: z.string(), at: isoDate }).optional(),
  lastUsedAt: isoDate.optional(),
  requests: z.number().int().min(0).default(0),
  successes: z.number().int().min(0).default(0),
  failures: z.number().int().min(0).default(0),
});

const AccountStateSchema = z.looseObject({
  rests: z
    .array(
      z.looseObject({
        scope: z.enum(["account", "model", "key"]),
        modelClass: z.enum(["all", "free", "paid"]),
        model: z.string().optional(),
        keyId: z.string().optional(),
        cause: z.enum(RestCauses).optional(),
        untilCleared: z.boolean().optional(),
        until: isoDate,
        source: z.string(),
        reason: z.string(),
      }),
    )
    .default([]),
  free: z.looseObject({ day: z.string(), used: z.number().int().min(0), limit: z.number().int().min(0).optional() }).optional(),
});

const AccountsSchema = z.record(z.string(), AccountStateSchema);

const keyString = z
  .string()
  .trim()
  .min(1, "a key must not be empty")
  .regex(/^\S+$/, "a key must not contain spaces");

export const KeyEntrySchema = z.looseObject({
  key: keyString,
  label: z.string().optional(),
  id: z.string().optional(),
  addedAt: isoDate.optional(),
  /** When a person last re-enabled the key (CLI or admin API): their reset beats the server's state. */
  resetAt: isoDate.optional(),
  /** The OpenRouter account (creator_user_id) the key belongs to, once learned. */
  account: z.string().optional(),
  /** The key's own spending cap, as GET /key last said (add-key, the server's lookups). */
  keyLimit: z
    .looseObject({ limit: z.number().nullable(), remaining: z.number().nullable(), reset: z.string().nullable(), checkedAt: isoDate })
    .optional(),
  state: KeyStateSchema.optional(),
});

const entryOrString = z.union([keyString, KeyEntrySchema]);

export const KeyFileSchema = z.union([
  z.array(entryOrString),
  z.looseObject({ keys: z.array(entryOrString), accounts: AccountsSchema.optional() }),
]);

export type KeyEntry = z.infer<typeof KeyEntrySchema>;

/** A key's own spending cap from GET /key: `limit` USD (null: none), `reset` daily/weekly/monthly or null. */
export interface KeyLimit {
  limit: number | null;
  remaining: number | null;
  reset: string | null;
  checkedAt: number;
}

/** A key as the pool holds it: times as epoch milliseconds, the user's extra fields kept aside. */
export interface KeyRecord {
  id: string;
  secret: string;
  label?: string;
  addedAt: number;
  resetAt?: number;
  account?: string;
  keyLimit?: KeyLimit;
  cooldownUntil: number;
  cooldownSource?: z.infer<typeof CooldownSource>;
  cooldownReason?: string;
  consecutiveFailures: number;
  disabled?: { reason: string; at: number };
  lastUsedAt: number;
  /** The key's counters (the server counts them; the file keeps their totals). */
  requests: number;
  successes: number;
  failures: number;
  /** Fields of the entry (and of its state) that the proxy does not know; written back as they were. */
  extra: Record<string, unknown>;
  extraState: Record<string, unknown>;
}

export interface KeyFileDocument {
  records: KeyRecord[];
  /** Per-account runtime state (rests, the daily free budget): the server's to write. */
  accounts: Map<string, AccountState>;
  /** Top-level fields besides `keys`, kept as they were. */
  extraTopLevel: Record<string, unknown>;
}

const time = (iso: string | undefined): number => (iso === undefined ? 0 : Date.parse(iso));
const iso = (ms: number): string => new Date(ms).toISOString();

function accountsFromFile(raw: z.infer<typeof AccountsSchema> | undefined): Map<string, AccountState> {
  const accounts = new Map<string, AccountState>();
  for (const [id, state] of Object.entries(raw ?? {})) {
    accounts.set(id, {
      rests: state.rests.map((rest) => ({
        scope: rest.scope,
        modelClass: rest.modelClass,
        ...(rest.model === undefined ? {} : { model: rest.model }),
        ...(rest.keyId === undefined ? {} : { keyId: rest.keyId }),
        ...(rest.cause === undefined ? {} : { cause: rest.cause }),
        ...(rest.untilCleared ? { untilCleared: true } : {}),
        until: time(rest.until),
        source: rest.source,
        reason: rest.reason,
      })),
      ...(state.free ? { free: { day: state.free.day, used: state.free.used, ...(state.free.limit === undefined ? {} : { limit: state.free.limit }) } } : {}),
    });
  }
  return accounts;
}

/** For the file: rests that are over are dropped; a budget is kept while it is today's. */
function accountsForFile(accounts: ReadonlyMap<string, AccountState>, now: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const today = utcDay(now);
  for (const [id, state] of accounts) {
    const rests = state.rests.filter((rest) => rest.until > now).map((rest) => ({ ...rest, until: iso(rest.until) }));
    const free = state.free && state.free.day === today ? { day: state.free.day, used: state.free.used, ...(state.free.limit === undefined ? {} : { limit: state.free.limit }) } : undefined;
    if (rests.length === 0 && !free) continue;
    out[id] = { rests, ...(free ? { free } : {}) };
  }
  return out;
}

const knownEntryFields = new Set(["key", "label", "id", "addedAt", "resetAt", "account", "keyLimit", "state"]);
const knownStateFields = new Set(Object.keys(KeyStateSchema.shape));

function pick(source: Record<string, unknown>, known: Set<string>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(source).filter(([name]) => !known.has(name)));
}

export function newKeyRecord(secret: string, now: number, label?: string): KeyRecord {
  return {
    id: keyIdOf(secret),
    secret,
    ...(label === undefined ? {} : { label }),
    addedAt: now,
    cooldownUntil: 0,
    consecutiveFailures: 0,
    lastUsedAt: 0,
    requests: 0,
    successes: 0,
    failures: 0,
    extra: {},
    extraState: {},
  };
}

/** A parsed file → records (duplicates dropped, the first one kept). */
export function recordsFromFile(parsed: z.infer<typeof KeyFileSchema>, now: number): KeyFileDocument {
  const entries = Array.isArray(parsed) ? parsed : parsed.keys;
  const extraTopLevel = Array.isArray(parsed) ? {} : pick(parsed, new Set(["keys", "accounts"]));
  const accounts = accountsFromFile(Array.isArray(parsed) ? undefined : parsed.accounts);
  const seen = new Set<string>();
  const records: KeyRecord[] = [];
  for (const entry of entries) {
    const raw: KeyEntry = typeof entry === "string" ? { key: entry } : entry;
    const record = newKeyRecord(raw.key, raw.addedAt ? time(raw.addedAt) : now, raw.label);
    if (seen.has(record.id)) continue;
    seen.add(record.id);
    const state = raw.state;
    records.push({
      ...record,
      ...(raw.resetAt ? { resetAt: time(raw.resetAt) } : {}),
      ...(raw.account ? { account: raw.account } : {}),
      ...(raw.keyLimit ? { keyLimit: { limit: raw.keyLimit.limit, remaining: raw.keyLimit.remaining, reset: raw.keyLimit.reset, checkedAt: time(raw.keyLimit.checkedAt) } } : {}),
      cooldownUntil: time(state?.cooldownUntil),
      ...(state?.cooldownSource ? { cooldownSource: state.cooldownSource } : {}),
      ...(state?.cooldownReason ? { cooldownReason: state.cooldownReason } : {}),
      consecutiveFailures: state?.consecutiveFailures ?? 0,
      ...(state?.disabled ? { disabled: { reason: state.disabled.reason, at: time(state.disabled.at) } } : {}),
      lastUsedAt: time(state?.lastUsedAt),
      requests: state?.requests ?? 0,
      successes: state?.successes ?? 0,
      failures: state?.failures ?? 0,
      extra: pick(raw, knownEntryFields),
      extraState: state ? pick(state, knownStateFields) : {},
    });
  }
  return { records, accounts, extraTopLevel };
}

export function entryFromRecord(record: KeyRecord, now: number): Record<string, unknown> {
  const coolingDown = record.cooldownUntil > now;
  return {
    key: record.secret,
    ...(record.label === undefined ? {} : { label: record.label }),
    id: record.id,
    addedAt: iso(record.addedAt),
    ...(record.resetAt ? { resetAt: iso(record.resetAt) } : {}),
    ...(record.account ? { account: record.account } : {}),
    ...(record.keyLimit ? { keyLimit: { ...record.keyLimit, checkedAt: iso(record.keyLimit.checkedAt) } } : {}),
    ...record.extra,
    state: {
      ...(coolingDown ? { cooldownUntil: iso(record.cooldownUntil) } : {}),
      ...(coolingDown && record.cooldownSource ? { cooldownSource: record.cooldownSource } : {}),
      ...(coolingDown && record.cooldownReason ? { cooldownReason: record.cooldownReason } : {}),
      consecutiveFailures: record.consecutiveFailures,
      ...(record.disabled ? { disabled: { reason: record.disabled.reason, at: iso(record.disabled.at) } } : {}),
      ...(record.lastUsedAt ? { lastUsedAt: iso(record.lastUsedAt) } : {}),
      requests: record.requests,
      successes: record.successes,
      failures: record.failures,
      ...record.extraState,
    },
  };
}

export function fileTextFromDocument(doc: KeyFileDocument, now: number): string {
  const accounts = accountsForFile(doc.accounts, now);
  const body = {
    ...doc.extraTopLevel,
    keys: doc.records.map((record) => entryFromRecord(record, now)),
    ...(Object.keys(accounts).length > 0 ? { accounts } : {}),
  };
  return `${JSON.stringify(body, null, 2)}\n`;
}
