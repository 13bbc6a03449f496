/**
 * Issue 14, point 1: two servers (real processes) on one JSON keys file keep each other's state.
 * Each server saves by merging with what the file holds (file-merge.ts) and adopts what the other
 * saved (the store's watch): a cooldown one server learned keeps the other off the key, counters
 * and free-model counts add up, and a person's enable-key wins over either server's cooldown.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { keyIdOf } from "../src/domain/key-identity.ts";
import { createJsonFileStore } from "../src/keys/json-file-store.ts";
import { enableKey } from "../src/keys/key-admin.ts";
import { utcDay } from "../src/domain/time-text.ts";
import { runCli } from "./helpers/cli.ts";
import { chatCompletion, errorReply } from "./helpers/fake-openrouter.ts";
import { keyEndpoint } from "./helpers/key-endpoint.ts";
import { killAllProxies, startProxyProcess, type ProxyProcess } from "./helpers/proxy-process.ts";
import { useSuite } from "./helpers/suite.ts";
import { eventually, startTestProxy, testKeys } from "./helpers/test-proxy.ts";

const [keyA, keyB, keyC] = testKeys as [string, string, string];
const idA = keyIdOf(keyA);
const adminToken = "admin-token-two-servers-0123456789";
const FREE_MODEL = "meta-llama/llama-3.3-70b-instruct:free";
const ACCOUNT = "user_abc"; // keyInfo's creator_user_id: discovery names the same account

const { fake, log, folder, cleanups } = useSuite({ secrets: [...testKeys, adminToken] });
afterAll(killAllProxies);

interface StoredFile {
  keys: Array<{ key: string; id: string; state?: { cooldownUntil?: string; requests?: number; successes?: number } }>;
  accounts?: Record<string, { free?: { day: string; used: number } }>;
}

/** A keys file with three keys of one account, and two servers started on it. */
async function twoServers(): Promise<{ keysFile: string; env: Record<string, string>; servers: [ProxyProcess, ProxyProcess] }> {
  const dir = await folder();
  const keysFile = join(dir, "keys.json");
  await writeFile(keysFile, JSON.stringify({ keys: [keyA, keyB, keyC].map((key) => ({ key, account: ACCOUNT })) }));
  const env = {
    KEYS_FILE: keysFile,
    LOG_DIR: join(dir, "logs"),
    OPENROUTER_BASE_URL: fake.url,
    ADMIN_TOKEN: adminToken,
    ROTATION: "round-robin",
    RETRY_BACKOFF_MS: "0",
  };
  const servers = await Promise.all([startProxyProcess({ cwd: dir, env }), startProxyProcess({ cwd: dir, env })]);
  return { keysFile, env, servers: servers as [ProxyProcess, ProxyProcess] };
}

