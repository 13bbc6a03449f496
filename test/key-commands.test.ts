/**
 * The key subcommands as a person runs them: `bun run src/main.ts add-key …` (and list-keys,
 * remove-key, enable-key, check-keys) in child processes against a temporary KEYS_FILE and the
 * fake upstream's `GET /key`; on a real terminal for the hidden prompt; and beside a server that
 * runs on the same file. Everything any child prints is scanned for the full key strings.
 */
import { describe, expect, test } from "bun:test";
import { readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { keyIdOf, maskKey } from "../src/domain/key-identity.ts";
import { cliCommand, hasScript, runCli, startInTerminal, unreachableUpstream, type CliResult } from "./helpers/cli.ts";

import { keyEndpoint } from "./helpers/key-endpoint.ts";
import { useSuite } from "./helpers/suite.ts";
import { eventually, startTestProxy, tempDir, testKeys } from "./helpers/test-proxy.ts";

const [keyA, keyB, keyC] = testKeys as [string, string, string];
const keyD = "sk-or-v1-test-dddddddddddddddddddddddddddddddddddddd";
const allKeys = [...testKeys, keyD];
const [idA, idB, idC, idD] = [keyA, keyB, keyC, keyD].map(keyIdOf) as [string, string, string, string];
const shown = (key: string) => `${keyIdOf(key)} (${maskKey(key)})`;

const { fake, log, cleanups } = useSuite({ secrets: allKeys });

interface Workspace {
  dir: string;
  keysFile: string;
  /** Runs a command with KEYS_FILE and OPENROUTER_BASE_URL pointing at this workspace and the fake. */
  cli(args: string[], options?: { stdin?: string; env?: Record<string, string> }): Promise<CliResult>;
}

async function workspace(): Promise<Workspace> {
  const { dir, cleanup } = await tempDir();
  cleanups.push(cleanup);
  const keysFile = join(dir, "keys.json");
  return {
    dir,
    keysFile,
    cli: (args, { stdin, env = {} } = {}) =>
      runCli(args, { cwd: dir, log, ...(stdin === undefined ? {} : { stdin }), env: { KEYS_FILE: keysFile, OPENROUTER_BASE_URL: fake.url, ...env } }),
  };
}

interface StoredEntry {
  key: string;
  id: string;
  label?: string;
  resetAt?: string;
  state: { cooldownUntil?: string; consecutiveFailures: number; disabled?: { reason: string }; requests: number; [name: string]: unknown };
}

async function stored(path: string): Promise<StoredEntry[]> {
  return (JSON.parse(await readFile(path, "utf8")) as { keys: StoredEntry[] }).keys;
}

const exists = (path: string) => stat(path).then(() => true, () => false);
const keyChecks = () => fake.requests.filter((request) => request.path === "/key" && request.method === "GET").map((request) => request.key);
/** The table's rows as cells (columns are separated by at least two spaces). */
const rows = (stdout: string) => stdout.trimEnd().split("\n").map((line) => line.split(/ {2,}/));
const isoIn = (ms: number) => new Date(Date.now() + ms).toISOString();

describe("add-key", () => {
  test("add-key KEY checks the key with GET /key, adds it with its label, and prints its id and masked form only", async () => {
    fake.reply(keyEndpoint(() => true));
    const ws = await workspace();
    const { code, stdout, stderr } = await ws.cli(["add-key", keyA, "--label", "main"]);
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
    expect(stdout).toBe(`added ${shown(keyA)} "main"\n`);
    expect(keyChecks()).toEqual([keyA]);
    expect(await stored(ws.keysFile)).toMatchObject([{ key: keyA, id: idA, label: "main" }]);
  });

  test("a key the upstream rejects is not added: exit 1, and the upstream's reason is printed", async () => {
    fake.reply(keyEndpoint(() => false));
    const ws = await workspace();
    const { code, stdout, stderr } = await ws.cli(["add-key", keyA]);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toBe(`not added: ${shown(keyA)}: the upstream rejected it (401: User not found.)\n`);
    expect(await exists(ws.keysFile)).toBe(false);
  });

  test("when the upstream cannot be reached the key is added with a warning", async () => {
    const ws = await workspace();
    const { code, stdout, stderr } = await ws.cli(["add-key", keyA], { env: { OPENROUTER_BASE_URL: await unreachableUpstream() } });
    expect(code).toBe(0);
    expect(stderr).toStartWith(`warning: could not verify ${shown(keyA)}: `);
    expect(stderr).toContain("could not be reached");
    expect(stderr).toEndWith("adding it anyway\n");
    expect(stdout).toBe(`added ${shown(keyA)}\n`);
    expect((await stored(ws.keysFile)).map((entry) => entry.key)).toEqual([keyA]);
  });

  test("--no-verify adds the key without asking the upstream", async () => {
    fake.reply(keyEndpoint(() => false));
    const ws = await workspace();
    const { code, stdout } = await ws.cli(["add-key", "--no-verify", keyA]);
    expect(code).toBe(0);
    expect(stdout).toBe(`added ${shown(keyA)}\n`);
    expect(keyChecks()).toEqual([]);
  });

  test("keys piped in are read one per line with optional labels (else --label); blank lines and # comments are skipped", async () => {
    fake.reply(keyEndpoint(() => true));
    const ws = await workspace();
    const input = `# team keys\n${keyA} main\n\n   ${keyB}\r\n${keyC} shared pool\n`;
    const { code, stdout, stderr } = await ws.cli(["add-key", "--label", "fallback"], { stdin: input });
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
    expect(stdout).toBe(`added ${shown(keyA)} "main"\nadded ${shown(keyB)} "fallback"\nadded ${shown(keyC)} "shared pool"\n`);
    expect(keyChecks().sort()).toEqual([keyA, keyB, keyC].sort());
    expect((await stored(ws.keysFile)).map(({ key, label }) => ({ key, label }))).toEqual([
      { key: keyA, label: "main" },
      { key: keyB, label: "fallback" },
      { key: keyC, label: "shared pool" },
    ]);
  });

  test("in a piped list a key the upstream rejects is skipped, the others are added, and the exit status is 1", async () => {
    fake.reply(keyEndpoint((key) => key !== keyB));
    const ws = await workspace();
    const { code, stdout, stderr } = await ws.cli(["add-key"], { stdin: `${keyA}\n${keyB}\n${keyC}\n` });
    expect(code).toBe(1);
    expect(stderr).toBe(`not added: ${shown(keyB)}: the upstream rejected it (401: User not found.)\n`);
    expect(stdout).toBe(`added ${shown(keyA)}\nadded ${shown(keyC)}\n`);
    expect((await stored(ws.keysFile)).map((entry) => entry.id)).toEqual([idA, idC]);
  });

  test("a key already present is reported and the file is left byte for byte as it was", async () => {
    const ws = await workspace();
    expect((await ws.cli(["add-key", keyA, "--no-verify", "--label", "first"])).code).toBe(0);
    const before = await readFile(ws.keysFile, "utf8");
    const { code, stdout } = await ws.cli(["add-key", keyA, "--no-verify", "--label", "second"]);
    expect(code).toBe(0);
    expect(stdout).toBe(`already present: ${shown(keyA)}; nothing changed\n`);
    expect(await readFile(ws.keysFile, "utf8")).toBe(before);
  });

  test("adding a disabled key again re-enables it: disabled, failures and cooldown are cleared, its counters kept", async () => {
    const ws = await workspace();
    await writeFile(
      ws.keysFile,
      JSON.stringify({
        keys: [
          {
            key: keyA,
            label: "tired",
            state: {
              disabled: { reason: "5 consecutive failures; last: 401", at: "2026-01-01T00:00:00.000Z" },
              consecutiveFailures: 5,
              cooldownUntil: isoIn(3_600_000),
              requests: 9,
            },
          },
        ],
      }),
    );
    const { code, stdout } = await ws.cli(["add-key", keyA, "--no-verify"]);
    expect(code).toBe(0);
    expect(stdout).toBe(`re-enabled ${shown(keyA)}: it was disabled; failures and cooldown cleared\n`);
    const [entry] = await stored(ws.keysFile);
    expect(entry?.state.disabled).toBeUndefined();
    expect(entry?.state.cooldownUntil).toBeUndefined();
    expect(entry?.state).toMatchObject({ consecutiveFailures: 0, requests: 9 });
    expect(entry?.label).toBe("tired");
    expect(entry?.resetAt).toBeString();
  });

  test("add-key with no key argument and nothing on stdin exits 2 and says how to give one", async () => {
    const ws = await workspace();
    const { code, stdout, stderr } = await ws.cli(["add-key"]);
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toBe("add-key: no key given: pass it as an argument, type it when asked, or pipe keys one per line\n");
    expect(await exists(ws.keysFile)).toBe(false);
  });

  test("a key with spaces in it is refused, and the keys file stays loadable", async () => {
    const ws = await workspace();
    expect((await ws.cli(["add-key", keyA, "--no-verify"])).code).toBe(0);
    const before = await readFile(ws.keysFile, "utf8");
    const { code, stderr } = await ws.cli(["add-key", `${keyB} oops`, "--no-verify"]);
    expect(code).toBe(1);
    expect(stderr).toContain("a key must not contain spaces");
    expect(await readFile(ws.keysFile, "utf8")).toBe(before);
    expect((await ws.cli(["list-keys"])).code).toBe(0);
  });
});

describe.skipIf(!hasScript)("add-key on a terminal", () => {
  test("the terminal harness shows what is typed to a program that does not hide it (so the checks below can see an echo)", async () => {
    const ws = await workspace();
    const child = startInTerminal(["sh", "-c", "read -r line"], { cwd: ws.dir, log });
    child.type("typed-in-the-open\r");
    expect(await child.exited).toBe(0);
    expect(child.screen()).toContain("typed-in-the-open");
  });

  test("without KEY on a terminal add-key asks with hidden input: the typed key is verified and added, and never shown", async () => {
    fake.reply(keyEndpoint(() => true));
    const ws = await workspace();
    const child = startInTerminal(cliCommand(["add-key", "--label", "typed"]), {
      cwd: ws.dir,
      env: { KEYS_FILE: ws.keysFile, OPENROUTER_BASE_URL: fake.url },
      log,
    });
    await child.waitFor(/OpenRouter API key \(input hidden\): /);
    child.type(`${keyD}\r`);
    expect(await child.exited).toBe(0);
    const screen = child.screen();
    expect(screen).toContain(`added ${shown(keyD)} "typed"`);
    // Neither the key nor the part the mask hides appears: the terminal did not echo it.
    expect(screen.includes(keyD)).toBe(false);
    expect(screen.includes(keyD.slice(12, -4))).toBe(false);
    expect(keyChecks()).toEqual([keyD]);
    expect(await stored(ws.keysFile)).toMatchObject([{ key: keyD, id: idD, label: "typed" }]);
  });

  test("Ctrl-C at the hidden prompt adds nothing and exits 130 with one line", async () => {
    const ws = await workspace();
    const child = startInTerminal(cliCommand(["add-key", "--no-verify"]), { cwd: ws.dir, env: { KEYS_FILE: ws.keysFile }, log });
    await child.waitFor(/input hidden\): /);
    child.type("sk-or-v1-half-typed\u0003");
    expect(await child.exited).toBe(130);
    expect(child.screen()).toContain("add-key: cancelled; nothing was added");
    expect(child.screen()).not.toContain("half-typed");
    expect(await exists(ws.keysFile)).toBe(false);
  });
});

