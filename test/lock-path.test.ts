/**
 * A lock path (`<keys file>.lock`) that no lock could be: a folder, a symbolic link (dangling or
 * not), a named pipe, a file that cannot be read. Waiting for it to be released would never end (a
 * server would spin on it, the CLI hang): each writer says so in one line instead.
 */
import { describe, expect, test } from "bun:test";
import { chmod, mkdir, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { runCli } from "./helpers/cli.ts";
import { chatCompletion } from "./helpers/fake-openrouter.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, testKeys } from "./helpers/test-proxy.ts";

const [keyA] = testKeys as [string];
const keyD = "sk-or-v1-test-dddddddddddddddddddddddddddddddddddddd";
const adminToken = "admin-token-lock-path-0123456789";
const { fake, log, cleanups, folder } = useSuite({ secrets: [...testKeys, keyD, adminToken], reply: () => chatCompletion("ok") });

const root = process.getuid?.() === 0;
/** Each broken lock path, how it is made, and what the line says about it. */
const cases: Array<[string, (lock: string) => Promise<void>, string, boolean]> = [
  ["a folder", (lock) => mkdir(lock), "is a folder, not a lock file: remove it", false],
  ["a dangling symbolic link", (lock) => symlink(join(lock, "..", "nowhere"), lock), "is a symbolic link, not a lock file: remove it", false],
  // Reading a named pipe waits for a writer that never comes.
  ["a named pipe", async (lock) => void (await Bun.spawn(["mkfifo", lock]).exited), "is a special file, not a lock file: remove it", false],
  // root reads any file, whatever its mode: there is nothing unreadable to show then.
  ["a file that cannot be read", async (lock) => (await writeFile(lock, "1\nhost\n"), await chmod(lock, 0o000)), "cannot be read (permission denied): remove it", root],
];

async function keysFileIn(dir: string): Promise<string> {
  const path = join(dir, "keys.json");
  await writeFile(path, JSON.stringify({ keys: [{ key: keyA }] }));
  return path;
}

describe.each(cases)("a lock path that is %s", (_what, make, says, skip) => {
  test.skipIf(skip)("the CLI exits 1 at once with one line naming the file and the lock", async () => {
    const dir = await folder();
    const keysFile = await keysFileIn(dir);
    await make(`${keysFile}.lock`);
    const started = performance.now();
    const { code, stdout, stderr } = await runCli(["add-key", "--no-verify", keyD], { cwd: dir, log, env: { KEYS_FILE: keysFile }, limitMs: 5000 });
    expect(performance.now() - started).toBeLessThan(3000);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr.trimEnd().split("\n")).toEqual([`add-key: cannot write ${keysFile}: its lock ${keysFile}.lock ${says}; nothing was changed`]);
  });

  test.skipIf(skip)("the admin API answers 500 keys_file_unwritable, and the server's background save reports it once and keeps serving from memory", async () => {
    const dir = await folder();
    const keysFile = await keysFileIn(dir);
    const problems: string[] = [];
    const proxy = await startTestProxy({
      upstream: fake.url,
      dir,
      keys: null,
      config: { ADMIN_TOKEN: adminToken },
      overrides: { storeRetryDelayMs: 20, onStoreError: (message) => problems.push(message) },
    });
    cleanups.push(() => proxy.stop(0));
    await make(`${keysFile}.lock`);

    const response = await fetch(`${proxy.url}/admin/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
      body: JSON.stringify({ key: keyD, verify: false }),
    });
    const body = (await response.json()) as unknown;
    log.record(JSON.stringify(body));
    expect(response.status).toBe(500);
    expect(body).toEqual({
      error: { message: `cannot change keys: cannot write ${keysFile}: its lock ${keysFile}.lock ${says}; nothing was changed`, type: "internal_error", code: "keys_file_unwritable" },
    });

    const chat = () =>
      fetch(`${proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer anything" },
        body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
      }).then(async (answer) => (log.record(await answer.text()), answer.status));
    expect(await chat()).toBe(200);
    await proxy.sync.flush(); // the save fails, and is tried again every 20 ms from now on
    expect(await chat()).toBe(200);
    const wallBefore = performance.now();
    const cpuBefore = process.cpuUsage();
    await Bun.sleep(500); // about 25 retries
    const cpu = process.cpuUsage(cpuBefore);
    const busy = (cpu.user + cpu.system) / 1000 / (performance.now() - wallBefore);
    expect(busy).toBeLessThan(0.5); // retries on a timer, never a spin (a spin keeps a core busy: 1)
    expect(problems).toEqual([`cannot write ${keysFile}: its lock ${keysFile}.lock ${says}; serving from memory and trying the save again every 1 s`]);
    expect(proxy.pool.records().map((record) => record.id)).toEqual([keyIdOf(keyA)]);
  });
});
