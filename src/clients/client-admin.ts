/**
 * People's changes to the clients, as pure functions over the section: the CLI and the admin API
 * run them inside `store.update` (which may run a change twice), so a new key is made by the
 * caller, outside, and passed in.
 */
import { echoInput } from "../keys/key-view.ts";
import { clientKeyHint, hashClientKey } from "./client-key.ts";
import { clientNamePattern, type ClientRecord } from "./client-schema.ts";
import type { ClientSettings } from "./client-settings.ts";
import { emptyUsage } from "./usage-windows.ts";

export type ClientMap = ReadonlyMap<string, ClientRecord>;
export type ClientEdit = { ok: true; clients: Map<string, ClientRecord>; client: ClientRecord } | { ok: false; code: "client_exists" | "client_not_found" | "invalid_client_name"; message: string };

export function checkClientName(name: string): string | undefined {
  return clientNamePattern.test(name) ? undefined : `${JSON.stringify(echoInput(name))} is not a client name: use 1 to 64 letters, digits, dots, dashes or underscores, starting with a letter or digit (and not with sk-, which would look like a key)`;
}

export function addClient(clients: ClientMap, name: string, settings: ClientSettings, key: string, now: number): ClientEdit {
  const bad = checkClientName(name);
  if (bad) return { ok: false, code: "invalid_client_name", message: bad };
  if (clients.has(name)) return { ok: false, code: "client_exists", message: `a client named ${name} exists already: change it with set-client, or give it a new key with rotate-client` };
  const client = applySettings(
    { name, keySha256: hashClientKey(key), keyHint: clientKeyHint(key), createdAt: now, usage: emptyUsage(now), extra: {} },
    settings,
  );
  return { ok: true, clients: new Map(clients).set(name, client), client };
}

export function setClient(clients: ClientMap, name: string, settings: ClientSettings): ClientEdit {
  const existing = clients.get(name);
  if (!existing) return notFound(name);
  const client = applySettings({ ...existing }, settings);
  return { ok: true, clients: new Map(clients).set(name, client), client };
}

/** A new key; the old one stops working as soon as the change is adopted. Counters and limits stay. */
export function rotateClient(clients: ClientMap, name: string, key: string): ClientEdit {
  const existing = clients.get(name);
  if (!existing) return notFound(name);
  const client = { ...existing, keySha256: hashClientKey(key), keyHint: clientKeyHint(key) };
  return { ok: true, clients: new Map(clients).set(name, client), client };
}

export function removeClient(clients: ClientMap, name: string): ClientEdit {
  const existing = clients.get(name);
  if (!existing) return notFound(name);
  const next = new Map(clients);
  next.delete(name);
  return { ok: true, clients: next, client: existing };
}

function notFound(name: string): ClientEdit {
  return { ok: false, code: "client_not_found", message: `no client named ${echoInput(name)}: list-clients (or GET /admin/clients) shows them` };
}

function applySettings(client: ClientRecord, settings: ClientSettings): ClientRecord {
  const next: ClientRecord = { ...client };
  // undefined: leave as it is; null: lift; a value: set.
  const apply = <K extends "models" | "rpm" | "rpd" | "tpm" | "usdPerDay" | "usdPerMonth" | "expires">(field: K, value: ClientRecord[K] | null | undefined) => {
    if (value === null) delete next[field];
    else if (value !== undefined) next[field] = value;
  };
  apply("models", settings.models);
  apply("rpm", settings.rpm);
  apply("rpd", settings.rpd);
  apply("tpm", settings.tpm);
  apply("usdPerDay", settings.usdPerDay);
  apply("usdPerMonth", settings.usdPerMonth);
  apply("expires", settings.expires);
  return next;
}
