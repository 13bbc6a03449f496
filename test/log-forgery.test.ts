/**
 * Logs cannot be forged: control characters (CR, LF, ESC, other C0, DEL and C1) in any
 * client-supplied value are escaped in every log line, on the real stdout of a `serve` process and
 * in the log files alike. A model name carrying `\n`, `\r` and `\x1b[31m` makes one line, escaped.
 */
import { afterAll, describe, expect, test } from "bun:test";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { escapeHumanLine, escapeJsonLine } from "../src/observe/log/escape-controls.ts";
import { chatCompletion, errorReply } from "./helpers/fake-openrouter.ts";
import { allLogText, logFiles } from "./helpers/log-files.ts";
import { killAllProxies, startProxyProcess } from "./helpers/proxy-process.ts";
import { connectRaw } from "./helpers/raw-http.ts";
import { useSuite } from "./helpers/suite.ts";
import { testKeys } from "./helpers/test-proxy.ts";

const { fake, folder, cleanups } = useSuite({ secrets: testKeys });
afterAll(() => killAllProxies());

const forged = "2026-12-04T00:00:00.000Z 200 POST /v1/chat/completions openai/gpt-4o k_forged 1 try 1 ms";
const evilModel = `evil-model\n${forged}\r\x1b[31mRED\x1b[0m\x07\x00\x7f\u0085\u009b2J\u2028end`;
/** Every raw control character a terminal or a line reader would act on. */
const rawControls = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u2028\u2029]/;

describe("logs cannot be forged", () => {
  test("a model with \\n, \\r and \\x1b[31m gives one log line, escaped, on stdout and in the files", async () => {
    const dir = await folder();
    const keysFile = join(dir, "keys.json");
    const logDir = join(dir, "logs");
    await writeFile(keysFile, JSON.stringify({ keys: [{ key: testKeys[0], label: "only" }] }));
    // A served answer, then an upstream error that quotes the model back (its message is logged too).
    fake.reply((request) => {
      if (request.path !== "/chat/completions") return Response.json({ data: { label: "only", usage: 0, limit: null } });
      const { model } = JSON.parse(request.body) as { model: string };
      return model.startsWith("again") ? errorReply(400, `${model} is not a valid model ID`) : chatCompletion("ok");
    });
    const child = await startProxyProcess({ cwd: dir, env: { OPENROUTER_BASE_URL: fake.url, KEYS_FILE: keysFile, LOG_DIR: logDir, LOG_LEVEL: "info" } });
    cleanups.push(() => child.kill());

    for (const model of [evilModel, `again-${evilModel}`]) {
      const response = await fetch(`${child.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model, messages: [{ role: "user", content: "hi" }] }),
      });
      await response.text();
    }
    // A header value with obs-text (0x85 is C1 NEL once read as Latin-1), sent as raw bytes.
    const connection = await connectRaw(child.port);
    const head = `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nUser-Agent: agent-`;
    await connection.write(new Uint8Array([...new TextEncoder().encode(head), 0x85, 0x9b, ...new TextEncoder().encode("-end\r\n\r\n")]));
    await connection.closed;

    await child.waitForStdout(/ 400 POST \/v1\/chat\/completions again-evil-model[^\n]*\n/);
    await child.waitForStdout(/ GET \/v1\/models [^\n]*\n/);
    const stdout = child.stdout();
    expect(stdout).not.toMatch(rawControls);
    expect(stdout).not.toContain(`\n${forged}`);
    const evilLines = stdout.split("\n").filter((line) => line.includes("evil-model"));
    expect(evilLines).toHaveLength(2);
    for (const line of evilLines) {
      expect(line).toContain(String.raw`evil-model\n2026-12-04T00:00:00.000Z 200 POST`);
      expect(line).toContain(String.raw`\r\u001b[31mRED\u001b[0m\u0007\u0000\u007f\u0085\u009b2J\u2028end`);
    }
    // The upstream's message quoting the model is on the error's line, escaped as well.
    expect(evilLines[1]).toContain(String.raw`: upstream answered 400: again-evil-model\n`);

    // The files: one JSON line per request, the values intact once parsed, nothing raw in the text.
    await child.signal("SIGTERM");
    expect(await child.exited).toBe(0);
    const fileText = await allLogText(logDir);
    expect(fileText).not.toMatch(rawControls);
    const requestsFile = (await logFiles(logDir)).find((name) => name.startsWith("requests-")) ?? "";
    const lines = (await Bun.file(join(logDir, requestsFile)).text()).split("\n").filter((line) => line !== "");
    const records = lines.map((line) => JSON.parse(line) as { model?: string; path: string; userAgent?: string; error?: string });
    const chats = records.filter((record) => record.path === "/chat/completions");
    expect(chats.map((record) => record.model)).toEqual([evilModel, `again-${evilModel}`]);
    expect(chats[1]?.error).toContain(evilModel);
    expect(records.find((record) => record.path === "/models")?.userAgent).toBe("agent-\u0085\u009b-end");
  });

  test.each([
    ["LF in the middle", "a\nb\n", "a\\nb\n"],
    ["CR, ESC, BEL, NUL", "x\r\x1b[2J\x07\x00\n", "x\\r\\u001b[2J\\u0007\\u0000\n"],
    ["DEL, C1 CSI, NEL", "\x7f\u009b\u0085", "\\u007f\\u009b\\u0085"],
    ["a tab", "a\tb\n", "a\\tb\n"],
    ["nothing to escape (the same string back)", "2026 200 POST /v1/chat/completions ü 漢字 😀\n", "2026 200 POST /v1/chat/completions ü 漢字 😀\n"],
  ])("a human line with %s is escaped, its final newline kept", (_what, line, expected) => {
    expect(escapeHumanLine(line)).toBe(expected);
  });

  test("a JSON line keeps its values: DEL, C1 and the line separators are written as \\u escapes", () => {
    const value = { model: "a\u0085b\u2028c\x7f", plain: "ü" };
    const line = escapeJsonLine(JSON.stringify(value));
    // (Not String.raw: Bun's transpiler writes the "ü" of a raw template as its \u escape.)
    expect(line).toBe('{"model":"a\\u0085b\\u2028c\\u007f","plain":"ü"}');
    expect(JSON.parse(line)).toEqual(value);
  });
});
