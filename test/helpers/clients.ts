/** Client keys in tests: the CLI that prints one, and the secret scan that must never see one again. */
import { createOutputLog, runCli, type CliResult, type OutputLog } from "./cli.ts";

export const clientKeyShape = /^sk-orp-[A-Za-z0-9_-]{43}$/;

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