describe("list-keys", () => {
  const cooling = isoIn(3_600_000);
  const fileText = () =>
    JSON.stringify({
      keys: [
        {
          key: keyA,
          label: "main",
          state: { requests: 7, successes: 6, failures: 1, consecutiveFailures: 1, lastUsedAt: "2026-01-02T03:04:05.000Z" },
        },
        { key: keyB, label: "spare", state: { cooldownUntil: cooling, cooldownSource: "header", cooldownReason: "Rate limit exceeded", requests: 3 } },
        { key: keyC, state: { disabled: { reason: "5 consecutive failures; last: 401 User not found.", at: "2026-01-03T00:00:00.000Z" }, consecutiveFailures: 5 } },
      ],
    });

  test("list-keys prints id, label, masked key, status (active / cooling down until when / disabled and why), failures, last used and requests", async () => {
    const ws = await workspace();
    await writeFile(ws.keysFile, fileText());
    const { code, stdout } = await ws.cli(["list-keys"]);
    expect(code).toBe(0);
    expect(rows(stdout)).toEqual([
      ["ID", "LABEL", "KEY", "ACCOUNT", "STATUS", "FAILURES", "LAST USED", "REQUESTS"],
      [idA, "main", maskKey(keyA), "-", "active", "1", "2026-01-02T03:04:05.000Z", "7"],
      [idB, "spare", maskKey(keyB), "-", `cooling down until ${cooling} (Rate limit exceeded)`, "0", "never", "3"],
      [idC, "-", maskKey(keyC), "-", "disabled: 5 consecutive failures; last: 401 User not found.", "5", "never", "0"],
      [""],
      ["ACCOUNT", "KEYS", "FREE REQUESTS TODAY", "RESTING"],
      [`key:${idA}`, idA, "0", "-"],
      [`key:${idB}`, idB, "0", "-"],
      [`key:${idC}`, idC, "0", "-"],
    ]);
  });

  test("list-keys --json gives the same facts as fields", async () => {
    const ws = await workspace();
    await writeFile(ws.keysFile, fileText());
    const { code, stdout } = await ws.cli(["list-keys", "--json"]);
    expect(code).toBe(0);
    const { keys } = JSON.parse(stdout) as { keys: Array<Record<string, unknown>> };
    expect(keys).toMatchObject([
      { id: idA, label: "main", masked: maskKey(keyA), status: "active", cooldownUntil: null, consecutiveFailures: 1, lastUsedAt: "2026-01-02T03:04:05.000Z", requests: 7 },
      { id: idB, label: "spare", status: "cooling", cooldownUntil: cooling, cooldownReason: "Rate limit exceeded", requests: 3 },
      { id: idC, label: null, status: "disabled", disabledReason: "5 consecutive failures; last: 401 User not found.", consecutiveFailures: 5, lastUsedAt: null },
    ]);
  });

  test("list-keys without a keys file says there are none and how to add one", async () => {
    const ws = await workspace();
    const { code, stdout } = await ws.cli(["list-keys"]);
    expect(code).toBe(0);
    expect(stdout).toBe(`no keys in ${ws.keysFile}: add one with \`openrouter-proxy add-key\`\n`);
  });
});

