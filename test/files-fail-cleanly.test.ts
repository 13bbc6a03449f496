/**
 * Issue 11 point 5, "files fail cleanly": what the keys file store, the key commands, the admin
 * API and the server do when the disk says no. A real tmpfs of 64 KiB (filled to the last byte,
 * or remounted read-only) stands in for a full or read-only disk; `/nodir/keys.json` for a folder
 * that does not exist; real child processes show what a person sees (stderr, exit status).
 * Tests that need a mount skip, with the reason printed, where the machine does not allow one.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { lstat, mkdir, readFile, readdir, readlink, stat, symlink, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { createJsonFileStore } from "../src/store/file/json-file-store.ts";
import { keyIdOf } from "../src/domain/key-identity.ts";
import type { KeyStore, StoreFailure } from "../src/store/ports.ts";
import { newKeyRecord, type KeyFileDocument } from "../src/keys/schema.ts";
import { runCli } from "./helpers/cli.ts";
import { chatCompletion } from "./helpers/fake-openrouter.ts";
import { keyEndpoint } from "./helpers/key-endpoint.ts";
import { killAllProxies, startProxyProcess } from "./helpers/proxy-process.ts";
import { filesIn, openHandlesUnder, smallDisk, whyNoSmallDisk } from "./helpers/small-disk.ts";
import { useSuite } from "./helpers/suite.ts";
import { eventually, startTestProxy, testKeys, type TestProxy, type TestProxyOptions } from "./helpers/test-proxy.ts";

const [keyA, keyB, keyC] = testKeys as [string, string, string];
const keyD = "sk-or-v1-test-dddddddddddddddddddddddddddddddddddddd";
const [idA, idB] = [keyIdOf(keyA), keyIdOf(keyB)];
const adminToken = "admin-token-files-0123456789";
const secrets = [...testKeys, keyD, adminToken];

const { fake, log, cleanups, folder } = useSuite({ secrets, reply: keyEndpoint(() => true, () => chatCompletion("hello")) });
afterAll(() => killAllProxies());

const noDisk = await whyNoSmallDisk();
if (noDisk) console.warn(`files-fail-cleanly: skipping the tmpfs tests: ${noDisk}`);

const addKeyB = (doc: KeyFileDocument): KeyFileDocument => ({ ...doc, records: [...doc.records, newKeyRecord(keyB, Date.now())] });
/** The keys in a keys file, in either of its forms (a bare list, or `{"keys":[…]}` as the store writes it). */
async function storedKeys(path: string): Promise<string[]> {
  const file = JSON.parse(await readFile(path, "utf8")) as string[] | { keys: Array<{ key: string }> };
  return Array.isArray(file) ? file : file.keys.map((entry) => entry.key);
}

/** What a person must see for a condition they caused: one line, no stack frames. */
function expectOneLine(stderr: string): string {
  const text = stderr.trimEnd();
  expect(text.split("\n")).toHaveLength(1);
  expect(text).not.toMatch(/^\s+at /m);
  expect(text).not.toMatch(/\bat .+:\d+:\d+\)?$/m);
  return text;
}

async function chat(proxy: TestProxy): Promise<Response> {
  const response = await fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer anything" },
    body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
  });
  log.record(await response.clone().text());
  return response;
}

async function startOn(dir: string, options: Partial<TestProxyOptions> = {}): Promise<TestProxy> {
  const logDir = await folder(); // the logs go elsewhere: a full or read-only disk is for the keys file alone
  const proxy = await startTestProxy({ upstream: fake.url, dir, keys: [keyA, keyB], ...options, config: { ADMIN_TOKEN: adminToken, LOG_DIR: logDir, ...options.config } });
  cleanups.push(() => proxy.close());
  return proxy;
}

