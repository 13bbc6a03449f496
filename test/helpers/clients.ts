/** Client keys in tests: the CLI and admin calls that print one, answers with a chosen cost, and the secret scan. */
import { createOutputLog, runCli, type CliResult, type OutputLog } from "./cli.ts";

export const clientKeyShape = /^sk-orp-[A-Za-z0-9_-]{43}$/;
export const adminToken = "admin-token-for-client-tests";

/**
 * Runs a client command that prints a new key (add-client, rotate-client). The key is the one
 * output allowed to hold it: it goes to `secrets` (scanned in everything else) and its line is
 * recorded in `log` without it.
 */
export async function runKeyPrintingCli(
  args: string[],
  { cwd, env, log, secrets }: { cwd: string; env: Record<string, string>; log: OutputLog; secrets: string[] },
): Promise<CliResult & { key: string }> {
  const result = await runCli(args, { cwd, env, log: createOutputLog() });
  const key = result.stdout.trim();
  if (result.code === 0) {
    if (!clientKeyShape.test(key)) throw new Error(`${args[0]} printed no key on stdout: ${JSON.stringify(result.stdout.slice(0, 20))}…`);
    secrets.push(key);
  }
  log.record(result.stdout.replace(key, "<new key>"), result.stderr);
  return { ...result, key };
}

/** A chat completion whose usage reports `tokens` and `cost`. */
export function answerCosting(cost: number, tokens = 8): Response {
  return Response.json({
    id: "gen-cost-1",
    object: "chat.completion",
    created: 1_780_000_000,
    model: "openai/gpt-4o-mini",
    choices: [{ index: 0, message: { role: "assistant", content: "hi" }, finish_reason: "stop" }],
    usage: { prompt_tokens: tokens - 1, completion_tokens: 1, total_tokens: tokens, cost },
  });
}

/** The same as a stream, its usage in the last chunk as OpenRouter sends it. */
export function streamCosting(cost: number, tokens = 8): Response {
  const chunk = (body: object) => `data: ${JSON.stringify({ id: "gen-cost-s", object: "chat.completion.chunk", created: 1_780_000_000, model: "openai/gpt-4o-mini", ...body })}\n\n`;
  const text =
    chunk({ choices: [{ index: 0, delta: { content: "hi" }, finish_reason: null }] }) +
    chunk({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }) +
    chunk({ choices: [], usage: { prompt_tokens: tokens - 1, completion_tokens: 1, total_tokens: tokens, cost } }) +
    "data: [DONE]\n\n";
  return new Response(text, { headers: { "content-type": "text/event-stream" } });
}

/** Admin API calls, every answer recorded for the scan (a new key's answer without its key). */
export function adminClient(url: string, log: OutputLog, secrets: string[]) {
  const call = async (method: string, path: string, body?: unknown) => {
    const response = await fetch(`${url}/admin${path}`, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, ...(body === undefined ? {} : { "content-type": "application/json" }) },
      ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
    const text = await response.text();
    const json = text === "" ? {} : (JSON.parse(text) as Record<string, unknown>);
    if (typeof json.key === "string") {
      secrets.push(json.key);
      log.record(text.replace(json.key, "<new key>"));
    } else {
      log.record(text);
    }
    return { status: response.status, json, headers: response.headers };
  };
  return {
    call,
    /** Adds a client and returns its key. */
    async add(name: string, settings: Record<string, unknown> = {}): Promise<string> {
      const { status, json } = await call("POST", "/clients", { name, ...settings });
      if (status !== 201 || typeof json.key !== "string") throw new Error(`adding client ${name}: ${status} ${JSON.stringify(json)}`);
      return json.key;
    },
  };
}