describe("remove-key and enable-key", () => {
  test("remove-key ID removes that key only and prints its id and masked form", async () => {
    const ws = await workspace();
    await writeFile(ws.keysFile, JSON.stringify([keyA, keyB]));
    const { code, stdout } = await ws.cli(["remove-key", idA]);
    expect(code).toBe(0);
    expect(stdout).toBe(`removed ${shown(keyA)}\n`);
    expect((await stored(ws.keysFile)).map((entry) => entry.id)).toEqual([idB]);
  });

  test("enable-key ID clears the key's disabled mark, failures and cooldown", async () => {
    const ws = await workspace();
    await writeFile(
      ws.keysFile,
      JSON.stringify({
        keys: [{ key: keyA, state: { disabled: { reason: "rejected by check-keys", at: "2026-01-01T00:00:00.000Z" }, consecutiveFailures: 4, cooldownUntil: isoIn(3_600_000), requests: 2 } }],
      }),
    );
    const { code, stdout } = await ws.cli(["enable-key", idA]);
    expect(code).toBe(0);
    expect(stdout).toBe(`enabled ${shown(keyA)}: failures and cooldown cleared; no account rests to clear\n`);
    const [entry] = await stored(ws.keysFile);
    expect(entry?.state.disabled).toBeUndefined();
    expect(entry?.state.cooldownUntil).toBeUndefined();
    expect(entry?.state).toMatchObject({ consecutiveFailures: 0, requests: 2 });
  });

  test.each(["remove-key", "enable-key"])("%s with an unknown id exits 1, changes nothing, and says where the ids are", async (command) => {
    const ws = await workspace();
    await writeFile(ws.keysFile, JSON.stringify([keyA]));
    const { code, stdout, stderr } = await ws.cli([command, "k_0000000000"]);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toBe(`${command}: no key with id k_0000000000; \`openrouter-proxy list-keys\` shows the ids\n`);
    expect(await readFile(ws.keysFile, "utf8")).toBe(JSON.stringify([keyA]));
  });
});