describe("a failed save removes its temp file and its lock", () => {
  test.skipIf(noDisk !== undefined)(
    "a failed save removes its temp file and its lock and closes their handles: a disk full to the last byte, and one with room for the lock only",
    async () => {
      const disk = await smallDisk(cleanups);
      const path = join(disk.dir, "keys.json");
      const original = JSON.stringify({ keys: [{ key: keyA }] });
      await writeFile(path, original);
      const store = createJsonFileStore({ path });
      // No room at all: the lock's own write fails. One page: the lock is written, the new file is not.
      for (const leavePages of [0, 1]) {
        await disk.fill(leavePages);
        for (let i = 0; i < 5; i++) {
          expect(await store.update(addKeyB)).toEqual({ ok: false, kind: "io", message: `cannot write ${path}: no space left on the device` });
        }
        expect(await filesIn(disk.dir)).toEqual(["keys.json"]);
        expect(await openHandlesUnder(disk.dir)).toEqual([]);
        expect(await readFile(path, "utf8")).toBe(original);
        await disk.free();
      }
      expect((await store.update(addKeyB)).ok).toBe(true);
      expect(await storedKeys(path)).toEqual([keyA, keyB]);
      expect(await filesIn(disk.dir)).toEqual(["keys.json"]);
    },
  );

  test.skipIf(noDisk !== undefined)("a failed save on a read-only file system leaves the file as it was and nothing beside it", async () => {
    const disk = await smallDisk(cleanups);
    const path = join(disk.dir, "keys.json");
    const original = JSON.stringify({ keys: [{ key: keyA }] });
    await writeFile(path, original);
    await disk.readOnly();
    const store = createJsonFileStore({ path });
    expect(await store.update(addKeyB)).toEqual({ ok: false, kind: "io", message: `cannot write ${path}: the file system is read-only` });
    expect(await openHandlesUnder(disk.dir)).toEqual([]);
    expect((await store.load()).ok).toBe(true); // reading still works
    await disk.writable();
    expect(await filesIn(disk.dir)).toEqual(["keys.json"]);
    expect(await readFile(path, "utf8")).toBe(original);
  });
});

describe("a lock whose owner process is gone is taken over at once", () => {
  async function keysFileIn(): Promise<{ dir: string; path: string; lock: string }> {
    const dir = await folder();
    const path = join(dir, "keys.json");
    await writeFile(path, JSON.stringify([keyA]));
    return { dir, path, lock: `${path}.lock` };
  }

  test("a lock file naming a dead pid on this host is taken over at once, not after the stale-lock timeout", async () => {
    const { dir, path, lock } = await keysFileIn();
    const ended = Bun.spawn(["true"]);
    await ended.exited;
    await writeFile(lock, `${ended.pid}\n${hostname()}\n`); // fresh: the age rule alone would wait a minute
    const started = performance.now();
    const result = await createJsonFileStore({ path, staleLockMs: 60_000 }).update(addKeyB);
    expect(result.ok).toBe(true);
    expect(performance.now() - started).toBeLessThan(1000);
    expect(await storedKeys(path)).toEqual([keyA, keyB]);
    expect(await readdir(dir)).toEqual(["keys.json"]);
  });

  test("a lock held by a live process on this host is waited for, and taken once that process is gone", async () => {
    const { path, lock } = await keysFileIn();
    const owner = Bun.spawn(["sleep", "30"]);
    cleanups.push(async () => void owner.kill());
    await writeFile(lock, `${owner.pid}\n${hostname()}\n`);
    let settled = false;
    const pending = createJsonFileStore({ path, staleLockMs: 60_000 }).update(addKeyB).finally(() => (settled = true));
    await Bun.sleep(300); // several rounds of the waiter's polling (at most 50 ms apart)
    expect(settled).toBe(false);
    expect(await storedKeys(path)).toEqual([keyA]);
    owner.kill();
    await owner.exited;
    expect((await pending).ok).toBe(true);
    expect(await storedKeys(path)).toEqual([keyA, keyB]);
  });

  test("a lock from another host is not judged by its pid: it is broken only once it is stale", async () => {
    const { path, lock } = await keysFileIn();
    const ended = Bun.spawn(["true"]);
    await ended.exited;
    await writeFile(lock, `${ended.pid}\nsome-other-host.example\n`);
    const started = performance.now();
    expect((await createJsonFileStore({ path, staleLockMs: 400 }).update(addKeyB)).ok).toBe(true);
    expect(performance.now() - started).toBeGreaterThanOrEqual(400);
  });

  test("two stores waiting on the same dead lock both get their turn, and neither removes the lock the other took", async () => {
    const { dir, path, lock } = await keysFileIn();
    const ended = Bun.spawn(["true"]);
    await ended.exited;
    await writeFile(lock, `${ended.pid}\n${hostname()}\n`);
    const stores = [createJsonFileStore({ path, staleLockMs: 60_000 }), createJsonFileStore({ path, staleLockMs: 60_000 })];
    const keyNumber = (i: number) => `sk-or-v1-dead-lock-${String(i).padStart(2, "0")}-${"x".repeat(30)}`;
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        (stores[i % 2] as KeyStore).update((doc) => ({ ...doc, records: [...doc.records, newKeyRecord(keyNumber(i), Date.now())] })),
      ),
    );
    expect(results.every((result) => result.ok)).toBe(true);
    const stored = await storedKeys(path);
    expect(stored.filter((key) => key !== keyA).sort()).toEqual(Array.from({ length: 20 }, (_, i) => keyNumber(i)));
    expect(await readdir(dir)).toEqual(["keys.json"]);
  });
});

