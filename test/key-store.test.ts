/**
 * The JSON keys file (`KEYS_FILE`) and the proxy's life with it: loading what people write,
 * writing back ids and runtime state atomically and coalesced, surviving restarts, and living
 * with people (and other processes) who edit the same file while the server runs.
 *
 * Edits "by someone else" are written the way editors save (a new file renamed over the old),
 * so the watcher never sees half a file; see the note at `editFile`.
 */
import { describe, expect, test } from "bun:test";
import { renameSync, watch as watchFolder, writeFileSync } from "node:fs";
import { chmod, readdir, readFile, rename, stat, utimes, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { createJsonFileStore } from "../src/store/file/json-file-store.ts";
import type { KeyStore } from "../src/store/ports.ts";
import { resolveTarget } from "../src/store/file/file-target.ts";
import { newKeyRecord, type KeyFileDocument } from "../src/keys/schema.ts";
import { useSuite } from "./helpers/suite.ts";
import { eventually, startTestProxy, tempDir, testKeys, type TestProxy, type TestProxyOptions } from "./helpers/test-proxy.ts";

const [keyA, keyB, keyC] = testKeys as [string, string, string];
const [idA, idB, idC] = [keyIdOf(keyA), keyIdOf(keyB), keyIdOf(keyC)];
const keyD = "sk-or-v1-test-dddddddddddddddddddddddddddddddddddddd";
const idD = keyIdOf(keyD);
const allTestKeys = [...testKeys, keyD];

const { fake, cleanups, folder } = useSuite();

/** A proxy on a fake upstream, stopped after the test (its folder too, unless the test owns it). */
async function start(options: Partial<TestProxyOptions> = {}): Promise<TestProxy> {
  const proxy = await startTestProxy({ upstream: fake.url, ...options });
  cleanups.push(() => proxy.close());
  return proxy;
}

async function readJson(path: string): Promise<FileShape> {
  return JSON.parse(await readFile(path, "utf8")) as FileShape;
}

interface EntryShape {
  key: string;
  id?: string;
  label?: string;
  resetAt?: string;
  state?: { cooldownUntil?: string; requests?: number; disabled?: { reason: string }; [name: string]: unknown };
  [name: string]: unknown;
}
interface FileShape {
  keys: EntryShape[];
  [name: string]: unknown;
}

function entryOf(file: FileShape, key: string): EntryShape {
  const entry = file.keys.find((candidate) => candidate.key === key);
  if (!entry) throw new Error(`no entry for the key ending ${key.slice(-4)} in the file`);
  return entry;
}

/**
 * Writes the file as many editors save it: a new file renamed over the old one. (An in-place
 * write, truncate then write, could in principle be read half-done by the proxy's poll and be
 * reported as broken for one poll; that is not the rule these tests check.)
 */
async function editFile(path: string, text: string): Promise<void> {
  const temp = `${path}.editor-${Math.random().toString(36).slice(2)}`;
  await writeFile(temp, text);
  await rename(temp, path);
}

async function editJson(path: string, change: (file: FileShape) => void): Promise<void> {
  const file = await readJson(path);
  change(file);
  await editFile(path, JSON.stringify(file, null, 2));
}

/** A store that counts its read-modify-writes (the server's saves), for the coalescing rules. */
function countingStore(store: KeyStore, afterSave: () => void = () => {}): { store: KeyStore; saves: () => number } {
  let saves = 0;
  return {
    saves: () => saves,
    store: {
      ...store,
      async update(change) {
        saves++;
        const result = await store.update(change);
        afterSave();
        return result;
      },
    },
  };
}

/** Makes the pool change state the way a served request does: one acquire, one report. */
function serveOne(proxy: TestProxy): string {
  const acquired = proxy.pool.acquire();
  if (!acquired.ok) throw new Error(`no key: ${acquired.reason}`);
  proxy.pool.report(acquired.lease.keyId, { kind: "ok" });
  return acquired.lease.keyId;
}

function recordOf(proxy: TestProxy, id: string) {
  const record = proxy.pool.records().find((candidate) => candidate.id === id);
  if (!record) throw new Error(`no key ${id} in the pool`);
  return record;
}

function statusOf(proxy: TestProxy, id: string) {
  return proxy.pool.statusOf(recordOf(proxy, id));
}

const chat = (proxy: TestProxy) =>
  fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer anything" },
    body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
  });

