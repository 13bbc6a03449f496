/** Reading the proxy's log files in tests: the JSON lines of one file, or every file's text. */
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";

export type LogName = "requests" | "errors" | "keys";
export type LogLine = Record<string, unknown>;

/** The lines of `<dir>/<name>-<day>.log`, each parsed; [] when the file does not exist. */
export async function readLog(dir: string, name: LogName, day: string): Promise<LogLine[]> {
  const text = await readFile(join(dir, `${name}-${day}.log`), "utf8").catch(() => "");
  return text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as LogLine);
}

/** Names in the log folder, sorted. */
export async function logFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

/** Every file in the folder, concatenated: for scanning. */
export async function allLogText(dir: string): Promise<string> {
  const names = await logFiles(dir).catch(() => []);
  const texts = await Promise.all(names.map((name) => readFile(join(dir, name), "utf8")));
  return texts.join("\n");
}

/**
 * Fails when `text` contains any of `secrets`, naming only a safe prefix of the one found (a
 * failure message must not print the secret it is about).
 */
export function expectNoSecrets(text: string, secrets: readonly string[], where: string): void {
  if (secrets.length === 0) throw new Error("no secrets to look for");
  for (const secret of secrets) {
    if (text.includes(secret)) throw new Error(`a secret (${secret.slice(0, 8)}…) appeared in ${where}`);
  }
}