describe("a symlinked KEYS_FILE stays a symlink; its target is what changes", () => {
  test("a symlinked KEYS_FILE stays a symlink and its target gets the new key, through a chain of relative links too", async () => {
    const home = await folder();
    await mkdir(join(home, "config"));
    await mkdir(join(home, "dotfiles"));
    const target = join(home, "dotfiles", "keys.json");
    await writeFile(target, JSON.stringify({ keys: [{ key: keyA, label: "main" }] }));
    const middle = join(home, "dotfiles", "current.json");
    await symlink("keys.json", middle); // relative, resolved from its own folder
    const link = join(home, "config", "keys.json");
    await symlink("../dotfiles/current.json", link);

    const result = await createJsonFileStore({ path: link }).update(addKeyB);
    expect(result.ok).toBe(true);
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect(await readlink(link)).toBe("../dotfiles/current.json");
    expect((await lstat(middle)).isSymbolicLink()).toBe(true);
    expect(await storedKeys(target)).toEqual([keyA, keyB]);
    expect((await stat(target)).mode & 0o777).toBe(0o600);
    expect(await readdir(join(home, "config"))).toEqual(["keys.json"]);
    expect((await readdir(join(home, "dotfiles"))).sort()).toEqual(["current.json", "keys.json"]);
  });

  test("a write through the link takes the lock next to the target, the same lock a writer of the target takes", async () => {
    const home = await folder();
    const target = join(home, "target.json");
    const link = join(home, "link.json");
    await writeFile(target, "[]");
    await symlink(target, link);
    const locksSeen: string[][] = [];
    const result = await createJsonFileStore({ path: link }).update((doc) => {
      // runs under the lock
      locksSeen.push([`${target}.lock`, `${link}.lock`].filter((path) => existsSync(path)));
      return addKeyB(doc);
    });
    expect(result.ok).toBe(true);
    expect(locksSeen).toEqual([[`${target}.lock`]]);
    expect((await readdir(home)).sort()).toEqual(["link.json", "target.json"]);
  });

  test("add-key through a symlinked KEYS_FILE whose target does not exist yet creates the target and keeps the link", async () => {
    const home = await folder();
    await mkdir(join(home, "secrets"));
    const target = join(home, "secrets", "keys.json");
    const link = join(home, "keys.json");
    await symlink(target, link);
    const { code, stderr } = await runCli(["add-key", "--no-verify", keyD], { cwd: home, log, env: { KEYS_FILE: link } });
    expect({ code, stderr }).toEqual({ code: 0, stderr: "" });
    expect((await lstat(link)).isSymbolicLink()).toBe(true);
    expect(await storedKeys(target)).toEqual([keyD]);
    expect(await readdir(join(home, "secrets"))).toEqual(["keys.json"]);
  });

  test("the running server's saves go through a symlinked KEYS_FILE to its target", async () => {
    const home = await folder();
    await mkdir(join(home, "real"));
    const target = join(home, "real", "keys.json");
    await writeFile(target, JSON.stringify({ keys: [{ key: keyA }] }));
    await symlink(target, join(home, "keys.json"));
    const proxy = await startOn(home, { keys: null });
    expect((await chat(proxy)).status).toBe(200);
    await proxy.sync.flush();
    expect((await lstat(proxy.keysFile)).isSymbolicLink()).toBe(true);
    const [entry] = (JSON.parse(await readFile(target, "utf8")) as { keys: Array<{ state?: { requests?: number } }> }).keys;
    expect(entry?.state?.requests).toBe(1);
    expect(await readdir(join(home, "real"))).toEqual(["keys.json", "keys.json.server"]); // the running server's claim on the file
  });
});

