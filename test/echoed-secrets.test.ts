/**
 * No pool key ever travels back: an upstream that echoes the `Authorization` it received (in an
 * error body, a header, an in-band stream error, a 200 that carries an error) must not hand the key
 * to the client, nor to the logs, the admin API, the keys file or the command line. Credentials in
 * OPENROUTER_BASE_URL are shown as `***` wherever the URL is named.
 */
import { describe, expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { maskKey } from "../src/domain/key-identity.ts";
import { runCli, unreachableUpstream } from "./helpers/cli.ts";
import { sseChunk, type FakeRequest } from "./helpers/fake-openrouter.ts";
import { allLogText } from "./helpers/log-files.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const adminToken = "admin-token-for-the-echo-tests-0123456789";
const { fake, log, cleanups, folder } = useSuite({ secrets: [...testKeys, adminToken, "s3cr3t-pass"] });

/** What the upstream got as its Authorization header, sent back. */
const echo = (request: FakeRequest) => request.headers.get("authorization") ?? "";
const echoedError = (status: number) => (request: FakeRequest) =>
  Response.json(
    { error: { code: status, message: `bad credentials: ${echo(request)}`, metadata: { raw: `you sent ${request.key}` } } },
    { status, headers: { "www-authenticate": `Bearer realm="x", error="${echo(request)}"`, "x-echo": request.key } },
  );

async function start(config: Parameters<typeof startTestProxy>[0]["config"] = {}): Promise<TestProxy> {
  const proxy = await startTestProxy({ upstream: fake.url, config: { ADMIN_TOKEN: adminToken, LOG_LEVEL: "debug", LOG_BODIES: true, ...config } });
  cleanups.push(() => proxy.close());
  return proxy;
}

async function chat(proxy: TestProxy, body: Record<string, unknown> = {}): Promise<{ status: number; text: string; headers: string }> {
  const response = await fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }], ...body }),
  });
  const text = await response.text();
  const headers = JSON.stringify([...response.headers]);
  log.record(text, headers);
  return { status: response.status, text, headers };
}

/** Everything the proxy keeps or shows: logs, stdout/stderr, admin answers, the keys file. */
async function recordEverything(proxy: TestProxy): Promise<void> {
  await proxy.logging.flush();
  await proxy.sync.flush();
  const admin = (path: string) => fetch(`${proxy.url}/admin${path}`, { headers: { authorization: `Bearer ${adminToken}` } }).then((r) => r.text());
  log.record(await allLogText(proxy.logDir), proxy.output.out, proxy.output.err, await admin("/requests"), await admin("/keys"), await admin("/usage"));
  log.record(await keysFileWithoutSecrets(proxy.keysFile));
}

/** The keys file as text, less the `key` fields that hold the secrets by design: what is left (reasons, state) is scanned. */
async function keysFileWithoutSecrets(path: string): Promise<string> {
  const doc = JSON.parse(await readFile(path, "utf8")) as { keys: Array<Record<string, unknown>> };
  for (const entry of doc.keys) delete entry.key;
  return JSON.stringify(doc);
}

