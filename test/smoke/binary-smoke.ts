/**
 * Smoke test of the compiled binary (run by .ci/run after `bun run build`): start
 * `dist/openrouter-proxy` against the fake OpenRouter, send a plain and a streamed chat completion
 * with the openai client, load the embedded status page, stop it with SIGTERM, and check the key file kept its state.
 * Usage: bun run test/smoke/binary-smoke.ts [path-to-binary]
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import OpenAI from "openai";
import { sseText, startFakeOpenRouter } from "../helpers/fake-openrouter.ts";

const binary = resolve(process.argv[2] ?? "dist/openrouter-proxy");
const secret = "sk-or-v1-smoke-0123456789abcdef0123456789abcdef";
const dir = await mkdtemp(join(tmpdir(), "orp-smoke-"));
const keysFile = join(dir, "keys.json");
await writeFile(keysFile, JSON.stringify({ keys: [{ key: secret, label: "smoke" }] }));
const fake = startFakeOpenRouter();

const child = Bun.spawn([binary, "--port", "0"], {
  cwd: dir,
  env: { ...process.env, OPENROUTER_BASE_URL: fake.url, KEYS_FILE: keysFile, HOST: "127.0.0.1", ADMIN_TOKEN: "smoke-admin-token-0123456789abcdef" },
  stdout: "pipe",
  stderr: "pipe",
});

function fail(message: string): never {
  console.error(`smoke: FAILED: ${message}`);
  child.kill("SIGKILL");
  process.exit(1);
}

const timeout = setTimeout(() => fail("timed out after 20 s"), 20_000);
try {
  // The first stdout line says where it listens.
  const reader = child.stdout.getReader();
  let output = "";
  while (!/listening on (\S+)/.test(output)) {
    const { done, value } = await reader.read();
    if (done) fail(`the binary exited before listening: ${output}${await new Response(child.stderr).text()}`);
    output += new TextDecoder().decode(value);
  }
  const baseURL = /listening on (\S+)/.exec(output)?.[1] as string;
  const client = new OpenAI({ baseURL, apiKey: "dummy", maxRetries: 0 });

  const completion = await client.chat.completions.create({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
  if (!completion.choices[0]?.message.content?.startsWith("hello from")) fail(`unexpected completion ${JSON.stringify(completion)}`);

  fake.replyOnce(() => new Response(sseText(["smoke ", "ok"]), { headers: { "content-type": "text/event-stream" } }));
  let streamed = "";
  for await (const chunk of await client.chat.completions.create({ model: "m", stream: true, messages: [{ role: "user", content: "hi" }] })) {
    streamed += chunk.choices[0]?.delta.content ?? "";
  }
  if (streamed !== "smoke ok") fail(`unexpected stream ${JSON.stringify(streamed)}`);
  if (fake.requests.some((request) => request.key !== secret)) fail("the upstream did not receive the configured key");

  // The status page is embedded in the binary (imported as text), not read from a file beside it.
  const page = await fetch(new URL("/admin/", baseURL));
  if (page.status !== 200 || !(await page.text()).startsWith("<!doctype html>")) fail(`the status page was not served (${page.status})`);

  child.kill("SIGTERM");
  const code = await child.exited;
  if (code !== 0) fail(`exit code ${code} after SIGTERM`);
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    output += new TextDecoder().decode(value);
  }
  const rest = output + (await new Response(child.stderr).text());
  if (rest.includes(secret)) fail("the key appeared in the binary's output");
  const saved = JSON.parse(await readFile(keysFile, "utf8")) as { keys: Array<{ id: string; state: { requests: number } }> };
  if (saved.keys[0]?.state.requests !== 2) fail(`key state not saved: ${JSON.stringify(saved.keys[0]?.state)}`);
  console.log(`smoke: ok (${binary}: plain and streamed completions, status page, SIGTERM exit 0, key state saved)`);
} finally {
  clearTimeout(timeout);
  await fake.stop();
  await rm(dir, { recursive: true, force: true });
}