function expectNoKeyIn(text: string): void {
  for (const key of allTestKeys) expect(text).not.toContain(key);
}

describe("loading", () => {
  test("the hand-written form of keys.json.example loads, with its labels", async () => {
    const example = await readFile(join(import.meta.dir, "..", "keys.json.example"), "utf8");
    expect((JSON.parse(example) as FileShape).keys[0]).toEqual({ key: expect.stringMatching(/^sk-or-v1-/), label: "main" });
    const dir = await folder();
    await writeFile(join(dir, "keys.json"), example);

    const loaded = await createJsonFileStore({ path: join(dir, "keys.json") }).load();
    if (!loaded.ok) throw new Error(loaded.message);
    expect(loaded.doc.records.map((record) => record.label)).toEqual(["main", "second-account"]);

    const proxy = await start({ dir, keys: null });
    expect(proxy.keyCount).toBe(2);
  });

  test("a bare JSON array of key strings is accepted", async () => {
    const dir = await folder();
    await writeFile(join(dir, "keys.json"), JSON.stringify([keyA, keyB]));
    const loaded = await createJsonFileStore({ path: join(dir, "keys.json") }).load();
    if (!loaded.ok) throw new Error(loaded.message);
    expect(loaded.doc.records.map((record) => record.secret)).toEqual([keyA, keyB]);

    const proxy = await start({ dir, keys: null });
    expect(proxy.keyCount).toBe(2);
    expect((await chat(proxy)).status).toBe(200);
  });

  test("each key gets a short id derived from the key that reveals no part of it and is the same on every load", async () => {
    const [first, second] = [await folder(), await folder()];
    await writeFile(join(first, "keys.json"), JSON.stringify({ keys: [{ key: keyA }, { key: keyB }] }));
    await writeFile(join(second, "keys.json"), JSON.stringify([keyB, keyA]));
    const load = async (dir: string) => {
      const loaded = await createJsonFileStore({ path: join(dir, "keys.json") }).load();
      if (!loaded.ok) throw new Error(loaded.message);
      return new Map(loaded.doc.records.map((record) => [record.secret, record.id]));
    };
    const [once, again, elsewhere] = [await load(first), await load(first), await load(second)];

    for (const key of [keyA, keyB]) {
      const id = once.get(key) as string;
      expect(id.length).toBeLessThanOrEqual(16);
      for (let at = 0; at + 12 <= key.length; at++) expect(id).not.toContain(key.slice(at, at + 12));
      expect(again.get(key)).toBe(id);
      expect(elsewhere.get(key)).toBe(id);
    }
    expect(once.get(keyA)).not.toBe(once.get(keyB));
  });

  test("a leftover temporary file from a crashed write does not disturb loading", async () => {
    const dir = await folder();
    await writeFile(join(dir, "keys.json"), JSON.stringify([keyA]));
    await writeFile(join(dir, `.keys.json.99999.deadbeef.tmp`), '{"keys": [{"key": "sk-or-v1-torn');
    const proxy = await start({ dir, keys: null });
    expect(proxy.keyCount).toBe(1);
    serveOne(proxy);
    await proxy.sync.flush();
    expect(entryOf(await readJson(proxy.keysFile), keyA).state?.requests).toBe(1);
  });
});

