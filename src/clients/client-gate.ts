/**
 * Who may call `/v1` and `/api/v1` once client keys exist, and what each client may do; on the
 * hot path, so everything here is in memory.
 *
 * - The bearer is hashed (SHA-256) and the hash looked up in a Map: the time the lookup takes
 *   depends on the hash, never on how many leading bytes of a real key were guessed right.
 * - A `PROXY_API_KEYS` entry still passes, unlimited: routes/proxy.ts checks those (in constant
 *   time, as before) when the gate knows no client by the key.
 * - Models, then limits, are checked before anything is sent upstream; an admitted request is
 *   counted at once, so concurrent requests cannot all slip under `--rpm`, and holds its
 *   reservation (reservations.ts) until it ends, so they cannot all slip under a budget either.
 */
import { ProxyError } from "../domain/errors.ts";
import { NO_PRICES, type PriceBook } from "../domain/model-prices.ts";
import type { RequestRecord } from "../domain/request-record.ts";
import { hashClientKey } from "./client-key.ts";
import { modelNamesIn } from "./model-globs.ts";
import type { ClientDirectory, LiveClient } from "./client-directory.ts";
import { hasLimits, type SharedClientCounters } from "./shared-counters.ts";
import { createReservations, reserves, type ReservedRequest } from "./reservations.ts";
import { NOTHING_HELD, refusalFor, type Held, type Refusal } from "./usage-windows.ts";

/** An admitted request: its client's name (for the record), and what settles its reservation once its record is complete. */
export interface Admission {
  name: string;
  /** Call once with the request's complete record: the reservation is replaced by what it really used. */
  done(record: RequestRecord): void;
}

export interface ClientGate {
  /** True once callers need a client key (a client exists, or only client keys guard a public HOST). */
  inUse(): boolean;
  /**
   * The client whose key is among `tokens` (the keys a request presents, http/bearer.ts; the first
   * that is a client's wins); "unknown" when none is (then only a PROXY_API_KEYS entry may pass);
   * "off" when no client keys exist and none are required (the proxy behaves as before:
   * PROXY_API_KEYS if set, else open). An expired key throws 401 `invalid_api_key`.
   */
  identify(tokens: readonly string[]): LiveClient | "unknown" | "off";
  /**
   * Checks the request's model(s) and the client's limits, its reservation included, and counts
   * it. Throws (or rejects with) 403 `model_not_allowed` or 429. A promise only for a client with
   * limits when counters are shared (one atomic Redis call).
   */
  admit(client: LiveClient, request: ReservedRequest): Admission | Promise<Admission>;
}

export interface ClientGateOptions {
  directory: ClientDirectory;
  /** True when only client keys guard the proxy (a public HOST): no clients then means nobody, not everybody. */
  requireClientKey?: boolean;
  now?: () => number;
  /** Told of every refusal of a known client (for metrics); never of unknown keys. */
  onRefused?: (client: string, code: string) => void;
  /** With REDIS_URL: the counters every instance shares (shared-counters.ts). */
  shared?: SharedClientCounters | undefined;
  /** Model prices for reservations (upstream/model-catalog.ts); without them reservations fall back to averages. */
  prices?: PriceBook;
}

/** 401 for a bearer that is no client's key (and no PROXY_API_KEYS entry). */
export const unknownClientKey = () =>
  new ProxyError(401, "this proxy needs a client key: send Authorization: Bearer sk-orp-… or x-api-key: sk-orp-… (its admin makes one with `openrouter-proxy add-client NAME`)", {
    type: "authentication_error",
    code: "invalid_api_key",
  });