describe("check-keys", () => {
  test("check-keys asks the upstream about every key, prints limit, usage, free tier and rate limit, and disables the rejected ones (exit 1)", async () => {
    fake.reply(keyEndpoint((key) => key !== keyB));
    const ws = await workspace();
    await writeFile(ws.keysFile, JSON.stringify({ keys: [{ key: keyA, label: "main" }, { key: keyB }] }));
    const { code, stdout } = await ws.cli(["check-keys"]);
    expect(code).toBe(1);
    expect(keyChecks().sort()).toEqual([keyA, keyB].sort());
    expect(rows(stdout)).toEqual([
      ["ID", "LABEL", "KEY", "RESULT", "LIMIT LEFT", "USAGE", "FREE TIER", "RATE LIMIT"],
      [idA, "main", maskKey(keyA), "valid", "7.5 of 10", "$2.5", "no", "20/10s"],
      [idB, "-", maskKey(keyB), "rejected (401: User not found.)", "-", "-", "-", "-"],
      ["1 key rejected by the upstream and disabled"],
    ]);
    const [entryA, entryB] = await stored(ws.keysFile);
    expect(entryA?.state.disabled).toBeUndefined();
    expect(entryB?.state.disabled?.reason).toBe("rejected by check-keys (401: User not found.)");
  });

  test("check-keys --json reports each key's result and what the upstream said; all valid exits 0, disables nothing and records each key's account", async () => {
    fake.reply(keyEndpoint(() => true));
    const ws = await workspace();
    await writeFile(ws.keysFile, JSON.stringify([keyA, keyB]));
    const { code, stdout } = await ws.cli(["check-keys", "--json"]);
    expect(code).toBe(0);
    const { keys } = JSON.parse(stdout) as { keys: unknown[] };
    expect(keys).toEqual([
      { id: idA, label: null, masked: maskKey(keyA), result: "valid", info: expect.objectContaining({ limit: 10, limit_remaining: 7.5, usage: 2.5, is_free_tier: false, rate_limit: { requests: 20, interval: "10s" } }) },
      { id: idB, label: null, masked: maskKey(keyB), result: "valid", info: expect.objectContaining({ limit: 10 }) },
    ]);
    const saved = JSON.parse(await readFile(ws.keysFile, "utf8")) as { keys: Array<{ key: string; account?: string; state: { disabled?: unknown } }> };
    expect(saved.keys.map((entry) => [entry.key, entry.account, entry.state.disabled])).toEqual([
      [keyA, "user_abc", undefined],
      [keyB, "user_abc", undefined],
    ]);
  });

  test("check-keys when the upstream cannot be reached reports each key as unknown and disables nothing", async () => {
    const ws = await workspace();
    await writeFile(ws.keysFile, JSON.stringify([keyA]));
    const { code, stdout } = await ws.cli(["check-keys"], { env: { OPENROUTER_BASE_URL: await unreachableUpstream() } });
    expect(code).toBe(0);
    expect(rows(stdout)[1]?.[3]).toStartWith("unknown: ");
    expect(await readFile(ws.keysFile, "utf8")).toBe(JSON.stringify([keyA]));
  });
});