describe("writing", () => {
  test("the proxy writes each key's id and runtime state back to the file", async () => {
    const proxy = await start({ keys: [keyA, keyB] });
    expect((await chat(proxy)).status).toBe(200);
    await proxy.sync.flush();

    const file = await readJson(proxy.keysFile);
    expect(file.keys.map((entry) => entry.id)).toEqual([idA, idB]);
    expect(entryOf(file, keyA)).toMatchObject({
      label: "key-0",
      addedAt: expect.any(String),
      state: { requests: 1, successes: 1, failures: 0, consecutiveFailures: 0, lastUsedAt: expect.any(String) },
    });
    expect(entryOf(file, keyB).state).toMatchObject({ requests: 0 });
  });

  test("a write goes to a temporary file in the same folder, renamed over the old one, leaving mode 0600", async () => {
    const dir = await folder();
    const path = join(dir, "keys.json");
    await writeFile(path, JSON.stringify([keyA]));
    await chmod(path, 0o644);
    const before = await stat(path);
    const store = createJsonFileStore({ path });
    const loaded = await store.load();
    if (!loaded.ok) throw new Error(loaded.message);

    const seen = new Set<string>();
    const watcher = watchFolder(dir, (_event, name) => {
      if (name) seen.add(String(name));
    });
    try {
      const saved = await store.update((doc) => ({ ...doc, records: doc.records.map((record) => ({ ...record, requests: 7 })) }));
      expect(saved.ok).toBe(true);
      await eventually(() => [...seen].some((name) => name !== "keys.json" && name !== "keys.json.lock"), { timeoutMs: 2000, what: "the temporary file to show up in the folder" });
    } finally {
      watcher.close();
    }

    const temporary = [...seen].filter((name) => name !== "keys.json" && name !== "keys.json.lock");
    expect(temporary).toEqual([expect.stringMatching(/^\.keys\.json\.\d+\.[a-z0-9]+\.tmp$/)]);
    const after = await stat(path);
    expect(after.ino).not.toBe(before.ino); // renamed over, not rewritten in place
    expect(after.mode & 0o777).toBe(0o600);
    expect(await readdir(dir)).toEqual(["keys.json"]); // no temporary file or lock left behind
    expect(entryOf(await readJson(path), keyA).state?.requests).toBe(7);
  });

  test("many pool changes within the save delay become one write", async () => {
    const dir = await folder();
    await writeFile(join(dir, "keys.json"), JSON.stringify([keyA, keyB]));
    const counted = countingStore(createJsonFileStore({ path: join(dir, "keys.json") }));
    const proxy = await start({ dir, keys: null, overrides: { store: counted.store, saveDelayMs: 50 } });

    for (let i = 0; i < 40; i++) serveOne(proxy);
    expect(counted.saves()).toBe(0); // the hot path writes nothing
    await eventually(() => counted.saves() === 1, { what: "the first coalesced write" });
    serveOne(proxy);
    await eventually(() => counted.saves() === 2, { what: "the second write" });
    await proxy.sync.flush();
    expect(counted.saves()).toBe(2);

    const file = await readJson(proxy.keysFile);
    expect(file.keys.reduce((sum, entry) => sum + (entry.state?.requests ?? 0), 0)).toBe(41);
  });

  test("state changed just before stop() is on disk when stop() resolves", async () => {
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);
    const proxy = await startTestProxy({ upstream: fake.url, dir, keys: [keyA], overrides: { saveDelayMs: 60_000 } });
    serveOne(proxy);
    serveOne(proxy);
    await proxy.stop(0);
    expect(entryOf(await readJson(proxy.keysFile), keyA).state?.requests).toBe(2);
  });
});

