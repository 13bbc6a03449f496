/**
 * What the forwarder is given: the request as the HTTP layer hands it over, and the settings and
 * shared parts every request run reads (one object per process, built by `createForwarder`).
 */
import type { LiveSet } from "../domain/live-set.ts";
import type { KeyLease, KeyPool } from "../keys/key-pool.ts";
import type { Outcome } from "../domain/outcome.ts";
import type { EventBus } from "../domain/events.ts";
import type { RequestRecord } from "../domain/request-record.ts";
import type { Attempt } from "./attempt.ts";
import type { SessionAffinity } from "./session-affinity.ts";
import type { SilenceWatcher } from "./silence-watch.ts";

/**
 * One request as the run needs it: built once by the HTTP layer, its body fields filled in by
 * `readCheckedBody` (http/request-body.ts). Every field is always there (undefined when absent):
 * one object shape for every request.
 */
export interface ProxyRequest {
  requestId: string;
  method: string;
  /** The path below the API root with its leading slash, e.g. `/chat/completions`. */
  path: string;
  /** The query string with its `?`, or "". */
  search: string;
  headers: Headers;
  /** The body's bytes as they came, sent upstream untouched on every attempt; undefined when empty. */
  body: ArrayBuffer | undefined;
  /** Fires when the client goes away. */
  signal: AbortSignal;
  /** Read from the body for routing and logs; the body itself is sent as it came. */
  model: string | undefined;
  /**
   * Every other model the body names (the fallback list `models`, `/messages`' `fallbacks`, a
   * `preset` as `@preset/<slug>`): a client limited to some models must be allowed each.
   */
  models: readonly string[] | undefined;
  /** The body's `session_id`, `prompt_cache_key` or `user` (the first found), for session affinity. */
  session: string | undefined;
  stream: boolean;
  /** The body's `max_tokens` (or `max_completion_tokens`, `max_output_tokens`): what a budget reserves for the answer. */
  maxTokens: number | undefined;
  clientAddress: string | undefined;
  /** The client's name (client keys), for the request record. */
  client: string | undefined;
  /** When the proxy received the request (performance.now()). */
  receivedAt: number;
  /**
   * Called once with the request's record when it is complete, before it is announced: a client's
   * reservation is settled by it (clients/client-gate.ts). undefined: nothing to settle.
   */
  onDone: ((record: RequestRecord) => void) | undefined;
}

/**
 * What a key must take before a request goes out on it: with Redis, a free-model slot of its
 * account's day (store/redis/shared-pool.ts). undefined: granted. An outcome: this key may
 * not take the request, for the reason it gives; the run reports it to the pool and tries another
 * key. A plain value, not a promise, when nothing was asked (a paid model, no shared store): the
 * request then goes on without waiting a turn.
 */
export type Reserve = (lease: KeyLease, model: string | undefined) => Outcome | undefined | Promise<Outcome | undefined>;

export interface ForwarderOptions {
  pool: KeyPool;
  baseUrl: string;
  maxAttempts: number;
  defaultCooldownMs: number;
  /** Longest wait for the upstream's answer, and longest silence inside a body; 0 for none. */
  upstreamTimeoutMs: number;
  /** Pause before retrying after an upstream fault (5xx, 408, connection); doubles per retry. */
  retryBackoffMs: number;
  fetch?: typeof fetch;
  /** Absent: every key is granted (the pool's own count of the free budget decides). */
  reserve?: Reserve | undefined;
  now?: () => number;
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  events?: EventBus;
  /** LOG_BODIES: put request and response bodies in the request record (for the log). */
  logBodies?: boolean;
  /** STREAM_COMMIT_SECONDS: how long a stream's first bytes may be held waiting for content. */
  streamCommitMs?: number;
  /**
   * Fires when the shutdown grace period runs out: every request still in flight is ended as if
   * its client had left (its upstream request aborted, its stream ended).
   */
  shutdown?: AbortSignal;
  /** SESSION_AFFINITY: requests of one conversation go to the key that served it last; absent: off. */
  affinity?: SessionAffinity;
}

/** The options with their defaults applied, and the parts shared by every request run. */
export type ForwardContext = Readonly<
  Required<Omit<ForwarderOptions, "events" | "shutdown" | "affinity">> & { [K in "events" | "shutdown" | "affinity"]: ForwarderOptions[K] } & {
    /** OPENROUTER_BASE_URL as messages show it (`http://***@host/…` when it carries credentials). */
    shownBaseUrl: string;
    redactUrl: (text: string) => string;
    reserve: Reserve;
    silenceWatcher: SilenceWatcher;
    /** Every attempt until its answer has ended: what the shutdown aborts. */
    attemptsInFlight: LiveSet<Attempt>;
  }
>;
