/**
 * The key subcommands: add-key, list-keys, remove-key, enable-key, check-keys. They change the
 * key file through the store (under its lock), so a server running on the same KEYS_FILE picks
 * the change up within a second and nothing either side writes is lost. Output shows ids and
 * masked keys only. Exit codes: 0 done, 1 the operation failed, 2 bad usage (main.ts).
 */
import { factsOf } from "../keys/account-discovery.ts";
import { createJsonFileStore } from "../store/file/json-file-store.ts";
import { addKey, disableKey, enableKey, removeKey, setAccounts, type AddOutcome } from "../keys/key-admin.ts";
import { keyIdOf, maskKey } from "../domain/key-identity.ts";
import type { KeyFacts } from "../keys/key-pool.ts";
import type { KeyStore } from "../store/ports.ts";
import { describeRest, describeStatus, echoInput, viewAccounts, viewKey, type KeyView } from "../keys/key-view.ts";
import { checkKey } from "../upstream/key-info.ts";
import type { KeyCheck } from "../domain/key-check.ts";
import { printTable, type CommandContext } from "./io.ts";

// The store writes with the command's clock: a rest it drops as over must be over for the servers too.
const storeOf = ({ config, store, now }: CommandContext) => store ?? createJsonFileStore({ path: config.KEYS_FILE, ...(now === undefined ? {} : { now }) });

interface KeyInput {
  secret: string;
  label?: string;
}

/** `add-key [KEY] [--label NAME] [--no-verify]` */
export async function addKeyCommand(
  context: CommandContext,
  { key, label, verify }: { key?: string; label?: string; verify: boolean },
): Promise<number> {
  const { io, config } = context;
  const now = context.now ?? Date.now;
  let inputs: KeyInput[];
  if (key !== undefined) {
    // An empty argument (`add-key ""`) is no key at all: the usage error below, not an empty entry.
    inputs = key.trim() === "" ? [] : [{ secret: key.trim(), ...(label === undefined ? {} : { label }) }];
  } else if (io.promptHidden) {
    // Ctrl-C at the prompt rejects; without this catch main.ts died with a source excerpt and a
    // stack trace (exit 1). Answer like a shell does for an interrupt: one line, status 130.
    let typed: string;
    try {
      typed = (await io.promptHidden("OpenRouter API key (input hidden): ")).trim();
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      io.err(`add-key: ${reason}; nothing was added`);
      return reason === "cancelled" ? 130 : 1;
    }
    inputs = typed ? [{ secret: typed, ...(label === undefined ? {} : { label }) }] : [];
  } else {
    // From a pipe: one key per line, optionally followed by a label; blank lines and # comments skipped.
    const text = (await io.readStdin?.()) ?? "";
    inputs = text
      .split(/\r?\n/)
      .map((line) => line.trim())
      .filter((line) => line !== "" && !line.startsWith("#"))
      .map((line) => {
        const [secret = "", ...rest] = line.split(/\s+/);
        const lineLabel = rest.join(" ") || label;
        return { secret, ...(lineLabel === undefined ? {} : { label: lineLabel }) };
      });
  }
  if (inputs.length === 0) {
    io.err("add-key: no key given: pass it as an argument, type it when asked, or pipe keys one per line");
    return 2;
  }

  const store = storeOf(context);
  let failures = 0;
  for (const input of inputs) {
    const id = keyIdOf(input.secret);
    const shown = `${id} (${maskKey(input.secret)})`;
    // The key file's schema refuses a key with spaces in it (schema.ts); writing one anyway left a
    // file that neither a running server nor any later command could load.
    if (/\s/.test(input.secret)) {
      io.err(`not added: ${shown}: a key must not contain spaces (quote only the key itself)`);
      failures++;
      continue;
    }
    let facts: KeyFacts = {};
    if (verify) {
      const check = await checkKey(input.secret, { baseUrl: config.OPENROUTER_BASE_URL, ...(context.fetch ? { fetch: context.fetch } : {}) });
      if (check.kind === "rejected") {
        io.err(`not added: ${shown}: the upstream rejected it (${check.status}: ${check.message})`);
        failures++;
        continue;
      }
      if (check.kind === "unknown") io.err(`warning: could not verify ${shown}: ${check.reason}; adding it anyway`);
      if (check.kind === "valid") facts = factsOf(check.info, now());
    }
    let outcome: AddOutcome = "added";
    const result = await store.update((doc) => {
      const added = addKey(doc, input.secret, now(), input.label, facts);
      outcome = added.outcome;
      return added.doc;
    });
    if (!result.ok) {
      io.err(`add-key: ${result.message}; nothing was changed`);
      return 1;
    }
    const label = input.label ? ` "${input.label}"` : "";
    io.out(
      outcome === "added"
        ? `added ${shown}${label}`
        : outcome === "re-enabled"
          ? `re-enabled ${shown}: it was disabled; failures and cooldown cleared`
          : `already present: ${shown}; nothing changed`,
    );
  }
  return failures > 0 ? 1 : 0;
}