describe("restarts", () => {
  test("cooldowns and disabled marks survive a restart", async () => {
    const dir = await folder();
    const config = { FAILURE_THRESHOLD: 2 };
    const first = await startTestProxy({ upstream: fake.url, dir, keys: [keyA, keyB, keyC], config });
    const until = Date.now() + 10 * 60_000;
    first.pool.report(idA, { kind: "rate-limited", scope: "key", modelClass: "all", until, source: "header", message: "slow down" });
    first.pool.report(idB, { kind: "key-failure", reason: "upstream answered 401" });
    first.pool.report(idB, { kind: "key-failure", reason: "upstream answered 401" });
    expect(statusOf(first, idB).state).toBe("disabled");
    await first.stop(0);

    const second = await start({ dir, keys: null, config });
    expect(statusOf(second, idA)).toEqual({ state: "cooling", until, reason: "slow down" });
    expect(statusOf(second, idB)).toMatchObject({ state: "disabled", reason: expect.stringContaining("401") });
    expect(statusOf(second, idC)).toEqual({ state: "active" });
    const acquired = second.pool.acquire();
    expect(acquired.ok && acquired.lease.keyId).toBe(idC);
  });
});

describe("no keys file", () => {
  test("a missing file starts the proxy with no keys; requests get 503 saying how to add one, and no file is created", async () => {
    const proxy = await start({ keys: null });
    expect(proxy.keyCount).toBe(0);

    const response = await chat(proxy);
    expect(response.status).toBe(503);
    const body = (await response.json()) as { error: { message: string } };
    expect(body.error.message).toMatch(/no .*keys/i);
    expect(body.error.message).toMatch(/add one/i);
    expect(body.error.message).toMatch(/keys file/i);

    await proxy.sync.flush();
    await proxy.stop(0);
    // Only the log folder (LOG_DIR points into the same temp folder): no keys file, no temp file.
    expect((await readdir(proxy.dir)).filter((name) => name !== "logs")).toEqual([]);
  });

  test("a keys file created while the proxy runs without one is picked up within a second", async () => {
    const proxy = await start({ keys: null });
    await editFile(proxy.keysFile, JSON.stringify({ keys: [{ key: keyA, label: "late" }] }));
    await eventually(() => proxy.pool.records().length === 1, { timeoutMs: 1000, what: "the new file to be picked up" });
    expect((await chat(proxy)).status).toBe(200);
    expect(fake.requests.at(-1)?.key).toBe(keyA);
  });
});