export function createClientGate({ directory, requireClientKey = false, now = Date.now, onRefused, shared, prices = NO_PRICES }: ClientGateOptions): ClientGate {
  const refuse = (client: string, error: ProxyError): never => {
    onRefused?.(client, error.code);
    throw error;
  };
  const reservations = createReservations(prices);
  /** The admitted request's settle: once, however many times its end is told. */
  const admission = (client: LiveClient, held: Held, heldAt: number): Admission => {
    let settled = false;
    return {
      name: client.record.name,
      done(record) {
        if (settled) return;
        settled = true;
        const charged = reservations.settlement(client.record.name, client.record, held, record);
        const at = now();
        directory.settle(client, held, heldAt, charged, at);
        if (shared && (held !== NOTHING_HELD || charged.tokens !== 0 || charged.cost !== 0)) shared.settled(client.record, held, heldAt, charged, at);
      },
    };
  };
  return {
    inUse: () => directory.size > 0 || requireClientKey,
    identify(tokens) {
      if (directory.size === 0 && !requireClientKey) return "off";
      let client: LiveClient | undefined;
      for (const token of tokens) if ((client = directory.byKeyHash(hashClientKey(token)))) break;
      if (client) {
        const { expires, name } = client.record;
        if (expires !== undefined && expires <= now()) {
          refuse(name, new ProxyError(401, `the client key of ${name} expired at ${new Date(expires).toISOString()}: ask the proxy's admin for a new one`, {
            type: "authentication_error",
            code: "invalid_api_key",
          }));
        }
        return client;
      }
      return "unknown";
    },

    admit(client, request) {
      const { record, allows } = client;
      if (allows) {
        const refusal = checkModels(record.name, record.models ?? [], allows, request.method, request.model, request.models);
        if (refusal) refuse(record.name, refusal);
      }
      const at = now();
      const held = reserves(record) ? reservations.estimate(record.name, record, request) : NOTHING_HELD;
      // Shared counters: a limited client's check, count and reservation are one atomic step in Redis.
      if (shared && hasLimits(record)) {
        return shared.reserve(record, at, held).then((refusal) => (refusal ? refuse(record.name, limitError(record.name, refusal, at)) : admission(client, held, at)));
      }
      const refusal = refusalFor(record, record.usage, at, held);
      if (refusal) refuse(record.name, limitError(record.name, refusal, at));
      directory.countRequest(client, at, held);
      shared?.counted(record, at);
      return admission(client, held, at);
    },
  };
}

/** 429 for a limit or budget hit, with the truthful wait until the latest boundary among them. */
function limitError(name: string, refusal: Refusal, at: number): ProxyError {
  const seconds = Math.max(1, Math.ceil((refusal.until - at) / 1000));
  const budget = refusal.code === "client_budget_exceeded";
  return new ProxyError(
    429,
    `client ${name} reached its ${budget ? "budget" : "limit"} of ${refusal.reasons.join(" and ")}; ` +
      `it comes back at ${new Date(refusal.until).toISOString()} (in ${seconds} s)`,
    { type: budget ? "insufficient_quota" : "rate_limit_error", code: refusal.code, headers: { "retry-after": String(seconds) } },
  );
}

/**
 * The refusal, if any: the model and every other model the body names (request-body.ts: the
 * fallbacks OpenRouter routes to, a preset) must be allowed, a preset by name (`modelNamesIn`).
 * A request that names no model at all is refused unless it is a GET or HEAD: OpenRouter would
 * pick the account's default model, which the patterns never approved.
 */
function checkModels(name: string, patterns: readonly string[], allows: (model: string) => boolean, method: string, model: string | undefined, models: readonly string[] | undefined): ProxyError | undefined {
  if (model === undefined && (models === undefined || models.length === 0)) {
    if (method === "GET" || method === "HEAD") return undefined; // listings and lookups spend nothing
    return notAllowed(name, patterns, "the request names no model");
  }
  for (const each of model === undefined ? (models ?? []) : [model, ...(models ?? [])]) {
    for (const named of modelNamesIn(each)) {
      if (!allows(named)) return notAllowed(name, patterns, `${JSON.stringify(named.slice(0, 200))} is not among them`);
    }
  }
  return undefined;
}

function notAllowed(name: string, patterns: readonly string[], why: string): ProxyError {
  return new ProxyError(403, `client ${name} may use only the models ${patterns.join(", ")}: ${why}`, { type: "permission_error", code: "model_not_allowed" });
}
