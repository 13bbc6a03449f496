/**
 * The attempt loop: lease a key, send the request's bytes upstream, classify the answer, report
 * it to the pool, and either retry on another key or commit. The commit point is the moment a
 * response is handed to the client: before it the proxy may still retry; after it, the bytes pass
 * untouched and nothing is replayed.
 */
import { ProxyError } from "../domain/errors.ts";
import { displayUrl, redactBytes, redactHeaders, redactSecret, ScrubbedReader, urlCredentialsRedactor, type ChunkReader, type ReadResult } from "../domain/redact.ts";
import { LiveSet, type Slotted } from "../domain/live-set.ts";
import type { EventBus } from "../observe/events.ts";
import type { KeyPool } from "../keys/key-pool.ts";
import { clientResponseHeaders, upstreamRequestHeaders } from "./headers.ts";
import { classify, readErrorBody, type ErrorBodyFacts, type Outcome } from "./policy.ts";
import { claimsJsonButIsNot, describeFetchError, serverTiming } from "./answer-checks.ts";
import { noKeyError } from "./no-key-error.ts";
import { ANSWER_HEAD_BYTES, declaredWithin, ERROR_HEAD_BYTES, joinChunks, readHead } from "./bounded-read.ts";
import { relay } from "./relay.ts";
import { holdUntilCommit, statusOfCode } from "./stream-commit.ts";
import { BODY_LOG_LIMIT, bodyForLog, generationIdOf, type AttemptRecord, type RequestRecord } from "./request-record.ts";
import { answerStands, createRetryPlan } from "./retry-plan.ts";
import type { SessionAffinity } from "./session-affinity.ts";
import { createSilenceWatcher } from "./silence-watch.ts";
import { readAnswerTail, UsageTap } from "./usage-tap.ts";

export interface ProxyRequest {
  requestId: string;
  method: string;
  /** The path below the API root with its leading slash, e.g. `/chat/completions`. */
  path: string;
  /** The query string with its `?`, or "". */
  search: string;
  headers: Headers;
  body: ArrayBuffer | undefined;
  /** Fires when the client goes away. */
  signal: AbortSignal;
  /** Read from the body for routing and logs; the body itself is sent as it came. */
  model?: string;
  /** The body's `session_id`, `prompt_cache_key` or `user` (the first found), for session affinity. */
  session?: string;
  stream?: boolean;
  clientAddress?: string;
  client?: string; // the client's name (client keys), for the request record
  /** When the proxy received the request (performance.now()). */
  receivedAt?: number;
}

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

/** Bun's `fetch` ends any request after 5 minutes of silence unless told not to; our own
 * limit (`upstreamTimeoutMs`) takes its place. https://github.com/oven-sh/bun/issues/16682 */
type BunFetchInit = BunFetchRequestInit & { timeout: false };

interface InFlight extends Slotted {
  controller: AbortController;
}

/** An error answer larger than ERROR_HEAD_BYTES: the part not read yet, relayed if it is the answer. */
interface UnreadRest {
  reader: ChunkReader;
  upstream: AbortController;
  silence: ReturnType<ReturnType<typeof createSilenceWatcher>["watch"]>;
  /** Ends the attempt's watches (as `release` does), once the rest is relayed or dropped. */
  release: () => void;
}

/** A read the commit hold started and the relay finishes. */
type CommitPending = Promise<ReadResult> | undefined;

/** What the last failed attempt left, to answer with when no attempt succeeds. */
type LastFailure =
  | { kind: "response"; keyId: string; status: number; headers: Headers; bytes: Uint8Array; outcome: Outcome; rest?: UnreadRest }
  | { kind: "unreachable"; reason: string; timedOut: boolean };

/**
 * The paths that spend a key on a model. A 401/403 anywhere else (a management or account
 * endpoint a normal key may not use) is passed back and never counts against the key, so no
 * client can disable the pool by asking for what its keys are not allowed to see.
 */
const inferencePaths = new Set(["/chat/completions", "/completions", "/embeddings", "/responses", "/messages"]);

function dropRest(last: LastFailure | undefined): void {
  if (last?.kind !== "response" || !last.rest) return;
  const { reader, upstream, release } = last.rest;
  delete last.rest;
  reader.cancel().catch(() => {});
  upstream.abort();
  release();
}

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

const round = (ms: number) => Math.round(ms * 100) / 100;