describe("help and usage", () => {
  test.each(["add-key", "list-keys", "remove-key", "enable-key", "check-keys"])("help %s prints that command's usage and exits 0", async (command) => {
    const ws = await workspace();
    const { code, stdout, stderr } = await ws.cli(["help", command]);
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
    expect(stdout).toStartWith(`Usage: openrouter-proxy ${command}`);
  });

  test.each([
    [[keyA], `unknown command ${maskKey(keyA)}`],
    [["help", keyA], `unknown command ${maskKey(keyA)}`],
    [["add-key", keyA, keyB], `add-key takes 0 to 1 arguments (got ${maskKey(keyA)} ${maskKey(keyB)})`],
  ])("a key typed where a command belongs comes back masked in the error, never in full (%#)", async (args, problem) => {
    const ws = await workspace();
    const { code, stderr } = await ws.cli(args);
    expect(code).toBe(2);
    expect(stderr).toStartWith(`openrouter-proxy: ${problem}\n`);
  });

  test.each(["remove-key", "enable-key"])("%s given the key itself instead of its id says so with the key masked, never in full", async (command) => {
    const ws = await workspace();
    await writeFile(ws.keysFile, JSON.stringify([keyA]));
    const { code, stderr } = await ws.cli([command, keyA]);
    expect(code).toBe(1);
    expect(stderr).toStartWith(`${command}: no key with id ${maskKey(keyA)};`);
  });

  test("add-key --help prints add-key's usage and touches no keys", async () => {
    const ws = await workspace();
    const { code, stdout } = await ws.cli(["add-key", "--help", keyA]);
    expect(code).toBe(0);
    expect(stdout).toStartWith("Usage: openrouter-proxy add-key [KEY] [--label NAME] [--no-verify]");
    expect(await exists(ws.keysFile)).toBe(false);
  });

  test.each([
    [["list-keys", "--label", "x"], "list-keys does not take --label"],
    [["add-key", "--lable", "x"], "unknown option --lable"],
    [["add-key", "--label"], "--label needs a value"],
    [["add-key", "one", "two"], "add-key takes 0 to 1 arguments (got one two)"],
    [["remove-key"], "remove-key takes 1 argument (got none)"],
    [["check-keys", "now"], "check-keys takes no arguments"],
  ])("%p prints what is wrong and the usage, and exits 2", async (args, problem) => {
    const ws = await workspace();
    const { code, stdout, stderr } = await ws.cli(args);
    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toStartWith(`openrouter-proxy: ${problem}`);
    expect(stderr).toContain("Usage:");
    expect(await exists(ws.keysFile)).toBe(false);
  });
});