describe("a read-only or missing folder gives a one-line error naming the file and the cause", () => {
  const missing = "/nodir/keys.json";
  const keyCommands: string[][] = [["add-key", "--no-verify", keyD], ["remove-key", idA], ["enable-key", idA], ["check-keys"], ["list-keys"]];

  test.each(keyCommands)("KEYS_FILE=/nodir/keys.json: %s exits 1 with one line naming the file and the missing folder, no stack trace", async (...args) => {
    expect(existsSync("/nodir")).toBe(false);
    const cwd = await folder();
    const { code, stdout, stderr } = await runCli(args, { cwd, log, env: { KEYS_FILE: missing, OPENROUTER_BASE_URL: fake.url } });
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(expectOneLine(stderr)).toBe(`${args[0]}: cannot ${args[0] === "add-key" || args[0] === "remove-key" || args[0] === "enable-key" ? "write" : "read"} ${missing}: the folder /nodir does not exist${args[0] === "list-keys" || args[0] === "check-keys" ? "" : "; nothing was changed"}`);
    expect(existsSync("/nodir")).toBe(false);
  });

  test.each<string[]>([["add-client", "team-a"], ["list-clients"]])("KEYS_FILE=/nodir/keys.json: %s exits 1 with one line naming the file and the missing folder, no stack trace", async (...args) => {
    const cwd = await folder();
    const { code, stdout, stderr } = await runCli(args, { cwd, log, env: { KEYS_FILE: missing } });
    expect({ code, stdout }).toEqual({ code: 1, stdout: "" });
    const verb = args[0] === "add-client" ? "write" : "read";
    expect(expectOneLine(stderr)).toBe(`${args[0]}: cannot ${verb} ${missing}: the folder /nodir does not exist${verb === "write" ? "; nothing was changed" : ""}`);
  });

  test("store operations return failures as values and never throw: a missing folder, and a KEYS_FILE that is a folder", async () => {
    const cwd = await folder();
    await mkdir(join(cwd, "keys.json"));
    const cases: Array<[string, string]> = [
      [missing, "the folder /nodir does not exist"],
      [join(cwd, "keys.json"), "it is a folder, not a file"],
    ];
    for (const [path, cause] of cases) {
      const store = createJsonFileStore({ path });
      expect(await store.load()).toEqual({ ok: false, kind: "io", message: `cannot read ${path}: ${cause}` });
      const verb = path === missing ? "write" : "read"; // a folder in the way is found when the store reads what is there
      const failed: StoreFailure = { ok: false, kind: "io", message: `cannot ${verb} ${path}: ${cause}` };
      expect(await store.update(addKeyB)).toEqual(failed);
    }
    expect(await readdir(cwd)).toEqual(["keys.json"]);
  });

  test("a .env that cannot be read (a folder of that name) exits 2 with one line naming it, for serve and the key commands alike", async () => {
    const cwd = await folder();
    await mkdir(join(cwd, ".env"));
    for (const args of [["list-keys"], ["serve", "--port", "0"]]) {
      const { code, stdout, stderr } = await runCli(args, { cwd, log, env: { KEYS_FILE: join(cwd, "keys.json") } });
      expect({ code, stdout }).toEqual({ code: 2, stdout: "" });
      expect(expectOneLine(stderr)).toBe("openrouter-proxy: cannot read .env: it is a folder, not a file");
    }
  });

  test("KEYS_FILE=/nodir/keys.json: serve exits 2 with one line naming the file and the missing folder", async () => {
    const cwd = await folder();
    const { code, stdout, stderr } = await runCli(["serve", "--port", "0"], { cwd, log, env: { KEYS_FILE: missing, OPENROUTER_BASE_URL: fake.url } });
    expect({ code, stdout }).toEqual({ code: 2, stdout: "" });
    expect(expectOneLine(stderr)).toBe(`openrouter-proxy: cannot read ${missing}: the folder /nodir does not exist`);
  });

  test("a KEYS_FILE that is a folder: list-keys and add-key exit 1 with one line saying so", async () => {
    const cwd = await folder();
    const keysFile = join(cwd, "keys.json");
    await mkdir(keysFile);
    for (const args of [["list-keys"], ["add-key", "--no-verify", keyD]]) {
      const { code, stderr } = await runCli(args, { cwd, log, env: { KEYS_FILE: keysFile } });
      expect(code).toBe(1);
      expect(expectOneLine(stderr)).toContain(`${keysFile}: it is a folder, not a file`);
    }
  });

  test.skipIf(noDisk !== undefined)(
    "a read-only keys folder: add-key, remove-key, enable-key and check-keys each exit 1 with one line naming the file and the cause, no stack trace",
    async () => {
      const disk = await smallDisk(cleanups);
      const keysFile = join(disk.dir, "keys.json");
      const original = JSON.stringify({ keys: [{ key: keyA }, { key: keyB }] });
      await writeFile(keysFile, original);
      await disk.readOnly();
      const cwd = await folder();
      const cause = `cannot write ${keysFile}: the file system is read-only`;
      const expected: Array<[string[], string]> = [
        [["add-key", "--no-verify", keyD], `add-key: ${cause}; nothing was changed`],
        [["add-key", keyD], `add-key: ${cause}; nothing was changed`], // verified first, then refused by the disk
        [["remove-key", idA], `remove-key: ${cause}; nothing was changed`],
        [["enable-key", idB], `enable-key: ${cause}; nothing was changed`],
        [["check-keys"], `check-keys: could not record the results: ${cause}`], // each key's account is to be recorded
      ];
      for (const [args, line] of expected) {
        const { code, stderr } = await runCli(args, { cwd, log, env: { KEYS_FILE: keysFile, OPENROUTER_BASE_URL: fake.url } });
        expect({ args, code, stderr: expectOneLine(stderr) }).toEqual({ args, code: 1, stderr: line });
      }
      const listed = await runCli(["list-keys"], { cwd, log, env: { KEYS_FILE: keysFile } });
      expect(listed.code).toBe(0); // reading still works
      expect(await readFile(keysFile, "utf8")).toBe(original);
    },
  );
});