/** `list-keys [--json]` */
export async function listKeysCommand(context: CommandContext, { json }: { json: boolean }): Promise<number> {
  const now = (context.now ?? Date.now)();
  const loaded = await storeOf(context).load();
  if (!loaded.ok) {
    context.io.err(`list-keys: ${loaded.message}`);
    return 1;
  }
  const views = loaded.doc.records.map((record) => viewKey(record, loaded.doc.accounts, now));
  const accounts = viewAccounts(loaded.doc.records, loaded.doc.accounts, now);
  if (json) {
    context.io.out(JSON.stringify({ keys: views, accounts }, null, 2));
    return 0;
  }
  if (views.length === 0) {
    context.io.out(`no keys in ${context.config.KEYS_FILE}: add one with \`openrouter-proxy add-key\``);
    return 0;
  }
  printTable(context.io, ["ID", "LABEL", "KEY", "ACCOUNT", "STATUS", "FAILURES", "LAST USED", "REQUESTS"], views.map(listRow));
  context.io.out("");
  printTable(
    context.io,
    ["ACCOUNT", "KEYS", "FREE REQUESTS TODAY", "RESTING"],
    accounts.map((account) => [
      account.id,
      account.keyIds.join(" "),
      `${account.freeRequestsToday}${account.freeLimit === null ? "" : ` of ${account.freeLimit}`}`,
      account.rests.length === 0 ? "-" : account.rests.map(describeRest).join("; "),
    ]),
  );
  return 0;
}

function listRow(view: KeyView): string[] {
  return [view.id, view.label ?? "-", view.masked, view.account ?? "-", describeStatus(view), String(view.consecutiveFailures), view.lastUsedAt ?? "never", String(view.requests)];
}

/** `remove-key ID` */
export async function removeKeyCommand(context: CommandContext, id: string): Promise<number> {
  let removed: string | undefined;
  const result = await storeOf(context).update((doc) => {
    const change = removeKey(doc, id);
    removed = change.removed ? maskKey(change.removed.secret) : undefined;
    return change.doc;
  });
  return report(context, result, removed === undefined ? undefined : `removed ${id} (${removed})`, id, "remove-key");
}

/** `enable-key ID`: clears disabled, failures and cooldown, and the account's rests that are not a known daily limit. */
export async function enableKeyCommand(context: CommandContext, id: string): Promise<number> {
  const now = context.now ?? Date.now;
  let enabled: string | undefined;
  let cleared: string[] = [];
  const result = await storeOf(context).update((doc) => {
    const change = enableKey(doc, id, now());
    enabled = change.record ? maskKey(change.record.secret) : undefined;
    cleared = change.cleared;
    return change.doc;
  });
  const rests = cleared.length === 0 ? "; no account rests to clear" : `; account rests cleared: ${cleared.join("; ")}`;
  return report(context, result, enabled === undefined ? undefined : `enabled ${id} (${enabled}): failures and cooldown cleared${rests}`, id, "enable-key");
}

