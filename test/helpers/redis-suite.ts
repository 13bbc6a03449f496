/**
 * The setup the Redis suites share: one real redis-server per test file (started once in
 * beforeAll, stopped in afterAll), and every test kept apart from the keys of the others.
 *
 * - `useRedisServer()` is for the in-process suites (the connection, scripts, change channel,
 *   counters). After each test its cleanups run (last added first), a server it paused or killed
 *   runs again, and FLUSHALL empties it: the next test starts on an empty server.
 * - `useRedisProxies()` is for the suites of real `serve` processes and CLI runs. The processes are
 *   killed after each test. Each test takes a fresh REDIS_PREFIX (a pool of its own on the one
 *   server, as several pools would share one), so it never sees another test's keys.
 *
 * What a file does differently (its prefix stem, an env var every instance gets, an extra check
 * after each test) stays written in the file; this holds only the lines they had in common.
 */
import { afterAll, afterEach, beforeAll } from "bun:test";
import { mkdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRedisConnection, type RedisConnection } from "../../src/store/redis/connection.ts";
import { createOutputLog, runCli, type CliResult, type OutputLog } from "./cli.ts";
import { killAllProxies, startProxyProcess, type ProxyProcess } from "./proxy-process.ts";
import { redisServerPath, startRedisServer, type RedisServer } from "./redis-server.ts";

/** Files whose tests can run without redis-server skip them on this (`describe.skipIf(!hasRedis)`). */
export const hasRedis = redisServerPath() !== null;

/**
 * The server and the file's connection exist only once beforeAll has run, yet the suites read them
 * as module constants (`redis.url`, `connection.send(...)`, `sharedStateScripts(connection, keys)`
 * at the top of a file). This stands in for the value and hands every read to the current one.
 */
function lateBound<T extends object>(what: string, current: () => T | undefined): T {
  return new Proxy({} as T, {
    get(_, property) {
      // Not a promise: an async function returning this must not wait on it.
      if (property === "then") return undefined;
      const value = current();
      if (value === undefined) throw new Error(`${what} is not there: used outside a test, or redis-server is not installed`);
      const field: unknown = Reflect.get(value, property, value);
      return typeof field === "function" ? field.bind(value) : field;
    },
  });
}

export interface RedisServerOptions {
  /**
   * A connection for the whole file, opened once the server answers and closed before it stops.
   * Its 2 s timeout is far above anything the tests wait for, so a slow machine never makes it degraded.
   */
  connection?: boolean;
  /**
   * With no redis-server installed, start nothing (the file skips its tests on `hasRedis`).
   * Without it, a missing redis-server fails the file, as it did before these were shared.
   */
  optional?: boolean;
}

export interface RedisServerSuite {
  redis: RedisServer;
  /** The file's connection (only with `connection: true`). */
  connection: RedisConnection;
  /** Run after each test, last added first, before the server is emptied. */
  cleanups: Array<() => Promise<void>>;
}

export function useRedisServer({ connection: withConnection = false, optional = false }: RedisServerOptions = {}): RedisServerSuite {
  const starts = !optional || hasRedis;
  let server: RedisServer | undefined;
  let connection: RedisConnection | undefined;
  const cleanups: Array<() => Promise<void>> = [];

  beforeAll(async () => {
    if (!starts) return;
    server = await startRedisServer();
    if (withConnection) {
      connection = createRedisConnection({ url: server.url, timeoutMs: 2_000 });
      await connection.ready;
    }
  });
  afterAll(async () => {
    await connection?.close();
    await server?.stop();
  });
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    if (!server) return;
    // A test that paused or killed Redis leaves it running again for the next one.
    try {
      server.resume();
    } catch {
      await server.restart();
    }
    await server.cli("FLUSHALL");
  });

  return {
    redis: lateBound("the redis-server", () => server),
    connection: lateBound("the file's Redis connection (useRedisServer({ connection: true }))", () => connection),
    cleanups,
  };
}

export interface RedisProxiesOptions {
  /** The start of each test's REDIS_PREFIX: `${prefixStem}${n}:`, n counting the file's tests. */
  prefixStem: string;
  /** ADMIN_TOKEN of every instance and CLI run. */
  admin: string;
  /** Variables every `envFor` adds for this file (a test's own `extra` still wins). */
  env?: Record<string, string>;
}

export interface RedisProxiesSuite {
  redis: RedisServer;
  /** The file's folder (cwd of every process; keys files and logs go in it), removed after the file. */
  dir: string;
  /** Where the CLI runs keep what they printed. */
  log: OutputLog;
  /** A REDIS_PREFIX no other test of the file has used. */
  freshPrefix(): string;
  /** The environment of an instance (or CLI run) of the pool under `prefix` on the file's Redis. */
  envFor(prefix: string, upstream: string, extra?: Record<string, string>): Record<string, string>;
  /** The real CLI, in `dir`, given 10 s. */
  cli(env: Record<string, string>, ...args: string[]): Promise<CliResult>;
  /** `count` real `serve` processes started together on one environment. */
  startInstances(count: number, env: Record<string, string>): Promise<ProxyProcess[]>;
}

/** For suites that are skipped without redis-server: they use `describe.skipIf(!hasRedis)`. */
export function useRedisProxies({ prefixStem, admin, env: fileEnv = {} }: RedisProxiesOptions): RedisProxiesSuite {
  let server: RedisServer | undefined;
  // Named now, made in beforeAll: test bodies can use it as a plain string.
  const dir = join(tmpdir(), `orp-test-${crypto.randomUUID()}`);
  const log = createOutputLog();
  let prefixCount = 0;

  beforeAll(async () => {
    if (!hasRedis) return;
    server = await startRedisServer();
    await mkdir(dir);
  });
  afterEach(async () => {
    await killAllProxies();
  });
  afterAll(async () => {
    await killAllProxies();
    if (server) {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  const redis = lateBound("the redis-server", () => server);
  return {
    redis,
    dir,
    log,
    freshPrefix: () => `${prefixStem}${++prefixCount}:`,
    envFor: (prefix, upstream, extra = {}) => ({
      REDIS_URL: redis.url,
      REDIS_PREFIX: prefix,
      KEYS_FILE: join(dir, `${prefix.replace(":", "")}-keys.json`),
      LOG_DIR: join(dir, "logs"),
      OPENROUTER_BASE_URL: upstream,
      ADMIN_TOKEN: admin,
      RETRY_BACKOFF_MS: "0",
      ...fileEnv,
      ...extra,
    }),
    cli: (env, ...args) => runCli(args, { cwd: dir, env, log, limitMs: 10_000 }),
    startInstances: (count, env) => Promise.all(Array.from({ length: count }, () => startProxyProcess({ cwd: dir, env }))),
  };
}