describe("beside a running server", () => {
  test("add-key, check-keys, enable-key and remove-key on the server's KEYS_FILE each reach the server's rotation within a second", async () => {
    fake.reply(keyEndpoint((key) => key !== keyA));
    const ws = await workspace();
    const proxy = await startTestProxy({ upstream: fake.url, keys: [keyA], dir: ws.dir });
    cleanups.push(() => proxy.close());
    const record = (id: string) => proxy.pool.records().find((candidate) => candidate.id === id);
    const withinASecond = (what: string, predicate: () => boolean) => eventually(predicate, { timeoutMs: 1000, what });

    expect((await ws.cli(["add-key", keyD, "--no-verify", "--label", "late"])).code).toBe(0);
    await withinASecond("the added key in the pool", () => record(idD)?.label === "late");

    expect((await ws.cli(["check-keys"])).code).toBe(1);
    await withinASecond("the rejected key disabled in the pool", () => record(idA)?.disabled?.reason.startsWith("rejected by check-keys") === true);
    expect(proxy.pool.availability()).toMatchObject({ total: 2, available: 1, disabled: 1 });

    expect((await ws.cli(["enable-key", idA])).code).toBe(0);
    await withinASecond("the enabled key active in the pool", () => record(idA)?.disabled === undefined);

    expect((await ws.cli(["remove-key", idD])).code).toBe(0);
    await withinASecond("the removed key gone from the pool", () => record(idD) === undefined);
    expect(proxy.pool.records().map((candidate) => candidate.id)).toEqual([idA]);
  });
});
