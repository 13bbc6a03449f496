/**
 * The CLI and a running server share one KEYS_FILE. While the server serves a steady stream of
 * requests whose upstream answers keep changing key state (429s with resets, failures that
 * disable a key, successes) and saves that state every few milliseconds, 50 `add-key` child
 * processes run one after another. Afterwards every added key is in the file and in the rotation,
 * and every bit of state the server recorded is still there: its cooldown, its disabled key, and
 * request counters that add up to exactly the requests the upstream received.
 */
import { expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { createJsonFileStore } from "../src/store/file/json-file-store.ts";
import type { KeyStore } from "../src/store/ports.ts";
import { runCli } from "./helpers/cli.ts";
import { chatCompletion, errorReply } from "./helpers/fake-openrouter.ts";
import { useSuite } from "./helpers/suite.ts";
import { eventually, startTestProxy, tempDir, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const [keyA, keyB, keyC] = testKeys as [string, string, string];
const [idA, idC] = [keyIdOf(keyA), keyIdOf(keyC)];
const added = Array.from({ length: 50 }, (_, i) => `sk-or-v1-load-${String(i).padStart(2, "0")}-${"0123456789abcdef".repeat(3)}`);
const adminToken = "admin-token-0123456789";

const { fake, log, cleanups } = useSuite({ secrets: [...testKeys, ...added] });

interface StoredEntry {
  key: string;
  id: string;
  label?: string;
  state: { cooldownUntil?: string; cooldownSource?: string; disabled?: { reason: string }; requests: number };
}

test(
  "50 keys added one by one through the CLI while the server serves load and saves its own state all reach the file and the rotation, and no state the server recorded is lost",
  async () => {
    const { dir, cleanup } = await tempDir();
    cleanups.push(cleanup);

    // Upstream: keyA is rate-limited for ten minutes, keyC is refused (disabled after two
    // failures), keyB alternates short 429s and successes, every added key succeeds.
    const longReset = Date.now() + 600_000;
    let bTurn = 0;
    fake.reply((request) => {
      if (request.key === keyA) return errorReply(429, "Rate limit exceeded", { headers: { "X-RateLimit-Reset": String(longReset) } });
      if (request.key === keyC) return errorReply(401, "User not found.");
      if (request.key === keyB && bTurn++ % 2 === 0) return errorReply(429, "Rate limit exceeded", { headers: { "X-RateLimit-Reset": String(Date.now() + 100) } });
      return chatCompletion("ok");
    });

    // The server's store, counting its saves (the server's own writes to the file).
    let saves = 0;
    const fileStore = createJsonFileStore({ path: `${dir}/keys.json` });
    const store: KeyStore = { ...fileStore, update: (change) => (saves++, fileStore.update(change)) };
    const proxy: TestProxy = await startTestProxy({
      upstream: fake.url,
      dir,
      keys: [keyA, keyB, keyC],
      config: { ROTATION: "round-robin", FAILURE_THRESHOLD: 2, MAX_ATTEMPTS: 3, ADMIN_TOKEN: adminToken },
      overrides: { store, saveDelayMs: 10, counterSaveDelayMs: 10 },
    });
    cleanups.push(() => proxy.close());
    const recordOf = (id: string) => proxy.pool.records().find((record) => record.id === id);

    const chat = async () => {
      const response = await fetch(`${proxy.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", authorization: "Bearer client" },
        body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
      });
      log.record(await response.text(), JSON.stringify([...response.headers]));
      return response.status;
    };

    // Before the CLI starts: keyA cooling, keyC disabled, and both on disk.
    for (let i = 0; i < 20 && !(recordOf(idA)?.cooldownUntil === longReset && recordOf(idC)?.disabled); i++) await chat();
    expect(recordOf(idA)?.cooldownUntil).toBe(longReset);
    expect(recordOf(idC)?.disabled).toBeDefined();
    await proxy.sync.flush();

    // A steady stream of requests from one client until the adds are done.
    let adding = true;
    let servedDuringAdds = 0;
    const client = async () => {
      for (let i = 0; i < 100_000 && adding; i++) {
        await chat();
        servedDuringAdds++;
      }
    };
    const savesBefore = saves;
    const clients = [client()];

    for (const [i, key] of added.entries()) {
      const { code, stdout, stderr } = await runCli(["add-key", key, "--no-verify", "--label", `load-${i}`], {
        cwd: dir,
        log,
        env: { KEYS_FILE: proxy.keysFile },
      });
      expect({ i, code, stderr }).toEqual({ i, code: 0, stderr: "" });
      expect(stdout).toStartWith(`added ${keyIdOf(key)} (`);
    }
    await eventually(() => proxy.pool.records().length === 53, { timeoutMs: 1000, what: "all 53 keys in the pool within a second of the last add" });
    adding = false;
    await Promise.all(clients);
    // The server really was serving and saving while the CLI wrote.
    expect(servedDuringAdds).toBeGreaterThan(50);
    expect(saves - savesBefore).toBeGreaterThan(10);

    // In the rotation: the admin API lists them, and round-robin hands every one of them out.
    const listed = (await (await fetch(`${proxy.url}/admin/keys`, { headers: { authorization: `Bearer ${adminToken}` } })).json()) as { keys: Array<{ id: string; label: string | null }> };
    log.record(JSON.stringify(listed));
    expect(listed.keys.map((view) => view.id).sort()).toEqual([...testKeys, ...added].map(keyIdOf).sort());
    fake.reply(() => chatCompletion("ok"));
    const usedBefore = fake.requests.length;
    for (let i = 0; i < 60; i++) expect(await chat()).toBe(200);
    const servedBy = new Set(fake.requests.slice(usedBefore).map((request) => request.key));
    expect(added.filter((key) => !servedBy.has(key))).toEqual([]);

    // Nothing either side wrote was lost. The load has stopped, so the pool no longer changes;
    // its state must reach the file. (Waited for rather than read right after `sync.flush()`:
    // flush can resolve before the follow-up save that a change during an in-flight save made
    // necessary, see state-sync.ts; the comparison below is exact either way.)
    await proxy.sync.flush();
    const inMemory = new Map(proxy.pool.records().map((record) => [record.id, record.requests]));
    const readStored = async () => (JSON.parse(await readFile(proxy.keysFile, "utf8")) as { keys: StoredEntry[] }).keys;
    await eventually(async () => (await readStored()).every((entry) => entry.state.requests === inMemory.get(entry.id)), {
      timeoutMs: 1000,
      what: "the server's counters in the file",
    }).catch(() => {}); // the exact comparison below reports any difference
    const stored = await readStored();
    expect(stored.map((entry) => entry.key)).toEqual([...testKeys, ...added]);
    expect(stored.slice(3).map((entry) => entry.label)).toEqual(added.map((_, i) => `load-${i}`));
    const [entryA, , entryC] = stored;
    expect(entryA?.state).toMatchObject({ cooldownUntil: new Date(longReset).toISOString(), cooldownSource: "header" });
    expect(entryC?.state.disabled?.reason).toStartWith("2 consecutive failures");
    expect(Object.fromEntries(stored.map((entry) => [entry.id, entry.state.requests]))).toEqual(Object.fromEntries(inMemory));
    // Each request the pool handed out reached the upstream once: the counters lost none.
    const upstreamCalls = fake.requests.filter((request) => request.path === "/chat/completions").length;
    expect(stored.reduce((sum, entry) => sum + entry.state.requests, 0)).toBe(upstreamCalls);
  },
  // 50 CLI processes one after another: about 10 s on an idle 2-core machine, three times that
  // when the machine is busy. The rule is about what reaches the file, not how fast.
  120_000,
);