export function createForwarder({
  pool,
  baseUrl,
  maxAttempts,
  defaultCooldownMs,
  upstreamTimeoutMs,
  retryBackoffMs,
  fetch: fetchUpstream = globalThis.fetch,
  now = Date.now,
  sleep = abortableSleep,
  events,
  logBodies = false,
  streamCommitMs = 15_000,
  shutdown,
  affinity,
}: ForwarderOptions) {
  const silenceWatcher = createSilenceWatcher();
  // OPENROUTER_BASE_URL may carry credentials: messages show it as `http://***@host/…`.
  const shownBaseUrl = displayUrl(baseUrl);
  const redactUrl = urlCredentialsRedactor(baseUrl);
  // Every attempt until its answer has ended: what the shutdown aborts. A set, not a listener on
  // the shutdown signal per attempt: adding and removing listeners cost more.
  const attemptsInFlight = new LiveSet<InFlight>();
  shutdown?.addEventListener("abort", () => {
    for (const attempt of [...attemptsInFlight.items]) attempt.controller.abort(shutdown.reason);
  });
  return async function forward(request: ProxyRequest): Promise<Response> {
    const started = request.receivedAt ?? performance.now();
    // Absent fields are undefined rather than left out: one object shape for every record, and
    // JSON.stringify drops them from the log line all the same.
    const record: RequestRecord = {
      requestId: request.requestId,
      startedAt: now() - (performance.now() - started),
      method: request.method,
      path: request.path,
      model: request.model,
      stream: request.stream ?? false,
      status: 0,
      attempts: [],
      durationMs: 0,
      aborted: false,
      clientAddress: request.clientAddress,
      client: request.client,
      userAgent: request.headers.get("user-agent") || undefined,
      requestBody: logBodies && request.body ? bodyForLog(request.body) : undefined,
    };
    let last: LastFailure | undefined;
    let upstreamFaults = 0;
    const attempts = () => record.attempts.length;
    /** The client left, or the shutdown grace ran out: either way nobody waits for this answer any more. */
    const ended = () => request.signal.aborted || shutdown?.aborted === true;
    /** For the rare waits between attempts; built then, not per request (AbortSignal.any is not free). */
    const waitSignal = () => (shutdown ? AbortSignal.any([request.signal, shutdown]) : request.signal);

    /** Announces the record once the answer has ended (or failed). */
    const finish = (status: number, extra: Partial<RequestRecord> = {}) => {
      Object.assign(record, extra);
      record.status = status;
      record.durationMs = round(performance.now() - started);
      events?.emit("request.done", record);
    };
    /** `attempt`: the one cut short by the client leaving; it reached the upstream, so the record keeps it. */
    const clientGone = (attempt?: AttemptRecord) => {
      if (attempt) record.keyId = attempt.keyId;
      if (!request.signal.aborted && shutdown?.aborted) {
        return failWith(
          new ProxyError(503, "the proxy shut down before the upstream answered (SHUTDOWN_GRACE_SECONDS ran out): retry in a moment", {
            type: "service_unavailable",
            code: "shutting_down",
            headers: { connection: "close", "retry-after": "1" },
          }),
        );
      }
      finish(499, { aborted: true, error: "the client closed the request" });
      return new ProxyError(499, "the client closed the request", { type: "invalid_request_error", code: "client_closed_request" });
    };
    const failWith = (error: ProxyError) => {
      finish(error.status, { error: error.message, ttfbMs: round(performance.now() - started) });
      return error;
    };

    const plan = createRetryPlan({ now, wait: (ms) => sleep(ms, waitSignal()), backoff });
    const avoid = (keyId: string) => plan.avoidKey(keyId);
    const session = affinity?.sessionOf(request.session, request.headers);
    while (attempts() < maxAttempts) {
      if (ended()) throw clientGone();
      const acquired = pool.acquire(plan.options(request.model, session === undefined ? undefined : affinity?.pinned(session)));
      if (!acquired.ok) {
        // Answer with what the upstream last said, unless only waiting helps: then say how long.
        if (last && ((last.kind === "response" && answerStands(last.outcome)) || (acquired.reason !== "all-cooling" && acquired.reason !== "free-budget-exhausted"))) break;
        throw failWith(noKeyError(acquired, now(), rateLimitMessage(last)));
      }
      const { keyId, secret } = acquired.lease;
      const attemptStarted = performance.now();
      const noteAttempt = (status: number, outcome: string) => {
        const attempt = { keyId, status, outcome, ms: round(performance.now() - attemptStarted) };
        record.attempts.push(attempt);
        return attempt;
      };
      const reportContext = (facts: ErrorBodyFacts = {}) => ({
        ...(request.model === undefined ? {} : { model: request.model }),
        ...(facts.userId === undefined ? {} : { account: facts.userId }),
      });

      // One controller per attempt: the client leaving, the silence limit, or the relay can abort it.
      const upstream = new AbortController();
      const onClientAbort = () => upstream.abort(request.signal.reason);
      request.signal.addEventListener("abort", onClientAbort, { once: true });
      const inFlight: InFlight = { controller: upstream, slot: -1 };
      attemptsInFlight.add(inFlight);
      const silence = silenceWatcher.watch(upstreamTimeoutMs, () =>
        upstream.abort(new DOMException(`the upstream sent nothing for ${upstreamTimeoutMs / 1000} s`, "TimeoutError")),
      );
      const release = () => {
        silence.stop();
        request.signal.removeEventListener("abort", onClientAbort);
        attemptsInFlight.delete(inFlight);
      };

      let response: Response;
      try {
        const init: BunFetchInit = {
          method: request.method,
          headers: upstreamRequestHeaders(request.headers, secret),
          body: request.body,
          signal: upstream.signal,
          redirect: "manual",
          timeout: false,
        };
        response = await fetchUpstream(`${baseUrl}${request.path}${request.search}`, init);
      } catch (error) {
        release();
        if (ended()) throw clientGone(noteAttempt(0, "client-gone"));
        const timedOut = upstream.signal.reason instanceof DOMException && upstream.signal.reason.name === "TimeoutError";
        const reason = timedOut ? String((upstream.signal.reason as DOMException).message) : redactUrl(redactSecret(describeFetchError(error), secret));
        dropRest(last);
        last = { kind: "unreachable", reason, timedOut };
        pool.report(keyId, { kind: "upstream-error", reason }, reportContext());
        noteAttempt(0, timedOut ? "upstream-timeout" : "upstream-unreachable");
        avoid(keyId);
        await backoff();
        continue;
      }

      // An upstream that echoes the Authorization it got must not hand the key to the client.
      redactHeaders(response.headers, secret);

      /** What the answer's status (or the error hidden in a 200) means; false: stop and answer with `last`. */
      const judge = (status: number, facts: ErrorBodyFacts, bytes: Uint8Array, headers: Headers, answerStatus: number, rest?: UnreadRest) => {
        const outcome: Outcome =
          (status === 401 || status === 403) && !inferencePaths.has(request.path)
            ? { kind: "request-error" }
            : classify({ status, headers, body: facts, now: now(), defaultCooldownMs, ...(request.model === undefined ? {} : { model: request.model }) });
        pool.report(keyId, outcome, reportContext(facts));
        noteAttempt(status, outcome.kind);
        dropRest(last);
        last = { kind: "response", keyId, status: answerStatus, headers, bytes, outcome, ...(rest ? { rest } : {}) };
        record.error = `upstream answered ${status}${facts.message ? `: ${facts.message}` : ""}`;
        if (logBodies) record.responseBody = bodyForLog(bytes);
        return outcome;
      };
      /** After a failed attempt: whether to try again, and how. */
      const next = (outcome: Outcome) => plan.after(outcome, acquired.lease);

      if (response.status < 400) {
        const isEventStream = (response.headers.get("content-type") ?? "").includes("text/event-stream");
        /** The committed answer; `finishWith` set: the record is complete now (else the relay completes it). */
        const respond = (body: Uint8Array | ReadableStream<Uint8Array> | null, firstBytes: Uint8Array | undefined, finishWith?: Partial<RequestRecord>) => {
          const outcome = classify({ status: response.status, headers: response.headers, now: now(), defaultCooldownMs });
          pool.report(keyId, outcome, reportContext());
          noteAttempt(response.status, outcome.kind);
          // Commit point: from here on the bytes go to the client and nothing is retried.
          const elapsed = performance.now() - started;
          const headers = clientResponseHeaders(response.headers, {
            "x-proxy-key-id": keyId,
            "x-proxy-attempts": String(attempts()),
            "server-timing": serverTiming(record.attempts, elapsed),
          });
          record.keyId = keyId;
          record.ttfbMs = round(elapsed);
          record.generationId = generationIdOf(response.headers, firstBytes);
          delete record.error;
          if (session !== undefined) affinity?.pin(session, keyId);
          if (finishWith) finish(response.status, finishWith);
          return new Response(body, { status: response.status, headers });
        };

        if (!response.body) {
          release();
          return respond(null, undefined, {});
        }
        /** Relays the body from here on; the record is completed when it ends. */
        const relayed = (reader: ChunkReader, held: Uint8Array[], pending: CommitPending, isStream: boolean) => {
          const tap = new UsageTap(logBodies ? BODY_LOG_LIMIT + 1 : 0);
          return relay(reader, {
            upstream,
            silence,
            tap,
            held,
            ...(pending ? { pending } : {}),
            onEnd: (end) => {
              request.signal.removeEventListener("abort", onClientAbort);
              attemptsInFlight.delete(inFlight);
              const captured = tap.capturedBody();
              const { usage, lateError } = tap.finish(isStream);
              finish(response.status, {
                ...(captured ? { responseBody: bodyForLog(captured) } : {}),
                ...(usage ? { usage } : {}),
                aborted: end.kind === "client-gone",
                ...(end.kind === "upstream-failed"
                  ? { error: `the upstream's answer broke off: ${redactUrl(describeFetchError(end.error))}` }
                  : lateError
                    ? { error: `error inside the answer: ${lateError}` }
                    : end.kind === "client-gone"
                      ? { error: "the client closed the request" }
                      : {}),
              });
            },
          });
        };

        if (!isEventStream) {
          // A whole answer (JSON, a model list). Up to ANSWER_HEAD_BYTES it is read whole, checked,
          // and can still be retried; a larger one is checked by its head and relayed as it arrives,
          // so one answer never costs more memory than that. A declared small length is read in
          // one native call: a JavaScript pass per chunk would cost more than the rest of the request.
          const whole = declaredWithin(response.headers, ANSWER_HEAD_BYTES);
          const reader = whole ? undefined : new ScrubbedReader(response.body.getReader(), secret);
          let head: { chunks: Uint8Array[]; complete: boolean };
          try {
            head = reader ? await readHead(reader, ANSWER_HEAD_BYTES, silence) : { chunks: [redactBytes(new Uint8Array(await response.arrayBuffer()), secret)], complete: true };
          } catch (error) {
            release();
            if (ended()) throw clientGone(noteAttempt(response.status, "client-gone"));
            const reason = `the upstream's answer broke off: ${redactUrl(describeFetchError(error))}`;
            last = { kind: "unreachable", reason, timedOut: false };
            noteAttempt(response.status, "upstream-error");
            avoid(keyId);
            continue;
          }
          const view = joinChunks(head.chunks);
          const tail = head.complete ? readAnswerTail(view, false) : undefined;
          if (head.complete) release();
          if (tail?.lateError !== undefined) {
              // A 200 that carries an error (OpenRouter does this): handled like the status it stands for.
            const facts = readErrorBody(new TextDecoder().decode(view));
            const outcome = judge(statusOfCode(facts.code), facts, view, response.headers, response.status);
            if ((await next(outcome)) === "retry") continue;
            break;
          }
          if (claimsJsonButIsNot(response.headers, view, request.method, response.status, head.complete)) {
            // A 200 that says JSON but is not (an HTML error page from something in between, a
            // cut body): an upstream fault, retried on another key; nobody's key is blamed.
            if (reader && !head.complete) {
              reader.cancel().catch(() => {});
              upstream.abort();
              release();
            }
            const reason = "the upstream answered 200 with a body that is not JSON";
            pool.report(keyId, { kind: "upstream-error", reason }, reportContext());
            noteAttempt(response.status, "upstream-error");
            last = { kind: "unreachable", reason, timedOut: false };
            avoid(keyId);
            await backoff();
            continue;
          }
          if (reader && !head.complete) return respond(relayed(reader, head.chunks, undefined, false), head.chunks[0]);
          return respond(view, view, { ...(tail?.usage ? { usage: tail.usage } : {}), ...(logBodies ? { responseBody: bodyForLog(view) } : {}) });
        }

        // A stream: held until its first content (or STREAM_COMMIT_SECONDS), so an error event
        // that comes first can still be retried on another key, invisibly.
        const reader = new ScrubbedReader(response.body.getReader(), secret);
        const decision = await holdUntilCommit(reader, { commitMs: streamCommitMs, silence });
        if (decision.kind === "failed") {
          release();
          // The request reached the upstream with this key: the record says so, whoever left.
          if (ended()) throw clientGone(noteAttempt(response.status, "client-gone"));
          const reason = `the upstream's stream broke off before any content: ${redactUrl(describeFetchError(decision.error))}`;
          last = { kind: "unreachable", reason, timedOut: false };
          noteAttempt(response.status, "upstream-error");
          avoid(keyId);
          await backoff();
          continue;
        }
        if (decision.kind === "error-event") {
          const bytes = Buffer.concat(decision.held);
          const outcome = judge(decision.status, decision.facts, bytes, response.headers, response.status);
          if (outcome.kind !== "request-error") {
            reader.cancel().catch(() => {});
            release();
            if ((await next(outcome)) === "retry") continue;
            break;
          }
          // The request's own fault: the stream goes to the client as it came.
        }
        const body = relayed(reader, decision.held, decision.kind === "commit" ? decision.pending : undefined, true);
        if (decision.kind === "error-event") {
          // Already judged (and noted) above: answer as it came, without a second report.
          record.keyId = keyId;
          record.ttfbMs = round(performance.now() - started);
          return new Response(body, {
            status: response.status,
            headers: clientResponseHeaders(response.headers, { "x-proxy-key-id": keyId, "x-proxy-attempts": String(attempts()) }),
          });
        }
        return respond(body, decision.held[0]);
      }

      // An error answer: its first ERROR_HEAD_BYTES are read for the policy (message, reset); a
      // longer one keeps the rest unread, relayed only if this answer is the one the client gets.
      let head: { chunks: Uint8Array[]; complete: boolean };
      const reader = response.body ? new ScrubbedReader(response.body.getReader(), secret) : undefined;
      try {
        head = reader ? await readHead(reader, ERROR_HEAD_BYTES, silence) : { chunks: [], complete: true };
      } catch (error) {
        release();
        if (ended()) throw clientGone(noteAttempt(response.status, "client-gone"));
        const reason = `the upstream's ${response.status} answer broke off: ${redactUrl(describeFetchError(error))}`;
        dropRest(last);
        last = { kind: "unreachable", reason, timedOut: false };
        noteAttempt(response.status, "upstream-error");
        avoid(keyId);
        continue;
      }
      if (head.complete) release();
      const bytes = joinChunks(head.chunks);
      const rest = head.complete || !reader ? undefined : { reader, upstream, silence, release };
      const outcome = judge(response.status, readErrorBody(new TextDecoder().decode(bytes)), bytes, response.headers, response.status, rest);
      if ((await next(outcome)) === "stop" || attempts() >= maxAttempts) break;
      dropRest(last); // another attempt follows: this answer's unread rest is not needed
    }

    if (ended()) {
      dropRest(last);
      throw clientGone();
    }
    if (!last) throw failWith(new ProxyError(500, "no upstream attempt was made", { type: "internal_error", code: "internal_error" }));
    if (last.kind === "unreachable") {
      throw failWith(
        new ProxyError(
          last.timedOut ? 504 : 502,
          `the upstream ${shownBaseUrl} could not be reached after ${attempts()} attempt${attempts() === 1 ? "" : "s"}: ${last.reason}`,
          { type: last.timedOut ? "timeout_error" : "upstream_error", code: last.timedOut ? "upstream_timeout" : "upstream_unreachable" },
        ),
      );
    }
    const extraHeaders: Record<string, string> = {
      "x-proxy-key-id": last.keyId,
      "x-proxy-attempts": String(attempts()),
      "server-timing": serverTiming(record.attempts, performance.now() - started),
    };
    if (last.outcome.kind === "rate-limited" && !answerStands(last.outcome)) {
      // Rotated through rate limits until nothing is left: say when a key returns, not just "429".
      const after = pool.acquire({ dryRun: true, ...(request.model === undefined ? {} : { model: request.model }) });
      if (!after.ok && (after.reason === "all-cooling" || after.reason === "free-budget-exhausted")) {
        dropRest(last);
        throw failWith(noKeyError(after, now(), rateLimitMessage(last)));
      }
    }
    // Only a reset the upstream announced becomes a Retry-After: a 429 sent without one is passed
    // back without one (a made-up wait would have the client's SDK sleep on the proxy's guess).
    if (last.outcome.kind === "shared-capacity" && last.outcome.source !== "default" && !last.headers.has("retry-after")) {
      extraHeaders["retry-after"] = String(Math.max(1, Math.ceil((last.outcome.until - now()) / 1000)));
    }
    // Every attempt failed, or the request was refused: the upstream's last answer, as it came.
    record.keyId = last.keyId;
    finish(last.status, { ttfbMs: round(performance.now() - started) });
    const rest = last.rest;
    const body = rest ? relay(rest.reader, { upstream: rest.upstream, silence: rest.silence, held: [last.bytes], onEnd: rest.release }) : last.bytes;
    return new Response(body, { status: last.status, headers: clientResponseHeaders(last.headers, extraHeaders) });

    async function backoff() {
      upstreamFaults++;
      if (attempts() >= maxAttempts || retryBackoffMs === 0) return;
      await sleep(retryBackoffMs * 2 ** (upstreamFaults - 1), waitSignal());
    }
  };
}

function rateLimitMessage(last: LastFailure | undefined): string | undefined {
  return last?.kind === "response" && last.outcome.kind === "rate-limited" ? last.outcome.message : undefined;
}