function report(context: CommandContext, result: Awaited<ReturnType<KeyStore["update"]>>, done: string | undefined, id: string, command: string): number {
  if (!result.ok) {
    context.io.err(`${command}: ${result.message}; nothing was changed`);
    return 1;
  }
  if (done === undefined) {
    // echoInput: people pass the key itself where its id belongs; it must not be printed back.
    context.io.err(`${command}: no key with id ${echoInput(id)}; \`openrouter-proxy list-keys\` shows the ids`);
    return 1;
  }
  context.io.out(done);
  return 0;
}

/** `check-keys [--json]`: asks the upstream about every key, disables the ones it rejects. */
export async function checkKeysCommand(context: CommandContext, { json }: { json: boolean }): Promise<number> {
  const { io, config } = context;
  const now = context.now ?? Date.now;
  const store = storeOf(context);
  const loaded = await store.load();
  if (!loaded.ok) {
    io.err(`check-keys: ${loaded.message}`);
    return 1;
  }
  if (loaded.doc.records.length === 0) {
    io.out(`no keys in ${config.KEYS_FILE}: add one with \`openrouter-proxy add-key\``);
    return 0;
  }
  const checks = await Promise.all(
    loaded.doc.records.map(async (record) => ({
      record,
      check: await checkKey(record.secret, { baseUrl: config.OPENROUTER_BASE_URL, ...(context.fetch ? { fetch: context.fetch } : {}) }),
    })),
  );
  const rejected = checks.filter(({ check }) => check.kind === "rejected");
  // Which account each key belongs to (OpenRouter counts free-model limits per account).
  const accounts = new Map<string, string>();
  for (const { record, check } of checks) {
    if (check.kind === "valid" && check.info.creator_user_id) accounts.set(record.id, check.info.creator_user_id);
  }
  let recorded = true;
  if (rejected.length > 0 || accounts.size > 0) {
    const result = await store.update((doc) =>
      rejected.reduce((current, { record, check }) => {
        const reason = check.kind === "rejected" ? `rejected by check-keys (${check.status}: ${check.message})` : "rejected";
        return disableKey(current, record.id, reason, now()).doc;
      }, setAccounts(doc, accounts)),
    );
    if (!result.ok) {
      io.err(`check-keys: could not record the results: ${result.message}`);
      recorded = false;
    }
  }
  if (json) {
    io.out(JSON.stringify({ keys: checks.map(({ record, check }) => ({ id: record.id, label: record.label ?? null, masked: maskKey(record.secret), ...checkJson(check) })) }, null, 2));
  } else {
    printTable(
      io,
      ["ID", "LABEL", "KEY", "RESULT", "LIMIT LEFT", "USAGE", "FREE TIER", "RATE LIMIT"],
      checks.map(({ record, check }) => [record.id, record.label ?? "-", maskKey(record.secret), ...checkColumns(check)]),
    );
    if (rejected.length > 0) io.out(`${rejected.length} key${rejected.length === 1 ? "" : "s"} rejected by the upstream and disabled`);
  }
  return rejected.length > 0 || !recorded ? 1 : 0;
}

function checkColumns(check: KeyCheck): string[] {
  switch (check.kind) {
    case "valid": {
      const { info } = check;
      const limit = info.limit === null || info.limit === undefined ? "unlimited" : `${info.limit_remaining ?? "?"} of ${info.limit}`;
      const rate = info.rate_limit ? `${info.rate_limit.requests ?? "?"}/${info.rate_limit.interval ?? "?"}` : "-";
      return ["valid", limit, info.usage === null || info.usage === undefined ? "-" : `$${info.usage}`, info.is_free_tier ? "yes" : "no", rate];
    }
    case "rejected":
      return [`rejected (${check.status}: ${check.message})`, "-", "-", "-", "-"];
    case "unknown":
      return [`unknown: ${check.reason}`, "-", "-", "-", "-"];
  }
}

function checkJson(check: KeyCheck): Record<string, unknown> {
  switch (check.kind) {
    case "valid":
      return { result: "valid", info: check.info };
    case "rejected":
      return { result: "rejected", status: check.status, message: check.message };
    case "unknown":
      return { result: "unknown", reason: check.reason };
  }
}
