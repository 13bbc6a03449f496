/**
 * Builds a running proxy from a config: the store, the pool, the sync between them, the
 * forwarder, the app and the HTTP server. `serve` uses it, and so do the tests (with a fake
 * upstream, an injected clock or sleep), so both run the same wiring.
 */
import { createHttpHandler } from "./http/app.ts";
import { startLogging, type Logging } from "./observe/log/loggers.ts";
import { createMetrics } from "./observe/metrics.ts";
import { createUsageLedger, type UsageLedger } from "./observe/usage-ledger.ts";
import type { Config } from "./config.ts";
import { createEventBus } from "./observe/event-bus.ts";
import type { EventBus } from "./domain/events.ts";
import { discoverAccounts } from "./keys/account-discovery.ts";
import { startAccountRefresher, type AccountRefresher } from "./keys/account-refresh.ts";
import { createJsonFileStore } from "./store/file/json-file-store.ts";
import { claimKeysFile, type ServerClaim } from "./store/file/server-claim.ts";
import { createKeyPool, type KeyPool } from "./keys/key-pool.ts";
import type { KeyStore } from "./store/ports.ts";
import { startStateSync, type StateSync } from "./store/state-sync.ts";
import { startHttpServer, stopGracefully, type HttpServer } from "./http/server.ts";
import { isLoopbackHost } from "./http/loopback.ts";
import { hasClients, startClients, type Clients } from "./clients/clients.ts";
import { abortableSleep, createForwarder } from "./upstream/forward.ts";
import { checkKey } from "./upstream/key-info.ts";
import { startModelCatalog, type ModelCatalog } from "./upstream/model-catalog.ts";
import type { PriceBook } from "./domain/model-prices.ts";
import { createSessionAffinity } from "./upstream/session-affinity.ts";
import { openRedisBackend, type RedisBackend } from "./store/redis/redis-backend.ts";
import { openSharedClients } from "./store/redis/client-store.ts";

export interface ProxyOverrides {
  fetch?: typeof fetch;
  now?: () => number;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  events?: EventBus;
  store?: KeyStore;
  /** How soon a decision (a rest, a cooldown, a person's edit) is saved to the keys file. */
  saveDelayMs?: number;
  /** How often, at most, counters alone are saved to the keys file. */
  counterSaveDelayMs?: number;
  idleTimeoutSeconds?: number;
  onStoreError?: (message: string) => void;
  onStoreRecovered?: (message: string) => void;
  /** How long after a failed keys-file write the save is tried again. */
  storeRetryDelayMs?: number;
  /** false: do not ask GET /key about the keys (at startup, when added, hourly). */
  discoverAccounts?: boolean;
  /** How often (real ms) the account refresher looks at the clock; 0: only when told (tests). */
  refreshTickMs?: number;
  /** false: never ask GET /models for prices (budgets then reserve by averages); the tick: as refreshTickMs. */
  modelCatalog?: boolean;
  catalogTickMs?: number;
  /** Where the human log lines go (default: stdout and stderr). */
  logOut?: (text: string) => void;
  logErr?: (text: string) => void;
}

export interface RunningProxy {
  server: HttpServer;
  url: string;
  pool: KeyPool;
  store: KeyStore;
  sync: StateSync;
  events: EventBus;
  ledger: UsageLedger;
  logging: Logging;
  clients: Clients;
  /** Settles when every key's account has been asked for once (GET /key). */
  discovery: Promise<void>;
  /** GET /key in the background after startup; absent when account lookups are off. */
  refresher?: AccountRefresher;
  /** GET /models in the background (prices for budgets); absent when it is off. */
  catalog?: ModelCatalog;
  /** With REDIS_URL: the shared state this instance runs on. */
  redis?: RedisBackend;
  keyCount: number;
  /** Graceful stop: drain within the grace period, then flush key state. */
  stop(graceMs?: number): Promise<void>;
}

export type StartResult = { ok: true; proxy: RunningProxy } | { ok: false; message: string };

