/**
 * The client subcommands as a person runs them (child processes on a temporary KEYS_FILE):
 * add-client, list-clients, set-client, remove-client, rotate-client. Every output is scanned for
 * the pool's keys and for every client key printed (except the one line that prints it).
 */
import { expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { runCli } from "./helpers/cli.ts";
import { clientKeyShape, runKeyPrintingCli } from "./helpers/clients.ts";
import { useSuite } from "./helpers/suite.ts";
import { testKeys } from "./helpers/test-proxy.ts";

const secrets: string[] = [...testKeys];
const { log, folder } = useSuite({ secrets });

async function workspace() {
  const dir = await folder();
  const keysFile = join(dir, "keys.json");
  const env = { KEYS_FILE: keysFile };
  return {
    keysFile,
    cli: (args: string[]) => runCli(args, { cwd: dir, env, log }),
    keyCli: (args: string[]) => runKeyPrintingCli(args, { cwd: dir, env, log, secrets }),
    file: async () => JSON.parse(await readFile(keysFile, "utf8")) as { keys: unknown[]; clients: Record<string, Record<string, unknown>>; note?: string },
  };
}

const sha256 = (text: string) => createHash("sha256").update(text).digest("hex");

test("add-client prints a new sk-orp- key (32+ random bytes, base64url) once, and only its SHA-256 is stored", async () => {
  const ws = await workspace();
  const first = await ws.keyCli(["add-client", "alice"]);
  expect(first.code).toBe(0);
  expect(first.key).toMatch(clientKeyShape);
  expect(Buffer.from(first.key.slice("sk-orp-".length), "base64url").length).toBeGreaterThanOrEqual(32);
  expect(first.stderr).toContain("shown this once");
  const text = await readFile(ws.keysFile, "utf8");
  expect(text.includes(first.key)).toBe(false);
  expect(text.includes(first.key.slice("sk-orp-".length))).toBe(false);
  expect((await ws.file()).clients.alice?.keySha256).toBe(sha256(first.key));
  const second = await ws.keyCli(["add-client", "bob"]);
  expect(second.key).not.toBe(first.key);
  // Shown once: nothing afterwards prints it (the suite's scan checks every later output).
  const listed = await ws.cli(["list-clients", "--json"]);
  expect(listed.code).toBe(0);
});

test("add-client takes --models --rpm --rpd --tpm --usd-per-day --usd-per-month --expires; list-clients shows them", async () => {
  const ws = await workspace();
  const added = await ws.keyCli(["add-client", "app", "--models", "openai/*, *:free", "--rpm", "3", "--rpd", "100", "--tpm", "5000", "--usd-per-day", "0.5", "--usd-per-month", "10", "--expires", "2027-01-31"]);
  expect(added.code).toBe(0);
  const json = await ws.cli(["list-clients", "--json"]);
  const [view] = (JSON.parse(json.stdout) as { clients: Array<Record<string, unknown>> }).clients;
  expect(view).toMatchObject({
    name: "app",
    models: ["openai/*", "*:free"],
    limits: { rpm: 3, rpd: 100, tpm: 5000, usdPerDay: 0.5, usdPerMonth: 10 },
    expires: "2027-01-31T00:00:00.000Z",
    usage: { today: { requests: 0, tokens: 0, cost: 0 }, month: { requests: 0, tokens: 0, cost: 0 } },
    limited: null,
  });
  const table = await ws.cli(["list-clients"]);
  expect(table.stdout).toContain("NAME");
  expect(table.stdout).toMatch(/app\s+sk-orp-…\S{4}\s+openai\/\*,\*:free\s+0 of 3\s+0 of 100\s+0 of 5000/);
  expect(table.stdout).toContain("$0 of $10");
});

test("set-client changes a setting, --no-rpm lifts one, and the key stays", async () => {
  const ws = await workspace();
  const added = await ws.keyCli(["add-client", "alice", "--rpm", "3", "--tpm", "100"]);
  const changed = await ws.cli(["set-client", "alice", "--no-rpm", "--usd-per-month", "5"]);
  expect(changed.code).toBe(0);
  expect(changed.stderr).toContain("lifted --rpm");
  const entry = (await ws.file()).clients.alice as Record<string, unknown>;
  expect(entry.rpm).toBeUndefined();
  expect(entry.tpm).toBe(100);
  expect(entry.usdPerMonth).toBe(5);
  expect(entry.keySha256).toBe(sha256(added.key));
  const nothing = await ws.cli(["set-client", "alice"]);
  expect(nothing.code).toBe(2);
  expect(nothing.stderr).toContain("nothing to change");
});

test("rotate-client gives a new key and stores only its hash; remove-client drops the client", async () => {
  const ws = await workspace();
  const added = await ws.keyCli(["add-client", "alice", "--rpm", "7"]);
  const rotated = await ws.keyCli(["rotate-client", "alice"]);
  expect(rotated.code).toBe(0);
  expect(rotated.key).not.toBe(added.key);
  const entry = (await ws.file()).clients.alice as Record<string, unknown>;
  expect(entry.keySha256).toBe(sha256(rotated.key));
  expect(entry.rpm).toBe(7);
  const removed = await ws.cli(["remove-client", "alice"]);
  expect(removed.code).toBe(0);
  expect((await ws.file()).clients).toEqual({});
  const again = await ws.cli(["remove-client", "alice"]);
  expect(again.code).toBe(1);
  expect(again.stderr).toContain("no client named alice");
});

test("a client key pasted where a name belongs is never echoed back", async () => {
  const ws = await workspace();
  const added = await ws.keyCli(["add-client", "alice"]);
  for (const command of ["remove-client", "rotate-client", "set-client"]) {
    const result = await ws.cli(command === "set-client" ? [command, added.key, "--rpm", "1"] : [command, added.key]);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain("no client named sk-orp…");
  }
  const asName = await ws.cli(["add-client", added.key]);
  expect(asName.code).toBe(2);
  expect(asName.stderr).toContain("is not a client name");
});

test("bad flag values are usage errors that name the flag (exit 2) and change nothing", async () => {
  const ws = await workspace();
  for (const [flag, value, words] of [
    ["--rpm", "0", "rpm must be a whole number"],
    ["--tpm", "1.5", "tpm must be a whole number"],
    ["--usd-per-day", "-1", "usdPerDay must be an amount"],
    ["--expires", "next tuesday", "expires must be an ISO date"],
    ["--models", " , ", "at least one pattern"],
  ] as const) {
    const result = await ws.cli(["add-client", "x", flag, value]);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`${flag}: `);
    expect(result.stderr).toContain(words);
  }
  const both = await ws.cli(["set-client", "x", "--rpm", "2", "--no-rpm"]);
  expect(both.code).toBe(2);
  expect((await ws.cli(["list-clients"])).stdout).toContain("no clients");
});

test("the keys file keeps its keys and its other fields when clients change", async () => {
  const ws = await workspace();
  await writeFile(ws.keysFile, JSON.stringify({ note: "mine", keys: [{ key: testKeys[0], label: "main" }] }));
  expect((await ws.keyCli(["add-client", "alice"])).code).toBe(0);
  const file = await ws.file();
  expect(file.note).toBe("mine");
  expect(file.keys).toHaveLength(1);
  expect((await ws.cli(["list-keys"])).stdout).toContain("main");
});

test("a keys file that cannot be written: one line naming the file and the cause, exit 1, no key printed", async () => {
  const dir = await folder();
  const keysFile = join(dir, "missing-folder", "keys.json");
  const result = await runCli(["add-client", "alice"], { cwd: dir, env: { KEYS_FILE: keysFile }, log });
  expect(result.code).toBe(1);
  expect(result.stdout).toBe("");
  const lines = result.stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  expect(lines[0]).toStartWith("add-client: ");
  expect(lines[0]).toContain(keysFile);
  expect(lines[0]).toContain("nothing was changed");
});
