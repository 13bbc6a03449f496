/**
 * OpenRouter's models catalog, kept for the prices budgets reserve by (clients/reservations.ts):
 * `GET ${OPENROUTER_BASE_URL}/models` (docs/openrouter.md, "Endpoints"), sent with a pool key the
 * way a request is (acquire a key, send, report the outcome), at start and every hour after, in
 * the background. Never on a request's path, and never a reason to fail a request: until a first
 * answer, and through any failure, the prices last read stand (none at first: reservations then
 * fall back to each client's averages).
 *
 * Only while some client has a USD budget (`needed`): nothing else reads the prices, and the
 * catalog is a few hundred KB. Prices are kept as numbers, USD per token, by model id
 * (`pricing.prompt`, `pricing.completion` are strings of USD per token in the catalog; a negative
 * or unreadable one, as `openrouter/auto`'s "-1", prices nothing).
 */
import type { EventBus } from "../domain/events.ts";
import type { ModelPrice, PriceBook } from "../domain/model-prices.ts";
import { displayUrl } from "../domain/redact.ts";
import type { KeyPool } from "../keys/key-pool.ts";
import { boundedText } from "./bounded-read.ts";
import { classify, classifyError, readErrorBody } from "./policy.ts";

export const CATALOG_REFRESH_MS = 3_600_000;
/** After a failed fetch (no key, no answer, not a catalog), the next try comes sooner than the hourly refresh. */
export const CATALOG_RETRY_MS = 5 * 60_000;
/** The catalog is a few hundred KB; an answer past this is not read. */
const CATALOG_LIMIT = 16 * 1024 * 1024;

export interface ModelCatalog extends PriceBook {
  /** Fetches now if it is needed and due (a timer calls it; tests call it after moving the clock). Resolves when done. */
  tick(): Promise<void>;
  /** How many models are priced (0 until a catalog was read). */
  size(): number;
  stop(): void;
}

export interface ModelCatalogOptions {
  pool: KeyPool;
  baseUrl: string;
  fetch?: typeof fetch;
  now?: () => number;
  defaultCooldownMs: number;
  /** Whether anything reads the prices (a client with a USD budget exists). */
  needed: () => boolean;
  /** How often (real ms) the timer calls `tick`; 0: only when told. */
  tickEveryMs?: number;
  timeoutMs?: number;
  /** Told when fetching starts failing and when it works again (the errors log), not at every retry. */
  events?: EventBus;
}

export function startModelCatalog({ pool, baseUrl, fetch: fetchUpstream = globalThis.fetch, now = Date.now, defaultCooldownMs, needed, tickEveryMs = 30_000, timeoutMs = 30_000, events }: ModelCatalogOptions): ModelCatalog {
  let prices = new Map<string, ModelPrice>();
  let dueAt = 0;
  let running: Promise<void> | undefined;
  let failing = false;
  const shown = `${displayUrl(baseUrl)}/models`;

  /** Fetches and keeps the catalog; the reason when it could not (the prices last read stand). */
  const fetchCatalog = async (): Promise<string | undefined> => {
    const acquired = pool.acquire();
    if (!acquired.ok) return `no key could ask for it (${acquired.reason})`;
    const { keyId, secret } = acquired.lease;
    let response: Response;
    try {
      response = await fetchUpstream(`${baseUrl}/models`, { headers: { authorization: `Bearer ${secret}` }, signal: AbortSignal.timeout(timeoutMs) });
    } catch (error) {
      const reason = `${shown} could not be reached (${error instanceof Error ? error.name : "failed"})`;
      pool.report(keyId, { kind: "upstream-error", reason });
      return reason;
    }
    const text = await boundedText(response, CATALOG_LIMIT);
    const at = now();
    if (!response.ok) {
      pool.report(keyId, classifyError("/models", { status: response.status, headers: response.headers, body: readErrorBody(text ?? ""), now: at, defaultCooldownMs, model: undefined }));
      return `${shown} answered ${response.status}`;
    }
    pool.report(keyId, classify({ status: response.status, headers: response.headers, now: at, defaultCooldownMs }));
    const read = text === undefined ? undefined : pricesOf(text);
    if (read === undefined || read.size === 0) return `${shown} answered 200 without a priced model list`;
    prices = read;
    return undefined;
  };

  /** Only the start and the end of a run of failures is told: a retry every 5 minutes would flood the log. */
  const told = (failure: string | undefined): void => {
    if (failure !== undefined && !failing) events?.emit("prices.state", { kind: "failed", message: `model prices: ${failure}; budgets reserve each client's average cost per model until they load (retried every ${CATALOG_RETRY_MS / 60_000} min)` });
    if (failure === undefined && failing) events?.emit("prices.state", { kind: "recovered", message: `model prices: ${shown} answered with ${prices.size} priced models` });
    failing = failure !== undefined;
  };

  const tick = (): Promise<void> => {
    if (running) return running;
    if (!needed() || now() < dueAt) return Promise.resolve();
    running = fetchCatalog()
      .catch((error: unknown) => `reading it failed (${error instanceof Error ? error.message : String(error)})`)
      .then((failure) => {
        told(failure);
        dueAt = now() + (failure === undefined ? CATALOG_REFRESH_MS : CATALOG_RETRY_MS);
      })
      .finally(() => {
        running = undefined;
      });
    return running;
  };
  const timer = tickEveryMs > 0 ? setInterval(() => void tick(), tickEveryMs) : undefined;
  timer?.unref?.();
  void tick();

  return {
    priceOf(model) {
      const exact = prices.get(model);
      if (exact || prices.size === 0) return exact;
      // A variant the catalog does not list (`:nitro`, `:floor`) costs what its model costs.
      const colon = model.lastIndexOf(":");
      return colon > 0 ? prices.get(model.slice(0, colon)) : undefined;
    },
    tick,
    size: () => prices.size,
    stop() {
      if (timer) clearInterval(timer);
    },
  };
}

/**
 * The prices of a catalog's text, by model id; undefined when it is not a catalog. Read by hand
 * rather than by a schema: one odd entry among hundreds must cost its own price, not the catalog.
 */
function pricesOf(text: string): Map<string, ModelPrice> | undefined {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return undefined;
  }
  const data = json !== null && typeof json === "object" ? (json as { data?: unknown }).data : undefined;
  if (!Array.isArray(data)) return undefined;
  const prices = new Map<string, ModelPrice>();
  for (const entry of data) {
    if (entry === null || typeof entry !== "object") continue;
    const { id, pricing } = entry as { id?: unknown; pricing?: { prompt?: unknown; completion?: unknown } | null };
    const prompt = perToken(pricing?.prompt);
    const completion = perToken(pricing?.completion);
    if (typeof id === "string" && prompt >= 0 && completion >= 0) prices.set(id, { prompt, completion });
  }
  return prices;
}

/** "0.000015" or 0.000015 → 0.000015; anything else → NaN (prices nothing). */
const perToken = (value: unknown): number => ((typeof value === "string" && value.trim() !== "") || typeof value === "number" ? Number(value) : Number.NaN);
