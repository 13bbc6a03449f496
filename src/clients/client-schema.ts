/**
 * The `clients` section of the keys file: one entry per client, by name.
 *
 *   "clients": {
 *     "alice": { "keySha256": "…", "keyHint": "sk-orp-…Ab3x", "createdAt": "…", "models": ["*:free"], "rpm": 20,
 *                "usage": { "minute": {…}, "day": {…}, "month": {…} } }
 *   }
 *
 * People's fields (the hash, the limits) are changed by the CLI and the admin API; `usage` is the
 * server's. The rest of the file is untouched: the section travels in the document's extra
 * top-level fields, so the key store reads and writes it without knowing about it. Fields the
 * proxy does not know are kept as they were.
 */
import { z } from "zod";
import type { KeyFileDocument } from "../keys/schema.ts";
import { emptyUsage, emptyWindow, windowStart, type ClientLimits, type ClientUsage, type WindowCount, type WindowKind } from "./usage-windows.ts";

const isoDate = z.iso.datetime({ offset: true });
const count = z.number().int().min(0);

const WindowSchema = z.object({ start: isoDate, requests: count.default(0), tokens: count.default(0), cost: z.number().min(0).default(0) });

export const ClientEntrySchema = z.looseObject({
  keySha256: z.string().regex(/^[0-9a-f]{64}$/, "keySha256 must be 64 hex digits"),
  keyHint: z.string().optional(),
  createdAt: isoDate,
  models: z.array(z.string().min(1)).min(1).optional(),
  rpm: z.number().int().min(1).optional(),
  rpd: z.number().int().min(1).optional(),
  tpm: z.number().int().min(1).optional(),
  usdPerDay: z.number().positive().optional(),
  usdPerMonth: z.number().positive().optional(),
  expires: isoDate.optional(),
  usage: z.object({ minute: WindowSchema.optional(), day: WindowSchema.optional(), month: WindowSchema.optional() }).optional(),
});

/** Names are what logs, metrics labels and URLs show: short and plain, and never shaped like a key. */
export const clientNamePattern = /^(?![sS][kK]-)[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const SectionSchema = z.record(z.string().regex(clientNamePattern, "a client name is 1 to 64 letters, digits, dots, dashes or underscores, not starting with sk-"), ClientEntrySchema);

export interface ClientDefinition extends ClientLimits {
  name: string;
  keySha256: string;
  keyHint?: string;
  createdAt: number;
  models?: string[];
  expires?: number;
}

export interface ClientRecord extends ClientDefinition {
  usage: ClientUsage;
  /** Fields of the entry the proxy does not know; written back as they were. */
  extra: Record<string, unknown>;
}

export type ClientsLoad = { ok: true; clients: Map<string, ClientRecord> } | { ok: false; message: string };

const knownFields = new Set(Object.keys(ClientEntrySchema.shape));
const iso = (ms: number) => new Date(ms).toISOString();

/** The section of a loaded document; a missing section is no clients. */
export function clientsFromDocument(doc: KeyFileDocument, now: number): ClientsLoad {
  const raw = doc.extraTopLevel.clients;
  if (raw === undefined) return { ok: true, clients: new Map() };
  const parsed = SectionSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const path = issue?.path.map(String).join(".") ?? "";
    return { ok: false, message: `the clients section is invalid${path ? ` at clients.${path}` : ""}: ${issue?.message ?? "invalid"}` };
  }
  const clients = new Map<string, ClientRecord>();
  for (const [name, entry] of Object.entries(parsed.data)) {
    const usage = emptyUsage(now);
    for (const kind of ["minute", "day", "month"] as const) {
      const stored = entry.usage?.[kind];
      if (stored) usage[kind] = windowFromFile(kind, stored);
    }
    clients.set(name, {
      name,
      keySha256: entry.keySha256,
      ...(entry.keyHint === undefined ? {} : { keyHint: entry.keyHint }),
      createdAt: Date.parse(entry.createdAt),
      ...(entry.models ? { models: entry.models } : {}),
      ...(entry.rpm === undefined ? {} : { rpm: entry.rpm }),
      ...(entry.rpd === undefined ? {} : { rpd: entry.rpd }),
      ...(entry.tpm === undefined ? {} : { tpm: entry.tpm }),
      ...(entry.usdPerDay === undefined ? {} : { usdPerDay: entry.usdPerDay }),
      ...(entry.usdPerMonth === undefined ? {} : { usdPerMonth: entry.usdPerMonth }),
      ...(entry.expires === undefined ? {} : { expires: Date.parse(entry.expires) }),
      usage,
      extra: Object.fromEntries(Object.entries(entry).filter(([field]) => !knownFields.has(field))),
    });
  }
  return { ok: true, clients };
}

/** A stored window, its start snapped to the window it names (a hand-edited time is not trusted to be aligned). */
function windowFromFile(kind: WindowKind, stored: z.infer<typeof WindowSchema>): WindowCount {
  return { ...emptyWindow(windowStart(kind, Date.parse(stored.start))), requests: stored.requests, tokens: stored.tokens, cost: stored.cost };
}

/** The document with its clients section replaced (removed when there are none left and there was none). */
export function documentWithClients(doc: KeyFileDocument, clients: ReadonlyMap<string, ClientRecord>): KeyFileDocument {
  const { clients: _old, ...rest } = doc.extraTopLevel;
  if (clients.size === 0 && _old === undefined) return doc;
  const section: Record<string, unknown> = {};
  for (const [name, client] of clients) section[name] = entryOf(client);
  return { ...doc, extraTopLevel: { ...rest, clients: section } };
}

function entryOf(client: ClientRecord): Record<string, unknown> {
  const window = (count: WindowCount) => ({ start: iso(count.start), requests: count.requests, tokens: count.tokens, cost: count.cost });
  return {
    keySha256: client.keySha256,
    ...(client.keyHint === undefined ? {} : { keyHint: client.keyHint }),
    createdAt: iso(client.createdAt),
    ...(client.models ? { models: client.models } : {}),
    ...(client.rpm === undefined ? {} : { rpm: client.rpm }),
    ...(client.rpd === undefined ? {} : { rpd: client.rpd }),
    ...(client.tpm === undefined ? {} : { tpm: client.tpm }),
    ...(client.usdPerDay === undefined ? {} : { usdPerDay: client.usdPerDay }),
    ...(client.usdPerMonth === undefined ? {} : { usdPerMonth: client.usdPerMonth }),
    ...(client.expires === undefined ? {} : { expires: iso(client.expires) }),
    ...client.extra,
    usage: { minute: window(client.usage.minute), day: window(client.usage.day), month: window(client.usage.month) },
  };
}