describe("a broken file at startup", () => {
  const cases: Array<{ what: string; text: string; expected: RegExp[] }> = [
    {
      what: "a syntax error names the file, the line and the column",
      text: `{\n  "keys": [\n    { "key": "${keyA}", "label": "main", }\n  ]\n}\n`,
      expected: [/not valid JSON/, /line 3, column \d+/],
    },
    { what: "single quotes are a syntax error at line 1", text: `{'keys': ['${keyA}']}`, expected: [/not valid JSON/, /line 1, column 2/] },
    { what: "a file cut off mid-list says it ends where a value should be", text: '{"keys": [\n', expected: [/not valid JSON \(line 2, column 1: the file ends where a value should be\)/] },
    { what: "an entry without a key names where it is", text: JSON.stringify({ keys: [{ key: keyA }, { label: "no key here" }] }), expected: [/wrong shape/, /keys\[1\]\.key/] },
    { what: "keys that are not a list name the field", text: JSON.stringify({ keys: keyA }), expected: [/wrong shape at keys: .*expected array, received string/] },
    { what: "a number instead of keys says what was expected", text: "42", expected: [/wrong shape/, /expected array/, /\{"keys":\[\{"key":/] },
    { what: "a key with spaces is refused", text: JSON.stringify({ keys: [{ key: `${keyA} ${keyB}` }] }), expected: [/wrong shape/, /keys\[0\]\.key/, /spaces/] },
    { what: "a bad state value names the field", text: JSON.stringify({ keys: [{ key: keyA, state: { requests: -1 } }] }), expected: [/wrong shape/, /keys\[0\]\.state\.requests/] },
  ];

  test.each(cases)("$what; startup stops and the file is left byte for byte", async ({ text, expected }) => {
    const dir = await folder();
    const path = join(dir, "keys.json");
    await writeFile(path, text);
    const before = await stat(path);

    const failure = await startTestProxy({ upstream: fake.url, dir, keys: null }).then(
      (proxy) => {
        cleanups.push(() => proxy.close());
        throw new Error("the proxy started on a broken keys file");
      },
      (error: unknown) => (error as Error).message,
    );
    expect(failure).toContain(path);
    for (const pattern of expected) expect(failure).toMatch(pattern);
    expect(failure).not.toContain("\n");
    expectNoKeyIn(failure);

    expect(await readFile(path, "utf8")).toBe(text);
    expect((await stat(path)).mtimeMs).toBe(before.mtimeMs);
    expect(await readdir(dir)).toEqual(["keys.json"]);
  });
});

describe("changes made by someone else while the proxy runs", () => {
  test("a key added to the file is picked up within a second, without a restart", async () => {
    const proxy = await start({ keys: [keyA] });
    await editJson(proxy.keysFile, (file) => file.keys.push({ key: keyD, label: "added by hand" }));
    await eventually(() => proxy.pool.records().some((record) => record.id === idD), { timeoutMs: 1000, what: "the added key" });
    expect(recordOf(proxy, idD).label).toBe("added by hand");
  });

  test("a key removed from the file leaves the pool within a second", async () => {
    const proxy = await start({ keys: [keyA, keyB] });
    await editJson(proxy.keysFile, (file) => {
      file.keys = file.keys.filter((entry) => entry.key !== keyA);
    });
    await eventually(() => proxy.pool.records().length === 1, { timeoutMs: 1000, what: "the key to leave" });
    expect(proxy.pool.records()[0]?.id).toBe(idB);
    serveOne(proxy);
    await proxy.sync.flush();
    expect((await readJson(proxy.keysFile)).keys.map((entry) => entry.key)).toEqual([keyB]);
  });

  test("a relabel is picked up within a second and kept by the proxy's later writes", async () => {
    const proxy = await start({ keys: [keyA] });
    serveOne(proxy);
    await proxy.sync.flush();
    await editJson(proxy.keysFile, (file) => {
      entryOf(file, keyA).label = "renamed";
    });
    await eventually(() => recordOf(proxy, idA).label === "renamed", { timeoutMs: 1000, what: "the new label" });
    serveOne(proxy);
    await proxy.sync.flush();
    expect(entryOf(await readJson(proxy.keysFile), keyA)).toMatchObject({ label: "renamed", state: { requests: 2 } });
  });

  test("the proxy's own writes never overwrite edits another writer makes under the lock while the pool keeps changing", async () => {
    const dir = await folder();
    const path = join(dir, "keys.json");
    await writeFile(path, JSON.stringify({ keys: [{ key: keyA, label: "a" }, { key: keyB, label: "b" }] }));
    let churning = true;
    let served = 0;
    let proxy: TestProxy | undefined;
    // Every finished save makes the next change, so writes follow each other back to back.
    const counted = countingStore(createJsonFileStore({ path }), () => {
      if (churning && proxy) {
        serveOne(proxy);
        served++;
      }
    });
    const running = await start({ dir, keys: null, overrides: { store: counted.store, saveDelayMs: 1 } });
    proxy = running;
    serveOne(running);
    served++;
    await eventually(() => counted.saves() >= 5, { what: "the first writes" });

    // Several edits by another process's store (what add-key and the admin API use), each landing
    // somewhere in the middle of the proxy's write cycle. (An editor takes no lock: json-file-store.ts
    // says what is left to chance for it.)
    const editor = createJsonFileStore({ path });
    const added = Array.from({ length: 5 }, (_, i) => `sk-or-v1-test-added-while-busy-${i}-${"e".repeat(30)}`);
    for (const [i, key] of added.entries()) {
      const edited = await editor.update((doc) => ({
        ...doc,
        records: [...doc.records.map((record) => (record.id === idA ? { ...record, label: `renamed ${i}` } : record)), newKeyRecord(key, Date.now(), `added ${i}`)],
      }));
      expect(edited.ok).toBe(true);
      await eventually(() => running.pool.records().some((record) => record.id === keyIdOf(key)), { timeoutMs: 1000, what: `edit ${i} to be picked up` });
    }
    const savesAfterEdits = counted.saves();
    await eventually(() => counted.saves() >= savesAfterEdits + 10, { what: "more writes after the edits" });
    churning = false;
    await running.sync.flush();

    const file = await readJson(path);
    expect(file.keys.map((entry) => entry.key)).toEqual([keyA, keyB, ...added]);
    expect(entryOf(file, keyA).label).toBe("renamed 4");
    expect(file.keys.slice(2).map((entry) => entry.label)).toEqual(added.map((_, i) => `added ${i}`));
    const requests = file.keys.reduce((sum, entry) => sum + (entry.state?.requests ?? 0), 0);
    expect(requests).toBe(served);
    expect(requests).toBe(running.pool.records().reduce((sum, record) => sum + record.requests, 0));
  });

  test("a person's reset in the file beats the disabled state the server holds, even before the server has seen it", async () => {
    const proxy = await start({ keys: [keyA, keyB], config: { FAILURE_THRESHOLD: 2 }, overrides: { saveDelayMs: 60_000 } });
    const fail = () => proxy.pool.report(idA, { kind: "key-failure", reason: "upstream answered 402" });
    fail();
    fail();
    await proxy.sync.flush();
    expect(entryOf(await readJson(proxy.keysFile), keyA).state?.disabled).toBeDefined();

    fail(); // the server has more to say about the key, not yet written…
    await editJson(proxy.keysFile, (file) => {
      const entry = entryOf(file, keyA);
      entry.resetAt = new Date().toISOString();
      entry.state = {};
    });
    await proxy.sync.flush(); // …and writes before its watcher has looked at the edit

    expect(statusOf(proxy, idA)).toEqual({ state: "active" });
    const entry = entryOf(await readJson(proxy.keysFile), keyA);
    expect(entry.resetAt).toBeDefined();
    expect(entry.state?.disabled).toBeUndefined();
    expect(entry.state?.consecutiveFailures).toBe(0);
  });

  test("a person's reset in the file is picked up by the running server within a second", async () => {
    const proxy = await start({ keys: [keyA], config: { FAILURE_THRESHOLD: 1 } });
    proxy.pool.report(idA, { kind: "key-failure", reason: "upstream answered 401" });
    await proxy.sync.flush();
    await editJson(proxy.keysFile, (file) => {
      const entry = entryOf(file, keyA);
      entry.resetAt = new Date().toISOString();
      entry.state = {};
    });
    await eventually(() => statusOf(proxy, idA).state === "active", { timeoutMs: 1000, what: "the reset to be picked up" });
    expect((await chat(proxy)).status).toBe(200);
  });

  test("fields a user wrote that the proxy does not know are kept when it writes", async () => {
    const dir = await folder();
    const path = join(dir, "keys.json");
    const userFile = {
      comment: "shared by the team; ask Ana before removing a key",
      version: 2,
      keys: [
        { key: keyA, label: "main", owner: "ana", tags: ["prod", "eu"], state: { note: "watch this one" } },
        { key: keyB, owner: { name: "bo" } },
      ],
    };
    await writeFile(path, JSON.stringify(userFile, null, 2));
    const proxy = await start({ dir, keys: null });
    expect((await chat(proxy)).status).toBe(200);
    await proxy.sync.flush();

    const file = await readJson(path);
    expect(file).toMatchObject({ comment: userFile.comment, version: 2 });
    expect(entryOf(file, keyA)).toMatchObject({ label: "main", owner: "ana", tags: ["prod", "eu"], state: { note: "watch this one", requests: 1 } });
    expect(entryOf(file, keyB)).toMatchObject({ owner: { name: "bo" }, id: idB });
  });

  test("a file edited into broken JSON is reported once and never written over; the proxy serves from memory until it is fixed", async () => {
    const problems: string[] = [];
    const proxy = await start({ keys: [keyA, keyB], overrides: { onStoreError: (message) => problems.push(message), saveDelayMs: 5 } });
    const broken = `{\n  "keys": [\n    { "key": "${keyA}" \n`;
    await editFile(proxy.keysFile, broken);
    await eventually(() => problems.length > 0, { timeoutMs: 1000, what: "the broken file to be reported" });

    for (let i = 0; i < 3; i++) {
      serveOne(proxy);
      await proxy.sync.flush();
    }
    expect((await chat(proxy)).status).toBe(200);
    await proxy.sync.flush();
    expect(await readFile(proxy.keysFile, "utf8")).toBe(broken);
    expect(problems).toHaveLength(1);
    expect(problems[0]).toContain(proxy.keysFile);
    expect(problems[0]).toMatch(/line \d+, column \d+/);
    expectNoKeyIn(problems[0] as string);

    await editFile(proxy.keysFile, JSON.stringify({ keys: [{ key: keyA }, { key: keyB }, { key: keyD, label: "fixed" }] }));
    await eventually(() => proxy.pool.records().length === 3, { timeoutMs: 1000, what: "the fixed file to be picked up" });
    expect(recordOf(proxy, idD).label).toBe("fixed");
    expect(problems).toHaveLength(1);
  });

  test("state the proxy kept in memory while the file was broken is written once the file is fixed", async () => {
    const problems: string[] = [];
    const proxy = await start({ keys: [keyA], overrides: { onStoreError: (message) => problems.push(message), saveDelayMs: 5 } });
    await editFile(proxy.keysFile, "{ not json");
    await eventually(() => problems.length > 0, { timeoutMs: 1000, what: "the broken file to be reported" });
    serveOne(proxy);
    serveOne(proxy);
    await proxy.sync.flush();
    expect(await readFile(proxy.keysFile, "utf8")).toBe("{ not json");

    await editFile(proxy.keysFile, JSON.stringify({ keys: [{ key: keyA, label: "fixed" }] }));
    await eventually(async () => {
      const entry = (await readJson(proxy.keysFile)).keys[0];
      return entry?.label === "fixed" && entry.state?.requests === 2;
    }, { timeoutMs: 2000, what: "the state held in memory to reach the fixed file" });
  });
});

describe("the lock", () => {
  test("two stores on one file doing 50 interleaved updates at once lose nothing", async () => {
    const dir = await folder();
    const path = join(dir, "keys.json");
    await writeFile(path, JSON.stringify({ keys: [] }));
    const stores = [createJsonFileStore({ path }), createJsonFileStore({ path })] as const;
    const keyNumber = (i: number) => `sk-or-v1-lock-test-${String(i).padStart(3, "0")}-${"x".repeat(30)}`;

    const work = Array.from({ length: 50 }, (_, i) => {
      const store = stores[i % 2] as KeyStore;
      return store.update((doc: KeyFileDocument) => ({ ...doc, records: [...doc.records, newKeyRecord(keyNumber(i), Date.now())] }));
    });
    const results = await Promise.all(work);
    expect(results.every((result) => result.ok)).toBe(true);

    const loaded = await createJsonFileStore({ path }).load();
    if (!loaded.ok) throw new Error(loaded.message);
    const expected = Array.from({ length: 50 }, (_, i) => keyNumber(i));
    expect(loaded.doc.records.map((record) => record.secret).sort()).toEqual(expected);
    expect(await readdir(dir)).toEqual(["keys.json"]);
  }, 15_000); // waiters poll the lock file with a backoff of up to 50 ms: about 2 s here

  test("the lock is taken on the keys file's own name even while another process renames new versions in", async () => {
    // Bun's realpath names an open file by asking the kernel what it is called now, so a file
    // swapped out at that moment came back as the writer's temporary file: the store then locked
    // and wrote the wrong file, and an add-key that said "added" was lost (seen in CI).
    const dir = await folder();
    const path = join(dir, "keys.json");
    await writeFile(path, JSON.stringify({ keys: [] }));
    const swapper = Bun.spawn(
      [process.execPath, "-e", `const { renameSync, writeFileSync } = await import("node:fs"); const other = ${JSON.stringify(`${path}.other`)}; console.log("swapping"); for (;;) { writeFileSync(other, "{}"); renameSync(other, ${JSON.stringify(path)}); }`],
      { stdout: "pipe", stderr: "inherit" },
    );
    cleanups.push(async () => swapper.kill());
    await new Response(swapper.stdout).body?.getReader().read(); // "swapping": the loop has started
    const resolved = new Set<string>();
    for (let i = 0; i < 3000; i++) resolved.add(await resolveTarget(path));
    swapper.kill();
    expect([...resolved]).toEqual([path]);
  });

  test("a lock left behind by a dead process is broken, so the next write goes through", async () => {
    const dir = await folder();
    const path = join(dir, "keys.json");
    await writeFile(path, JSON.stringify([keyA]));
    await writeFile(`${path}.lock`, "12345\n");
    const minuteAgo = new Date(Date.now() - 60_000);
    await utimes(`${path}.lock`, minuteAgo, minuteAgo);

    const result = await createJsonFileStore({ path }).update((doc) => ({ ...doc, records: [...doc.records, newKeyRecord(keyB, Date.now())] }));
    expect(result.ok).toBe(true);
    expect((await readJson(path)).keys.map((entry) => entry.key)).toEqual([keyA, keyB]);
    expect(await readdir(dir)).toEqual(["keys.json"]);
  });
});

describe("edits that land while the store writes", () => {
  /** Writes the file the way an editor saves it (a new file renamed into place), synchronously. */
  function editorSave(path: string, text: string): void {
    const temp = `${path}.editor-${Math.random().toString(36).slice(2)}`;
    writeFileSync(temp, text);
    renameSync(temp, path);
  }

  test("an edit saved after the store read the file and before it wrote is merged into the write, not lost", async () => {
    const dir = await folder();
    const path = join(dir, "keys.json");
    await writeFile(path, JSON.stringify({ keys: [{ key: keyA, label: "a" }] }));
    let edited = false;
    const result = await createJsonFileStore({ path }).update((doc) => {
      if (!edited) {
        edited = true; // the person's save lands between the store's read and its write
        editorSave(path, JSON.stringify({ keys: [{ key: keyA, label: "renamed by hand" }, { key: keyC, label: "added by hand" }] }));
      }
      return { ...doc, records: [...doc.records, newKeyRecord(keyB, Date.now())] };
    });
    expect(result.ok).toBe(true);
    const file = await readJson(path);
    expect(file.keys.map((entry) => [entry.key, entry.label])).toEqual([
      [keyA, "renamed by hand"],
      [keyC, "added by hand"],
      [keyB, undefined],
    ]);
    expect(await readdir(dir)).toEqual(["keys.json"]); // no temporary file left
  });

  test("a broken edit saved while the store writes is put back as its author left it, and the store reports it", async () => {
    const dir = await folder();
    const path = join(dir, "keys.json");
    await writeFile(path, JSON.stringify({ keys: [{ key: keyA }] }));
    const broken = `{"keys": [{"key": "${keyA}"}, {"key": "${keyC}"`;
    let edited = false;
    const result = await createJsonFileStore({ path }).update((doc) => {
      if (!edited) {
        edited = true;
        editorSave(path, broken);
      }
      return { ...doc, records: [...doc.records, newKeyRecord(keyB, Date.now())] };
    });
    expect(result.ok).toBe(false);
    expect(await readFile(path, "utf8")).toBe(broken);
    expect(await readdir(dir)).toEqual(["keys.json"]);
  });
});