async function chat(server: ProxyProcess, model = "openai/gpt-4o-mini"): Promise<number> {
  const response = await fetch(`${server.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] }),
  });
  log.record(await response.text());
  return response.status;
}

async function statusOf(server: ProxyProcess, id: string): Promise<string | undefined> {
  const response = await fetch(`${server.url}/admin/keys`, { headers: { authorization: `Bearer ${adminToken}` } });
  const body = (await response.json()) as { keys: Array<{ id: string; status: string }> };
  return body.keys.find((key) => key.id === id)?.status;
}

const readStored = async (path: string): Promise<StoredFile> => JSON.parse(await readFile(path, "utf8")) as StoredFile;
const chatRequests = () => fake.requests.filter((request) => request.path === "/chat/completions");
const sentWith = (key: string) => chatRequests().filter((request) => request.key === key).length;

/** Both servers end by SIGTERM: each flushes what it holds, merged with what the other wrote. */
async function stopBoth(servers: readonly ProxyProcess[]): Promise<void> {
  for (const server of servers) server.signal("SIGTERM");
  for (const server of servers) expect(await server.exited).toBe(0);
}

/** keyA answers 429 with a reset ten minutes away; every other key answers. */
function keyARateLimited(reset: number): void {
  fake.reply(
    keyEndpoint(
      () => true,
      (request) => (request.key === keyA ? errorReply(429, "Rate limit exceeded", { headers: { "X-RateLimit-Reset": String(reset) } }) : chatCompletion("ok")),
    ),
  );
}

/** Server A meets keyA's 429; server B, which has served nothing yet, reads A's save. */
async function coolingSeenByBoth(servers: [ProxyProcess, ProxyProcess]): Promise<void> {
  const [a, b] = servers;
  for (let i = 0; i < 5 && sentWith(keyA) === 0; i++) expect(await chat(a)).toBe(200); // the 429 is retried on another key
  expect(sentWith(keyA)).toBe(1);
  await eventually(async () => (await statusOf(b, idA)) === "cooling", { timeoutMs: 5000, what: "server B to read server A's cooldown of keyA" });
}

describe("two servers on one keys file", () => {
  test("two servers on one keys file keep each other's cooldowns", async () => {
    const reset = Date.now() + 600_000;
    keyARateLimited(reset);
    const { keysFile, servers } = await twoServers();
    const [a, b] = servers;
    await coolingSeenByBoth(servers);

    // B never sends keyA a request before the reset; nor does A after B's saves.
    for (let i = 0; i < 12; i++) expect(await chat(b)).toBe(200);
    for (let i = 0; i < 6; i++) expect(await chat(a)).toBe(200);
    expect(sentWith(keyA)).toBe(1);
    await stopBoth(servers);
    const stored = (await readStored(keysFile)).keys.find((entry) => entry.id === idA);
    expect(stored?.state?.cooldownUntil).toBe(new Date(reset).toISOString());
  }, 30_000);

  test("two servers on one keys file keep each other's free-model counts", async () => {
    fake.reply(keyEndpoint(() => true));
    const { keysFile, servers } = await twoServers();
    const [a, b] = servers;
    // Interleaved and concurrent: each server saves while the other counts.
    await Promise.all([
      (async () => {
        for (let i = 0; i < 9; i++) expect(await chat(a, FREE_MODEL)).toBe(200);
      })(),
      (async () => {
        for (let i = 0; i < 7; i++) expect(await chat(b, FREE_MODEL)).toBe(200);
      })(),
    ]);
    expect(chatRequests()).toHaveLength(16);
    // While both run, each one's saves keep the other's count: the file reaches the sum.
    await eventually(async () => (await readStored(keysFile)).accounts?.[ACCOUNT]?.free?.used === 16, { timeoutMs: 5000, what: "the file to count all 16 free requests" });
    await stopBoth(servers);
    expect((await readStored(keysFile)).accounts?.[ACCOUNT]?.free).toEqual({ day: utcDay(Date.now()), used: 16 });
  }, 30_000);

  test("two servers on one keys file: counters add up", async () => {
    fake.reply(keyEndpoint(() => true));
    const { keysFile, servers } = await twoServers();
    const [a, b] = servers;
    await Promise.all(
      Array.from({ length: 4 }, async (_, lane) => {
        for (let i = 0; i < 10; i++) expect(await chat(lane % 2 === 0 ? a : b)).toBe(200);
      }),
    );
    await stopBoth(servers);
    const keys = (await readStored(keysFile)).keys;
    const total = (field: "requests" | "successes") => keys.reduce((sum, entry) => sum + (entry.state?.[field] ?? 0), 0);
    expect(chatRequests()).toHaveLength(40);
    expect(total("requests")).toBe(40);
    expect(total("successes")).toBe(40);
    for (const key of [keyA, keyB, keyC]) {
      expect(keys.find((entry) => entry.key === key)?.state?.requests).toBe(sentWith(key));
    }
  }, 30_000);

  test("a person's enable wins over either server's cooldown", async () => {
    keyARateLimited(Date.now() + 600_000);
    const { keysFile, env, servers } = await twoServers();
    const [a, b] = servers;
    await coolingSeenByBoth(servers);
    for (let i = 0; i < 3; i++) expect(await chat(b)).toBe(200); // B saves with the cooldown it adopted

    fake.reply(keyEndpoint(() => true));
    const enabled = await runCli(["enable-key", idA], { cwd: join(keysFile, ".."), env, log });
    expect(enabled.code).toBe(0);
    for (const server of servers) {
      await eventually(async () => (await statusOf(server, idA)) === "active", { timeoutMs: 5000, what: "both servers to take the person's enable" });
    }
    // Neither server's save brings the cooldown back: each uses keyA again (round-robin over 3 keys).
    for (const server of [a, b, a, b]) {
      const before = sentWith(keyA);
      for (let i = 0; i < 3; i++) expect(await chat(server)).toBe(200);
      expect(sentWith(keyA)).toBe(before + 1);
    }
    await stopBoth(servers);
    const stored = (await readStored(keysFile)).keys.find((entry) => entry.id === idA);
    expect(stored?.state?.cooldownUntil).toBeUndefined();
  }, 30_000);
});

describe("a person's reset and the counts a server holds", () => {
  /** A server that saves only when told, with three requests on keyA counted in memory. */
  async function countedNotSaved() {
    const proxy = await startTestProxy({ upstream: fake.url, keys: [keyA, keyB], config: { ADMIN_TOKEN: adminToken }, overrides: { saveDelayMs: 60_000 } });
    cleanups.push(() => proxy.close());
    for (let i = 0; i < 3; i++) {
      const acquired = proxy.pool.acquire({ prefer: idA });
      if (!acquired.ok) throw new Error(acquired.reason);
      proxy.pool.report(acquired.lease.keyId, { kind: "ok" });
    }
    return proxy;
  }

  test("a person's enable keeps the requests a server counted and had not saved yet", async () => {
    const proxy = await countedNotSaved();
    // Another process (the CLI) enables keyA in the file: the server takes the person's reset.
    const before = proxy.pool.records().find((record) => record.id === idA)?.resetAt;
    const enabled = await createJsonFileStore({ path: proxy.keysFile }).update((doc) => enableKey(doc, idA, Date.now()).doc);
    expect(enabled.ok).toBe(true);
    await eventually(() => proxy.pool.records().find((record) => record.id === idA)?.resetAt !== before, { what: "the server to take the enable" });
    await proxy.sync.flush();
    const stored = (await readStored(proxy.keysFile)).keys.find((entry) => entry.id === idA);
    expect(stored?.state?.requests).toBe(3);
    expect(stored?.state?.successes).toBe(3);
  });

  test("a person's enable through the admin API keeps the requests the server counted and had not saved yet", async () => {
    const proxy = await countedNotSaved();
    const response = await fetch(`${proxy.url}/admin/keys/${idA}/enable`, { method: "POST", headers: { authorization: `Bearer ${adminToken}` } });
    log.record(await response.text());
    expect(response.status).toBe(200);
    await proxy.sync.flush();
    const stored = (await readStored(proxy.keysFile)).keys.find((entry) => entry.id === idA);
    expect(stored?.state?.requests).toBe(3);
  });
});
