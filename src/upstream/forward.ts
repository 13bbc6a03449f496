/**
 * The forwarder: one `RequestRun` per request (request-run.ts), sharing what is built once per
 * process here — the options with their defaults, the silence watcher, and the set of attempts
 * in flight that the end of the shutdown grace aborts.
 */
import { displayUrl, urlCredentialsRedactor } from "../domain/redact.ts";
import { LiveSet } from "../domain/live-set.ts";
import type { Attempt } from "./attempt.ts";
import type { ForwardContext, ForwarderOptions, ProxyRequest } from "./forward-types.ts";
import { RequestRun } from "./request-run.ts";
import { createSilenceWatcher } from "./silence-watch.ts";

export type { ForwarderOptions, ProxyRequest } from "./forward-types.ts";

export const abortableSleep = (ms: number, signal: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });

const grantAll = (): undefined => undefined;

export function createForwarder(options: ForwarderOptions): (request: ProxyRequest) => Promise<Response> {
  const context: ForwardContext = {
    pool: options.pool,
    baseUrl: options.baseUrl,
    shownBaseUrl: displayUrl(options.baseUrl),
    redactUrl: urlCredentialsRedactor(options.baseUrl),
    maxAttempts: options.maxAttempts,
    defaultCooldownMs: options.defaultCooldownMs,
    upstreamTimeoutMs: options.upstreamTimeoutMs,
    retryBackoffMs: options.retryBackoffMs,
    fetch: options.fetch ?? globalThis.fetch,
    reserve: options.reserve ?? grantAll,
    now: options.now ?? Date.now,
    sleep: options.sleep ?? abortableSleep,
    events: options.events,
    logBodies: options.logBodies ?? false,
    streamCommitMs: options.streamCommitMs ?? 15_000,
    shutdown: options.shutdown,
    affinity: options.affinity,
    silenceWatcher: createSilenceWatcher(),
    // A set, not a listener on the shutdown signal per attempt: adding and removing listeners cost more.
    attemptsInFlight: new LiveSet<Attempt>(),
  };
  const { shutdown } = options;
  shutdown?.addEventListener("abort", () => {
    for (const attempt of [...context.attemptsInFlight.items]) attempt.controller.abort(shutdown.reason);
  });
  return (request) => new RequestRun(context, request).run();
}
