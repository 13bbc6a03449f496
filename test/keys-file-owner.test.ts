/**
 * The keys file has one owner: the one server on it. A second server refuses to start (several
 * instances share state through Redis instead), a claim left by a dead server is taken over, the
 * CLI keeps editing under the lock while the server runs, and the server saves its decisions
 * promptly but its counters only every few seconds, however busy it is.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { join } from "node:path";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { createJsonFileStore } from "../src/store/file/json-file-store.ts";
import { runCli } from "./helpers/cli.ts";
import { chatCompletion, errorReply } from "./helpers/fake-openrouter.ts";
import { keyEndpoint } from "./helpers/key-endpoint.ts";
import { killAllProxies, startProxyProcess } from "./helpers/proxy-process.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const [keyA, keyB] = testKeys as [string, string];
const keyD = "sk-or-v1-test-dddddddddddddddddddddddddddddddddddddd";
const answer = keyEndpoint(() => true, () => chatCompletion("ok"));
const { fake, log, cleanups, folder } = useSuite({ secrets: [...testKeys, keyD], reply: answer });
afterAll(() => killAllProxies());

async function keysFileIn(dir: string, keys: string[] = [keyA, keyB]): Promise<string> {
  const path = join(dir, "keys.json");
  await writeFile(path, JSON.stringify({ keys: keys.map((key) => ({ key })) }));
  return path;
}

const chat = async (url: string) => {
  const response = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: "Bearer anything" },
    body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
  });
  log.record(await response.text());
  return response.status;
};

describe("one server per keys file", () => {
  test("a second server on one keys file exits 2 with one line naming the holder (pid, address) and saying to use REDIS_URL", async () => {
    const dir = await folder();
    const keysFile = await keysFileIn(dir);
    const env = { KEYS_FILE: keysFile, OPENROUTER_BASE_URL: fake.url };
    const first = await startProxyProcess({ cwd: dir, env });
    cleanups.push(() => first.kill());

    const second = await runCli(["serve", "--host", "127.0.0.1", "--port", "0"], { cwd: dir, log, env, limitMs: 10_000 });
    expect(second.code).toBe(2);
    expect(second.stdout).toBe("");
    const lines = second.stderr.trimEnd().split("\n");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toStartWith(`openrouter-proxy: ${keysFile} is held by another server (pid ${first.pid}, listening on ${first.url})`);
    expect(lines[0]).toContain("REDIS_URL");
    // The first one never noticed: it still serves.
    expect(await chat(first.url)).toBe(200);
  });

  test("a claim left by a dead process does not stop a new server, and a stopped server leaves none behind", async () => {
    const dir = await folder();
    const keysFile = await keysFileIn(dir);
    const ended = Bun.spawn(["true"]);
    await ended.exited;
    await writeFile(`${keysFile}.server`, `${ended.pid}\n${hostname()}\nhttp://127.0.0.1:1\n`);

    const proxy = await startTestProxy({ upstream: fake.url, dir, keys: null });
    expect(await readFile(`${keysFile}.server`, "utf8")).toBe(`${process.pid}\n${hostname()}\n${proxy.url}\n`);
    expect(await chat(proxy.url)).toBe(200);
    await proxy.stop(0);
    expect(await Bun.file(`${keysFile}.server`).exists()).toBe(false);
  });

  test("a claim naming this very pid from an earlier run (a container restarted as pid 1) does not stop the server", async () => {
    const dir = await folder();
    const keysFile = await keysFileIn(dir);
    await writeFile(`${keysFile}.server`, `${process.pid}\n${hostname()}\nhttp://127.0.0.1:1\n`);

    const proxy = await startTestProxy({ upstream: fake.url, dir, keys: null });
    cleanups.push(() => proxy.stop(0));
    expect(await readFile(`${keysFile}.server`, "utf8")).toBe(`${process.pid}\n${hostname()}\n${proxy.url}\n`);
    expect(await chat(proxy.url)).toBe(200);
  });

  test("a second server in the same process on the same file is refused too; once the first stops, a new one starts", async () => {
    const dir = await folder();
    await keysFileIn(dir);
    const first = await startTestProxy({ upstream: fake.url, dir, keys: null });
    await expect(startTestProxy({ upstream: fake.url, dir, keys: null })).rejects.toThrow(`is held by another server (pid ${process.pid}, listening on ${first.url})`);
    await first.stop(0);
    const next = await startTestProxy({ upstream: fake.url, dir, keys: null });
    cleanups.push(() => next.stop(0));
    expect(await chat(next.url)).toBe(200);
  });

  test("the CLI is not a server: add-key works while a server holds the file, and the server adopts the key within a second", async () => {
    const dir = await folder();
    const keysFile = await keysFileIn(dir, [keyA]);
    const proxy = await startTestProxy({ upstream: fake.url, dir, keys: null });
    cleanups.push(() => proxy.stop(0));
    const added = await runCli(["add-key", "--no-verify", keyD], { cwd: dir, log, env: { KEYS_FILE: keysFile } });
    expect(added.code).toBe(0);
    const started = performance.now();
    while (!proxy.pool.records().some((record) => record.id === keyIdOf(keyD))) {
      if (performance.now() - started > 1000) throw new Error("the added key was not adopted within a second");
      await Bun.sleep(10);
    }
  });
});

describe("save cadence", () => {
  /** A server whose store counts its writes of the file. */
  async function countingServer(overrides: { saveDelayMs?: number; counterSaveDelayMs?: number }): Promise<{ proxy: TestProxy; writes: number[]; firstWrite: Promise<number> }> {
    const dir = await folder();
    const keysFile = await keysFileIn(dir);
    const writes: number[] = [];
    const { promise: firstWrite, resolve } = Promise.withResolvers<number>();
    const store = createJsonFileStore({
      path: keysFile,
      onWrite: () => {
        writes.push(performance.now());
        resolve(writes[0] as number);
      },
    });
    // Each default the test does not set is the server's own (the helper shortens both).
    const proxy = await startTestProxy({ upstream: fake.url, dir, keys: null, overrides: { store, saveDelayMs: 500, counterSaveDelayMs: 5000, ...overrides } });
    cleanups.push(() => proxy.close());
    return { proxy, writes, firstWrite };
  }

  /** Requests back to back from `concurrency` clients for `ms`; how many were served. */
  async function load(url: string, ms: number, concurrency = 8): Promise<number> {
    const until = performance.now() + ms;
    let served = 0;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < until) if ((await chat(url)) === 200) served++;
      }),
    );
    return served;
  }

  test("under steady load with the default cadence, counters alone do not write the file at all within the first 5 s", async () => {
    const { proxy, writes } = await countingServer({});
    const served = await load(proxy.url, 1500);
    expect(served).toBeGreaterThan(100);
    expect(writes).toEqual([]); // counters wait for their 5 s, whatever the rate
    await proxy.sync.flush();
    expect(writes).toHaveLength(1);
    const stored = JSON.parse(await readFile(proxy.keysFile, "utf8")) as { keys: Array<{ state: { requests: number } }> };
    expect(stored.keys.reduce((sum, entry) => sum + entry.state.requests, 0)).toBe(served);
  });

  test("the file is written at most once per counter period under load (a period shortened to 300 ms)", async () => {
    const { proxy, writes } = await countingServer({ counterSaveDelayMs: 300 });
    const started = performance.now();
    await load(proxy.url, 1600);
    const elapsed = performance.now() - started;
    expect(writes.length).toBeGreaterThanOrEqual(3);
    expect(writes.length).toBeLessThanOrEqual(Math.ceil(elapsed / 300));
    for (const [i, at] of writes.entries()) if (i > 0) expect(at - (writes[i - 1] as number)).toBeGreaterThanOrEqual(290);
  });

  test("a decision (a 429 that cools a key) is saved within 500 ms, even while counters wait for their 5 s", async () => {
    const { proxy, firstWrite } = await countingServer({});
    const reset = Date.now() + 600_000;
    fake.reply(keyEndpoint(() => true, (request) => (request.key === keyA ? errorReply(429, "Rate limit exceeded", { headers: { "X-RateLimit-Reset": String(reset) } }) : chatCompletion("ok"))));
    const asked = performance.now();
    expect(await chat(proxy.url)).toBe(200); // keyA cools, keyB answers
    const written = await firstWrite;
    expect(written - asked).toBeLessThan(500 + 250); // the 500 ms delay, plus the request and the write on a busy shared machine
    const stored = JSON.parse(await readFile(proxy.keysFile, "utf8")) as { keys: Array<{ key: string; state: { cooldownUntil?: string; requests: number } }> };
    expect(stored.keys.find((entry) => entry.key === keyA)?.state.cooldownUntil).toBe(new Date(reset).toISOString());
    expect(stored.keys.reduce((sum, entry) => sum + entry.state.requests, 0)).toBe(2); // the counters ride along
  });
});
