/** Starts the real proxy wiring against a fake upstream, with a temporary keys file. */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { defaultConfig, type Config } from "../../src/config.ts";
import { startProxy, type ProxyOverrides, type RunningProxy } from "../../src/compose.ts";

export const testKeys = ["sk-or-v1-test-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "sk-or-v1-test-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", "sk-or-v1-test-cccccccccccccccccccccccccccccccccccccc"];

export async function tempDir(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "orp-test-"));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export interface TestProxy extends RunningProxy {
  dir: string;
  keysFile: string;
  logDir: string;
  /** What the proxy wrote as human log lines (its stdout and stderr), for tests to read or scan. */
  output: { out: string; err: string };
  /** Stops the proxy and removes its folder. */
  close(): Promise<void>;
}

export interface TestProxyOptions {
  upstream: string;
  /** Keys written to the keys file first; `null` writes no file at all. */
  keys?: string[] | null;
  /** Raw text for the keys file, instead of `keys`. */
  keysFileText?: string;
  config?: Partial<Config>;
  overrides?: ProxyOverrides;
  dir?: string;
}

export async function startTestProxy({ upstream, keys = testKeys, keysFileText, config = {}, overrides = {}, dir }: TestProxyOptions): Promise<TestProxy> {
  const folder = dir ? { dir, cleanup: async () => {} } : await tempDir();
  const keysFile = join(folder.dir, "keys.json");
  if (keysFileText !== undefined) await writeFile(keysFile, keysFileText);
  else if (keys !== null) await writeFile(keysFile, JSON.stringify({ keys: keys.map((key, index) => ({ key, label: `key-${index}` })) }));
  const logDir = join(folder.dir, "logs");
  const output = { out: "", err: "" };
  const started = await startProxy(
    defaultConfig({ PORT: 0, OPENROUTER_BASE_URL: upstream, KEYS_FILE: keysFile, RETRY_BACKOFF_MS: 0, LOG_DIR: logDir, ...config }),
    {
      saveDelayMs: 20,
      counterSaveDelayMs: 20,
      // GET /key at startup would reach the fake and use up scripted replies; tests of it opt in.
      discoverAccounts: false,
      // GET /models (prices for budgets) would reach the fake too; tests of it opt in.
      modelCatalog: false,
      logOut: (text) => {
        output.out += text;
      },
      logErr: (text) => {
        output.err += text;
      },
      ...overrides,
    },
  );
  if (!started.ok) {
    await folder.cleanup();
    throw new Error(started.message);
  }
  return {
    ...started.proxy,
    dir: folder.dir,
    keysFile,
    logDir,
    output,
    async close() {
      await started.proxy.stop(0);
      await folder.cleanup();
    },
  };
}

/** Resolves once `proxy` has recorded `count` more finished requests (a stream's record is complete when it ends). */
export function requestsDone(proxy: Pick<TestProxy, "events">, count: number): Promise<void> {
  return new Promise<void>((resolve) => {
    let seen = 0;
    const off = proxy.events.on("request.done", () => {
      if (++seen === count) {
        off();
        resolve();
      }
    });
  });
}

/** Resolves when `predicate` holds, checking after each event the proxy's pool reports; polls as a fallback. */
export async function eventually(predicate: () => boolean | Promise<boolean>, { timeoutMs = 5000, what = "condition" } = {}): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}