describe("no pool key ever travels back", () => {
  test.each([400, 401, 500])("a %i whose body and headers echo the key reaches the client with the key masked", async (status) => {
    fake.reply(echoedError(status));
    const proxy = await start({ MAX_ATTEMPTS: 1 });
    const answer = await chat(proxy);
    expect(answer.status).toBe(status);
    expect(answer.text).toContain(`bad credentials: Bearer ${maskKey(testKeys[0] as string)}`);
    expect(answer.headers).toContain(`error=\\"Bearer ${maskKey(testKeys[0] as string).replace("…", "...")}\\"`);
    await recordEverything(proxy);
  });

  test("keys disabled and rested for an echoing upstream keep only masked keys in their reasons, the keys file and the admin API", async () => {
    fake.reply(echoedError(401));
    const proxy = await start({ FAILURE_THRESHOLD: 1, MAX_ATTEMPTS: 3 });
    expect((await chat(proxy)).status).toBe(401);
    const keys = await (await fetch(`${proxy.url}/admin/keys`, { headers: { authorization: `Bearer ${adminToken}` } })).text();
    expect(keys).toContain(maskKey(testKeys[0] as string));
    await recordEverything(proxy);
  });

  test("an in-band stream error that echoes the key is masked, before and after the commit point", async () => {
    const errorEvent = (request: FakeRequest) => `data: ${JSON.stringify({ error: { code: 400, message: `bad: ${echo(request)}` }, choices: [{ index: 0, delta: { content: "" }, finish_reason: "error" }] })}\n\n`;
    const sse = (text: string) => new Response(text, { headers: { "content-type": "text/event-stream" } });
    fake.replyOnce((request) => sse(errorEvent(request)), (request) => sse(`${sseChunk("partial ")}${errorEvent(request)}`));
    const proxy = await start({ MAX_ATTEMPTS: 1 });
    const before = await chat(proxy, { stream: true });
    const after = await chat(proxy, { stream: true });
    for (const answer of [before, after]) expect(answer.text).toContain(`bad: Bearer ${maskKey(testKeys[0] as string)}`);
    expect(after.text).toContain("partial ");
    await recordEverything(proxy);
  });

  test("a key split across stream chunks is still masked", async () => {
    const key = testKeys[0] as string;
    const encoder = new TextEncoder();
    fake.reply((request) => {
      const text = `${sseChunk("x")}data: {"error":{"code":502,"message":"upstream saw ${request.key}"}}\n\n`;
      const cut = text.indexOf(key) + 20;
      const pieces = [text.slice(0, text.indexOf(key) + 3), text.slice(text.indexOf(key) + 3, cut), text.slice(cut)];
      return new Response(
        new ReadableStream({
          async pull(controller) {
            const piece = pieces.shift();
            if (piece === undefined) return controller.close();
            controller.enqueue(encoder.encode(piece));
            await Bun.sleep(5); // separate reads on the proxy's side, so the pieces stay separate chunks
          },
        }),
        { headers: { "content-type": "text/event-stream" } },
      );
    });
    const proxy = await start({ MAX_ATTEMPTS: 1 });
    const answer = await chat(proxy, { stream: true });
    expect(answer.text).toContain(`upstream saw ${maskKey(key)}`);
    await recordEverything(proxy);
  });

  test("a non-streamed 200 that carries an error echoing the key is masked", async () => {
    fake.reply((request) => Response.json({ error: { code: 400, message: `bad: ${echo(request)}` } }));
    const proxy = await start({ MAX_ATTEMPTS: 1 });
    const answer = await chat(proxy);
    expect(answer.text).toContain(`bad: Bearer ${maskKey(testKeys[0] as string)}`);
    await recordEverything(proxy);
  });

  test("a successful answer stays byte-identical", async () => {
    const body = JSON.stringify({ id: "gen-1", choices: [{ index: 0, message: { role: "assistant", content: "sk-or-v1-looks-like-a-key but is not one of ours" } }] });
    fake.reply(() => new Response(body, { headers: { "content-type": "application/json" } }));
    const proxy = await start();
    expect((await chat(proxy)).text).toBe(body);
  });

  test("check-keys and add-key print an echoed key masked", async () => {
    fake.reply(echoedError(401));
    const dir = await folder();
    const keysFile = join(dir, "keys.json");
    const env = { KEYS_FILE: keysFile, OPENROUTER_BASE_URL: fake.url };
    const added = await runCli(["add-key", testKeys[1] as string], { cwd: dir, log, env });
    expect(added.stderr).toContain(`Bearer ${maskKey(testKeys[1] as string)}`);
    const forced = await runCli(["add-key", testKeys[1] as string, "--no-verify"], { cwd: dir, log, env });
    expect(forced.code).toBe(0);
    const checked = await runCli(["check-keys"], { cwd: dir, log, env });
    expect(checked.code).toBe(1);
    expect(checked.stdout).toContain(`Bearer ${maskKey(testKeys[1] as string)}`);
    log.record(await keysFileWithoutSecrets(keysFile));
  });
});

describe("credentials in OPENROUTER_BASE_URL are shown as ***", () => {
  test("a 502 names the upstream without its credentials", async () => {
    const closed = new URL(await unreachableUpstream());
    const upstream = `http://user:s3cr3t-pass@${closed.host}/api/v1`;
    const proxy = await startTestProxy({ upstream, config: { MAX_ATTEMPTS: 1, ADMIN_TOKEN: adminToken } });
    cleanups.push(() => proxy.close());
    const answer = await chat(proxy);
    expect(answer.status).toBe(502);
    expect(answer.text).toContain(`http://***@${closed.host}/api/v1`);
    await recordEverything(proxy);
  });

  test("a 504 names the upstream without its credentials", async () => {
    fake.reply(() => new Promise<Response>(() => {})); // never answers
    const upstream = fake.url.replace("http://", "http://user:s3cr3t-pass@");
    const proxy = await startTestProxy({ upstream, config: { MAX_ATTEMPTS: 1, UPSTREAM_TIMEOUT_SECONDS: 0.2, ADMIN_TOKEN: adminToken } });
    cleanups.push(() => proxy.close());
    const answer = await chat(proxy);
    expect(answer.status).toBe(504);
    expect(answer.text).toContain("http://***@127.0.0.1");
    await recordEverything(proxy);
  });

  test("serve and a bad OPENROUTER_BASE_URL never print the credentials", async () => {
    const dir = await folder();
    const bad = await runCli(["list-keys"], { cwd: dir, log, env: { OPENROUTER_BASE_URL: "ftp://user:s3cr3t-pass@example.invalid/x", KEYS_FILE: join(dir, "k.json") } });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("ftp://***@example.invalid/x");
  });
});
