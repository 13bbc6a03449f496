/**
 * The client subcommands: add-client, list-clients, set-client, remove-client, rotate-client.
 * Like the key commands they change the keys file through the store, under its lock, so a server
 * on the same KEYS_FILE adopts the change within a poll. A new key is printed once, alone on
 * standard output (so `KEY=$(openrouter-proxy add-client bob)` works); everything else goes to
 * standard error. Exit codes: 0 done, 1 the operation failed, 2 bad usage.
 */
import { createJsonFileStore } from "../store/file/json-file-store.ts";
import { addClient, removeClient, rotateClient, setClient, type ClientEdit, type ClientMap } from "../clients/client-admin.ts";
import { newClientKey } from "../clients/client-key.ts";
import { editClients } from "../store/client-edit.ts";
import { clientsFromDocument } from "../clients/client-schema.ts";
import { clientSettingNames, flagOf, parseClientSettings, type ClientSettings } from "../clients/client-settings.ts";
import { clientRow, clientTableHeader, viewClient } from "../clients/client-view.ts";
import { printTable, type CommandContext, type CommandIO } from "./io.ts";

type FlagKind = "value" | "switch";

const numericSettings = new Set(["rpm", "rpd", "tpm", "usdPerDay", "usdPerMonth"]);

/** `--models`, `--rpm`, … take a value; `--no-models`, `--no-rpm`, … lift the setting. */
const settingFlags: Record<string, FlagKind> = Object.fromEntries(
  clientSettingNames.flatMap((name) => [
    [flagOf(name), "value"],
    [`--no-${flagOf(name).slice(2)}`, "switch"],
  ]),
);

type Flags = ReadonlyMap<string, string | true>;

/** Each client command's flags, and what it runs (`name` has been checked to be there, none for list-clients). */
export const clientCommands: Record<string, { flags: Record<string, FlagKind>; run(context: CommandContext, name: string, flags: Flags): Promise<number> }> = {
  "add-client": { flags: Object.fromEntries(Object.entries(settingFlags).filter(([flag]) => !flag.startsWith("--no-"))), run: addClientCommand },
  "set-client": { flags: settingFlags, run: setClientCommand },
  "list-clients": { flags: { "--json": "switch" }, run: (context, _name, flags) => listClientsCommand(context, flags.has("--json")) },
  "remove-client": {
    flags: {},
    run: (context, name) => editCommand(context, "remove-client", (clients) => removeClient(clients, name), (edit) => `removed client ${edit.client.name}: its key stops working`),
  },
  "rotate-client": { flags: {}, run: rotateClientCommand },
};

/** The flags as settings; `undefined` (after an error message) when a value is not acceptable. */
function settingsFromFlags(io: CommandIO, command: string, flags: Flags): ClientSettings | undefined {
  const input: Record<string, unknown> = {};
  for (const name of clientSettingNames) {
    const flag = flagOf(name);
    const lift = `--no-${flag.slice(2)}`;
    const value = flags.get(flag);
    if (typeof value === "string" && flags.has(lift)) {
      io.err(`${command}: ${flag} and ${lift} contradict each other: give one`);
      return undefined;
    }
    if (flags.has(lift)) input[name] = null;
    else if (typeof value === "string") input[name] = numericSettings.has(name) && /^\d+(?:\.\d+)?$/.test(value.trim()) ? Number(value) : value;
  }
  const parsed = parseClientSettings(input);
  if (!parsed.ok) {
    io.err(`${command}: ${flagOf(parsed.field)}: ${parsed.message}`);
    return undefined;
  }
  return parsed.settings;
}

function describeSettings(settings: ClientSettings): string {
  const parts: string[] = [];
  if (settings.models) parts.push(`models ${settings.models.join(",")}`);
  if (settings.rpm) parts.push(`${settings.rpm} requests/minute`);
  if (settings.rpd) parts.push(`${settings.rpd} requests/day`);
  if (settings.tpm) parts.push(`${settings.tpm} tokens/minute`);
  if (settings.usdPerDay) parts.push(`$${settings.usdPerDay}/day`);
  if (settings.usdPerMonth) parts.push(`$${settings.usdPerMonth}/month`);
  if (settings.expires) parts.push(`expires ${new Date(settings.expires).toISOString()}`);
  return parts.length === 0 ? "no limits" : parts.join(", ");
}