export async function startProxy(config: Config, overrides: ProxyOverrides = {}): Promise<StartResult> {
  // Without PROXY_API_KEYS on a public address, only client keys can guard the proxy.
  const onlyClientKeysGuard = !config.PROXY_API_KEYS && !isLoopbackHost(config.HOST) && !config.ALLOW_OPEN_PROXY;
  const now = overrides.now ?? Date.now;
  // The logging subscribes to the bus; a listener can only fail once it has.
  const events = overrides.events ?? createEventBus({ onListenerError: (name, error) => logging.internalError(error, { event: name }) });
  // Started first, so that what the shared store says while it opens reaches the logs too.
  const logging = startLogging({
    dir: config.LOG_DIR,
    retentionDays: config.LOG_RETENTION_DAYS,
    level: config.LOG_LEVEL,
    events,
    now,
    ...(overrides.logOut ? { out: overrides.logOut } : {}),
    ...(overrides.logErr ? { err: overrides.logErr } : {}),
  });
  let redis: RedisBackend | undefined;
  let claim: ServerClaim | undefined;
  /** A start that cannot go on: what was opened is closed again, and what was said is written. */
  const failedStart = async (failure: { message: string }): Promise<StartResult> => {
    await claim?.release();
    await redis?.stop();
    await logging.close();
    return { ok: false, message: failure.message };
  };
  // With REDIS_URL the key list and the state are shared through Redis (store/redis/redis-backend.ts).
  if (config.REDIS_URL !== undefined && overrides.store === undefined) {
    const opened = await openRedisBackend({ config, url: config.REDIS_URL, now, events });
    if (!opened.ok) return failedStart(opened);
    redis = opened.backend;
  }
  const store = overrides.store ?? redis?.store ?? createJsonFileStore({ path: config.KEYS_FILE, now });
  const loaded = redis ? await redis.initialLoad() : await store.load();
  // With REDIS_URL the client keys and their counters are shared through Redis too (store/redis/client-store.ts).
  const sharedClients = redis && config.REDIS_URL !== undefined
    ? await openSharedClients({ connection: redis.shared.connection, prefix: config.REDIS_PREFIX, url: config.REDIS_URL, keysFile: config.KEYS_FILE, now, events })
    : undefined;
  if (sharedClients && !sharedClients.ok) return failedStart(sharedClients);
  const clientDoc = sharedClients?.clients.doc ?? (loaded.ok ? loaded.doc : undefined);
  if (onlyClientKeysGuard && !(clientDoc && hasClients(clientDoc))) {
    return failedStart({
      message:
        `refusing to listen on ${config.HOST} without PROXY_API_KEYS: anyone who can reach it could spend your keys. ` +
        "Set PROXY_API_KEYS=<a secret for your clients>, add a client key (`openrouter-proxy add-client NAME`), listen on 127.0.0.1, or set ALLOW_OPEN_PROXY=true if another layer guards it",
    });
  }
  if (!loaded.ok) return failedStart({ message: loaded.kind === "invalid" ? `${loaded.message}; the file was left untouched` : loaded.message });
  // Without Redis this server is the keys file's only writer of runtime state: one server per file.
  if (!redis) {
    const claimed = await claimKeysFile(config.KEYS_FILE, `http://${hostText(config.HOST)}:${config.PORT}`);
    if (!claimed.ok) return failedStart(claimed);
    claim = claimed.claim;
  }
  let catalog: ModelCatalog | undefined; // needs the pool, made below; clients read its prices once loaded
  const prices: PriceBook = { priceOf: (model) => catalog?.priceOf(model) };
  const started = startClients({
    prices,
    doc: clientDoc ?? loaded.doc,
    keysFile: config.KEYS_FILE,
    sharedCounters: sharedClients?.clients.counters,
    events,
    requireClientKey: onlyClientKeysGuard,
    now,
  });
  if (!started.ok) return failedStart(started);
  const clients = started.clients;

  const lookUpKeys = overrides.discoverAccounts !== false;
  const pool = createKeyPool({ rotation: config.ROTATION, failureThreshold: config.FAILURE_THRESHOLD, now, events, holdAddedKeys: lookUpKeys });
  pool.replaceKeys(loaded.doc.records);
  pool.loadAccounts(loaded.doc.accounts);
  const redisWiring = redis?.attach({ pool, events });
  const sync = startStateSync({
    pool,
    store,
    clients,
    clientStore: sharedClients?.clients.store,
    saves: !redis,
    events,
    ...(overrides.saveDelayMs === undefined ? {} : { saveDelayMs: overrides.saveDelayMs }),
    ...(overrides.counterSaveDelayMs === undefined ? {} : { counterSaveDelayMs: overrides.counterSaveDelayMs }),
    ...(overrides.onStoreError ? { onStoreError: overrides.onStoreError } : {}),
    ...(overrides.onStoreRecovered ? { onStoreRecovered: overrides.onStoreRecovered } : {}),
    ...(overrides.storeRetryDelayMs === undefined ? {} : { retryDelayMs: overrides.storeRetryDelayMs }),
  });

  // Fires when the shutdown grace period runs out: every request still in flight has its upstream
  // request aborted, which ends its stream (see stopGracefully in server.ts).
  const graceOver = new AbortController();
  const forward = createForwarder({
    pool,
    baseUrl: config.OPENROUTER_BASE_URL,
    maxAttempts: config.MAX_ATTEMPTS,
    defaultCooldownMs: config.COOLDOWN_SECONDS * 1000,
    upstreamTimeoutMs: config.UPSTREAM_TIMEOUT_SECONDS * 1000,
    retryBackoffMs: config.RETRY_BACKOFF_MS,
    fetch: overrides.fetch ?? globalThis.fetch,
    // With REDIS_URL a free-model request takes its slot of the account's day first; else the pool's count decides alone.
    reserve: redisWiring?.reserve,
    now,
    sleep: overrides.sleep ?? abortableSleep,
    events,
    logBodies: config.LOG_BODIES,
    streamCommitMs: config.STREAM_COMMIT_SECONDS * 1000,
    shutdown: graceOver.signal,
    ...(config.SESSION_AFFINITY ? { affinity: createSessionAffinity({ now }) } : {}),
  });
  const ledger = createUsageLedger({ now });
  const sharedState = redis ? (): "connected" | "degraded" => (redis.degraded ? "degraded" : "connected") : undefined;
  const metrics = createMetrics({ keysByState: () => pool.keysByState(), ...(sharedState ? { sharedState } : {}) });
  events.on("request.done", (record) => {
    ledger.record(record);
    metrics.record(record);
  });
  events.on("client.refused", ({ client, code }) => metrics.clientRefused(client, code));
  const checkUpstreamKey = (secret: string) => checkKey(secret, { baseUrl: config.OPENROUTER_BASE_URL, fetch: overrides.fetch ?? globalThis.fetch });
  let stopping = false;
  const handler = createHttpHandler({
    bodyLimits: { maxBytes: config.MAX_BODY_BYTES, timeoutMs: config.BODY_TIMEOUT_SECONDS * 1000 },
    isStopping: () => stopping,
    ledger,
    metrics,
    reportInternalError: (error, requestId) => logging.internalError(error, { requestId }),
    forward,
    pool,
    store,
    clientStore: sharedClients?.clients.store,
    checkKey: checkUpstreamKey,
    adminToken: config.ADMIN_TOKEN,
    proxyApiKeys: config.PROXY_API_KEYS,
    corsOrigins: config.CORS_ORIGINS,
    allowedHosts: config.ALLOWED_HOSTS,
    listenHost: config.HOST,
    clients,
    now,
    ...(sharedState ? { sharedState } : {}),
  });

  let server: HttpServer;
  try {
    server = startHttpServer({
      handler,
      port: config.PORT,
      hostname: config.HOST,
      maxRequestBodySize: config.MAX_BODY_BYTES,
      ...(overrides.idleTimeoutSeconds === undefined ? {} : { idleTimeoutSeconds: overrides.idleTimeoutSeconds }),
    });
  } catch (error) {
    await clients.stop();
    await sync.stop();
    const reason = error instanceof Error ? error.message : String(error);
    return failedStart({ message: `cannot listen on ${config.HOST}:${config.PORT}: ${reason}` });
  }

  // Accounts and today's free-model use, learned in the background: the first request never waits.
  // With REDIS_URL only the discovery lease's holder asks, and publishes what it learns.
  const lease = redis?.discovery;
  const onLearned = redisWiring ? (keyId: string) => redisWiring.sharedPool.publishLearned(keyId) : undefined;
  const discovery = lookUpKeys
    ? (async () => {
        await lease?.ready;
        if (!lease || lease.holds()) await discoverAccounts({ pool, checkKey: checkUpstreamKey, now, ...(onLearned ? { onLearned } : {}) });
      })()
    : Promise.resolve();
  // Keys added while running, the daily and hourly refresh, and credit checks of resting accounts.
  const refresher = lookUpKeys
    ? startAccountRefresher({
        pool,
        checkKey: checkUpstreamKey,
        events,
        now,
        ...(overrides.refreshTickMs === undefined ? {} : { tickEveryMs: overrides.refreshTickMs }),
        ...(lease ? { holdsLease: lease.holds } : {}),
        ...(onLearned ? { onLearned } : {}),
      })
    : undefined;
  // Model prices for budgets' reservations, in the background, only while a client has a USD budget.
  const budgeted = () => clients.directory.records().some((client) => client.usdPerDay !== undefined || client.usdPerMonth !== undefined);
  const catalogTicks = overrides.catalogTickMs === undefined ? {} : { tickEveryMs: overrides.catalogTickMs };
  if (overrides.modelCatalog !== false) catalog = startModelCatalog({ pool, baseUrl: config.OPENROUTER_BASE_URL, fetch: overrides.fetch ?? globalThis.fetch, now, defaultCooldownMs: config.COOLDOWN_SECONDS * 1000, needed: budgeted, events, ...catalogTicks });
  const url = `http://${hostText(config.HOST)}:${server.port}`;
  await claim?.listening(url);
  return {
    ok: true,
    proxy: {
      server,
      url,
      pool,
      store,
      sync,
      events,
      ledger,
      logging,
      clients,
      discovery,
      ...(redis ? { redis } : {}),
      ...(refresher ? { refresher } : {}),
      ...(catalog ? { catalog } : {}),
      keyCount: loaded.doc.records.length,
      async stop(graceMs = config.SHUTDOWN_GRACE_SECONDS * 1000) {
        stopping = true;
        refresher?.stop();
        catalog?.stop();
        await stopGracefully(server, graceMs, () =>
          graceOver.abort(new DOMException(`the proxy is shutting down and SHUTDOWN_GRACE_SECONDS (${graceMs / 1000} s) ran out`, "AbortError")),
        );
        await clients.stop();
        await sync.stop();
        await claim?.release();
        await redis?.stop();
        await logging.close();
      },
    },
  };
}

/** A host as it goes in a URL (an IPv6 address in brackets). */
const hostText = (host: string) => (host.includes(":") ? `[${host}]` : host);