describe("the admin API on a keys file it cannot write", () => {
  const admin = async (proxy: TestProxy, method: string, path: string, body?: unknown) => {
    const response = await fetch(`${proxy.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await response.text();
    log.record(text);
    return { status: response.status, body: JSON.parse(text || "null") as unknown };
  };

  test.skipIf(noDisk !== undefined)(
    "a read-only keys folder: POST, DELETE and enable answer 500 keys_file_unwritable, OpenAI-shaped, and the server keeps serving",
    async () => {
      const disk = await smallDisk(cleanups);
      const proxy = await startOn(disk.dir);
      await disk.readOnly();
      const message = `cannot change keys: cannot write ${proxy.keysFile}: the file system is read-only; nothing was changed`;
      const unwritable = { status: 500, body: { error: { message, type: "internal_error", code: "keys_file_unwritable" } } };
      expect(await admin(proxy, "POST", "/admin/keys", { key: keyD, verify: false })).toEqual(unwritable);
      expect(await admin(proxy, "POST", "/admin/keys", { key: keyC })).toEqual(unwritable);
      expect(await admin(proxy, "DELETE", `/admin/keys/${idA}`)).toEqual(unwritable);
      expect(await admin(proxy, "POST", `/admin/keys/${idB}/enable`)).toEqual(unwritable);
      expect(proxy.pool.records().map((record) => record.id)).toEqual([idA, idB]);
      expect((await admin(proxy, "GET", "/admin/keys")).status).toBe(200);
      expect((await chat(proxy)).status).toBe(200);
    },
  );
});

describe("a disk problem is reported when it starts and when it ends, each time", () => {
  test.skipIf(noDisk !== undefined)(
    "a disk problem is reported when it starts and when it ends, each time: two outages, two reports of each; failed saves leave nothing behind",
    async () => {
      const disk = await smallDisk(cleanups);
      const problems: string[] = [];
      const recoveries: string[] = [];
      let failedSaves = 0;
      const path = join(disk.dir, "keys.json");
      const fileStore = createJsonFileStore({ path });
      const store: KeyStore = {
        ...fileStore,
        update: async (change) => {
          const result = await fileStore.update(change);
          if (!result.ok) failedSaves++;
          return result;
        },
      };
      const proxy = await startOn(disk.dir, {
        overrides: {
          store,
          saveDelayMs: 5,
          storeRetryDelayMs: 20,
          onStoreError: (message) => problems.push(message),
          onStoreRecovered: (message) => recoveries.push(message),
        },
      });
      const problem = `cannot write ${path}: no space left on the device; serving from memory and trying the save again every 1 s`;
      const recovery = `${path} can be written again; the key state held in memory is saved`;
      for (let outage = 1; outage <= 2; outage++) {
        await disk.fill();
        expect((await chat(proxy)).status).toBe(200); // a request changes key state: a save is due
        const failedBefore = failedSaves;
        await eventually(() => failedSaves >= failedBefore + 5, { what: "the save to be tried again a few times" });
        expect(problems).toEqual(Array.from({ length: outage }, () => problem));
        expect(recoveries).toHaveLength(outage - 1);
        await disk.free();
        await eventually(() => recoveries.length === outage, { what: "the end of the outage to be reported" });
        expect(recoveries).toEqual(Array.from({ length: outage }, () => recovery));
      }
      expect(problems).toHaveLength(2);
      await proxy.sync.flush();
      const entries = (JSON.parse(await readFile(path, "utf8")) as { keys: Array<{ state?: { requests?: number } }> }).keys;
      expect(entries.reduce((sum, entry) => sum + (entry.state?.requests ?? 0), 0)).toBe(2);
      expect(await filesIn(disk.dir)).toEqual(["keys.json", "keys.json.server"]); // the running server's claim on the file
      // The loggers print each start and each end once, on stderr: nothing else prints them.
      await proxy.logging.flush();
      expect(proxy.output.err.split("\n").filter((line) => line.includes("no space left"))).toHaveLength(2);
      expect(proxy.output.err.split("\n").filter((line) => line.includes("can be written again"))).toHaveLength(2);
    },
  );

  test("a keys file broken while `serve` runs is printed on one line, once, and its repair once", async () => {
    const dir = await folder();
    const keysFile = join(dir, "keys.json");
    await writeFile(keysFile, JSON.stringify({ keys: [{ key: keyA }] }));
    const child = await startProxyProcess({ cwd: dir, env: { KEYS_FILE: keysFile, LOG_DIR: join(dir, "logs"), OPENROUTER_BASE_URL: fake.url } });
    await writeFile(`${keysFile}.new`, `{"keys": [{"key": "${keyA}"`);
    await Bun.$`mv ${keysFile}.new ${keysFile}`.quiet();
    await eventually(() => child.stderr().includes("not valid JSON"), { what: "the broken file to be reported" });
    const fixed = JSON.stringify({ keys: [{ key: keyA, label: "fixed" }] });
    await writeFile(`${keysFile}.new`, fixed);
    await Bun.$`mv ${keysFile}.new ${keysFile}`.quiet();
    await eventually(() => child.stderr().includes("loads again"), { what: "the repair to be reported" });
    child.signal("SIGTERM");
    expect(await child.exited).toBe(0);
    log.record(child.stdout(), child.stderr());
    const lines = child.stderr().trimEnd().split("\n");
    const broken = lines.filter((line) => line.includes("not valid JSON"));
    expect(broken).toHaveLength(1);
    expect(broken[0]).toContain(keysFile);
    expect(broken[0]).toMatch(/line \d+, column \d+/);
    expect(lines.filter((line) => line.includes("loads again"))).toHaveLength(1);
    expect(child.stderr()).not.toMatch(/^\s+at /m);
  });
});