async function addClientCommand(context: CommandContext, name: string, flags: Flags): Promise<number> {
  const settings = settingsFromFlags(context.io, "add-client", flags);
  if (!settings) return 2;
  const key = newClientKey();
  const now = context.now ?? Date.now;
  const code = await editCommand(
    context,
    "add-client",
    (clients) => addClient(clients, name, settings, key, now()),
    (edit) => `added client ${edit.client.name} (${describeSettings(settings)}). Its key follows, shown this once: only its SHA-256 is kept.`,
  );
  if (code === 0) context.io.out(key);
  return code;
}

async function setClientCommand(context: CommandContext, name: string, flags: Flags): Promise<number> {
  const settings = settingsFromFlags(context.io, "set-client", flags);
  if (!settings) return 2;
  if (Object.values(settings).every((value) => value === undefined)) {
    context.io.err(`set-client: nothing to change: give at least one of ${Object.keys(settingFlags).join(" ")}`);
    return 2;
  }
  return editCommand(context, "set-client", (clients) => setClient(clients, name, settings), (edit) => `changed client ${edit.client.name}: ${describeSettings(settings)}${liftedOf(settings)}`);
}

function liftedOf(settings: ClientSettings): string {
  const lifted = clientSettingNames.filter((name) => settings[name] === null).map(flagOf);
  return lifted.length === 0 ? "" : `; lifted ${lifted.join(" ")}`;
}

async function rotateClientCommand(context: CommandContext, name: string): Promise<number> {
  const key = newClientKey();
  const code = await editCommand(
    context,
    "rotate-client",
    (clients) => rotateClient(clients, name, key),
    (edit) => `rotated the key of client ${edit.client.name}: the old key stops working. The new key follows, shown this once.`,
  );
  if (code === 0) context.io.out(key);
  return code;
}

/** Runs `change` on the clients in the keys file, under the store's lock; prints the outcome. */
async function editCommand(context: CommandContext, command: string, change: (clients: ClientMap) => ClientEdit, done: (edit: Extract<ClientEdit, { ok: true }>) => string): Promise<number> {
  const store = context.store ?? createJsonFileStore({ path: context.config.KEYS_FILE });
  const outcome = await editClients(store, context.now ?? Date.now, change);
  if (outcome.kind === "store") {
    context.io.err(`${command}: ${outcome.failure.message}; nothing was changed`);
    return 1;
  }
  if (outcome.kind === "invalid") {
    context.io.err(`${command}: ${outcome.message}; nothing was changed`);
    return 1;
  }
  if (!outcome.edit.ok) {
    context.io.err(`${command}: ${outcome.edit.message}`);
    return outcome.edit.code === "invalid_client_name" ? 2 : 1;
  }
  context.io.err(done(outcome.edit));
  return 0;
}

/** `list-clients [--json]`: limits and use, as the server last saved them. */
async function listClientsCommand(context: CommandContext, json: boolean): Promise<number> {
  const now = (context.now ?? Date.now)();
  const store = context.store ?? createJsonFileStore({ path: context.config.KEYS_FILE });
  const loaded = await store.load();
  if (!loaded.ok) {
    context.io.err(`list-clients: ${loaded.message}`);
    return 1;
  }
  const clients = clientsFromDocument(loaded.doc, now);
  if (!clients.ok) {
    context.io.err(`list-clients: ${store.name}: ${clients.message}`);
    return 1;
  }
  const views = [...clients.clients.values()].map((client) => viewClient(client, now));
  if (json) {
    context.io.out(JSON.stringify({ clients: views }, null, 2));
    return 0;
  }
  if (views.length === 0) {
    context.io.out(`no clients in ${store.name}: add one with \`openrouter-proxy add-client NAME\``);
    return 0;
  }
  printTable(context.io, clientTableHeader, views.map(clientRow));
  return 0;
}
