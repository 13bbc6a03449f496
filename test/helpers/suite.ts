/**
 * The setup most suites share: a fake OpenRouter for the whole file, things to clean up after each
 * test (run last-in first-out), and a scan of everything the test printed for full keys.
 */
import { afterAll, afterEach } from "bun:test";
import { createOutputLog, type OutputLog } from "./cli.ts";
import { startFakeOpenRouter, type FakeHandler, type FakeOpenRouter } from "./fake-openrouter.ts";
import { tempDir } from "./test-proxy.ts";

export interface SuiteOptions {
  /** Strings that must never appear in what `log` recorded; checked after each test. */
  secrets?: readonly string[];
  /** The fake's answer, put back after each test (a test may change it). */
  reply?: FakeHandler;
}

export interface Suite {
  fake: FakeOpenRouter;
  log: OutputLog;
  /** Run after the test, last added first. */
  cleanups: Array<() => Promise<void>>;
  /** A temporary folder, removed after the test. */
  folder(): Promise<string>;
}

export function useSuite({ secrets, reply }: SuiteOptions = {}): Suite {
  const fake = startFakeOpenRouter();
  if (reply) fake.reply(reply);
  const log = createOutputLog();
  const cleanups: Array<() => Promise<void>> = [];
  afterAll(() => fake.stop());
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    fake.requests.length = 0;
    fake.serveCatalog(null);
    if (reply) fake.reply(reply);
    if (secrets) log.expectNoSecrets(secrets);
  });
  return {
    fake,
    log,
    cleanups,
    async folder() {
      const { dir, cleanup } = await tempDir();
      cleanups.push(cleanup);
      return dir;
    },
  };
}
