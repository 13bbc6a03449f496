/**
 * One request through the proxy, as one object moving through
 *
 *   choose key → send → judge → retry | commit → relay → done
 *
 * `run` is the loop. Choosing a key is the pool's acquire, then the key's reservation (`reserve`,
 * forward-types.ts): a refusal is reported like an answer's outcome and another key is chosen,
 * with nothing sent. `send` makes one attempt and `judgeAnswer` (read-answer.ts) reads as much
 * of the answer as it takes to know whether it serves. A served answer goes to `commit`, the one
 * commit point: before it the proxy may still retry; after it the bytes pass untouched and
 * nothing is replayed. Every failure of whatever kind goes to `fail`, which classifies it once,
 * reports it to the pool once, notes it in the record once, and asks the retry plan once.
 * When nothing serves, `answerWithLast` gives the upstream's last answer or the proxy's own error.
 */
import { ProxyError } from "../domain/errors.ts";
import { redactHeaders, redactSecret, type ChunkReader, type ReadResult } from "../domain/redact.ts";
import type { AcquireResult, KeyLease, ReportContext } from "../keys/key-pool.ts";
import { Attempt, type Failure } from "./attempt.ts";
import { describeFetchError, round, serverTiming } from "./answer-checks.ts";
import type { ForwardContext, ProxyRequest } from "./forward-types.ts";
import { clientResponseHeaders, upstreamRequestHeaders } from "./headers.ts";
import { noKeyError } from "./no-key-error.ts";
import { classify, classifyError, type ErrorBodyFacts } from "./policy.ts";
import type { Outcome } from "../domain/outcome.ts";
import { keepsEncoding } from "./encoded-answers.ts";
import { judgeAnswer, type Judged } from "./read-answer.ts";
import { relay, type RelayEnd, type RelayEnds } from "./relay.ts";
import { BODY_LOG_LIMIT, bodyForLog, generationIdOf, newRequestRecord, recordRelayEnd } from "./record-filling.ts";
import type { AttemptRecord, RequestRecord } from "../domain/request-record.ts";
import { answerStands, RetryPlan } from "./retry-plan.ts";
import { UsageTap } from "./usage-tap.ts";
import { usageShapeOf, type UsageShape } from "./usage-shapes.ts";

/** Bun's `fetch` ends any request after 5 minutes of silence unless told not to; our own
 * limit (`upstreamTimeoutMs`) takes its place. https://github.com/oven-sh/bun/issues/16682 */
type BunFetchInit = BunFetchRequestInit & { timeout: false };

/** The answer being relayed after the commit point, for the record when it ends. */
interface Relayed {
  attempt: Attempt;
  status: number;
  tap: UsageTap | undefined;
  isStream: boolean;
}

export class RequestRun implements RelayEnds {
  private readonly started: number;
  private readonly record: RequestRecord;
  private readonly plan: RetryPlan;
  private readonly session: string | undefined;
  /** Where the answer's usage is and what it is called (usage-shapes.ts). */
  private readonly usageShape: UsageShape;
  private last: LastFailure | undefined;
  /** The commit point: set once an answer is handed to the client; from then on nothing is retried. */
  private committed = false;
  /** The answer being relayed after the commit point (or a request's own error stream). */
  private relaying: Relayed | undefined;

  constructor(
    private readonly context: ForwardContext,
    private readonly request: ProxyRequest,
  ) {
    this.started = request.receivedAt;
    this.plan = new RetryPlan(request.model, context.retryBackoffMs);
    this.record = newRequestRecord(request, context.now() - (performance.now() - this.started), context.logBodies);
    this.session = context.affinity?.sessionOf(request.session, request.headers);
    this.usageShape = usageShapeOf(request.path);
  }

  async run(): Promise<Response> {
    const { pool, maxAttempts } = this.context;
    for (;;) {
      if (this.ended()) throw this.clientGone();
      // With the attempts spent, the pool's outlook (a read) is asked only when a rate limit ended
      // the request: it says whether any key is left (the upstream's 429 stands) or when one returns.
      const spent = this.record.attempts.length >= maxAttempts;
      if (spent && !mayTellWhenKeysReturn(this.last)) break;
      const prefer = this.session === undefined ? undefined : this.context.affinity?.pinned(this.session);
      const acquired = spent ? pool.outlook(this.plan.options(prefer)) : pool.acquire(this.plan.options(prefer));
      if (!acquired.ok) {
        if (!onlyWaitingHelps(acquired, this.last)) break; // the upstream's last answer says it best
        dropRest(this.last);
        throw this.failWith(noKeyError(acquired, this.context.now(), rateLimitMessage(this.last)));
      }
      if (!("lease" in acquired)) break;
      const reserved = this.context.reserve(acquired.lease, this.request.model);
      const refusal = reserved instanceof Promise ? await reserved : reserved;
      if (refusal !== undefined) {
        // Part of choosing a key: nothing went upstream, so no attempt is noted and none is spent.
        this.report(acquired.lease.keyId, refusal, undefined);
        if (!this.plan.after(refusal, acquired.lease, this.context.now()).retry) break;
        continue;
      }
      const attempt = new Attempt(acquired.lease, this.request.signal, this.context.attemptsInFlight, this.context.silenceWatcher, this.context.upstreamTimeoutMs);
      const judged = await this.send(attempt);
      if (judged.kind === "whole" || judged.kind === "relay") return this.commit(attempt, judged);
      const next = await this.fail(attempt, judged);
      if (next instanceof Response) return next;
      if (next === "stop") break;
    }
    if (this.ended()) throw this.clientGone();
    return this.answerWithLast();
  }

  /** Send: one upstream request with the attempt's key; then judge what came back. */
  private async send(attempt: Attempt): Promise<Judged> {
    const { secret } = attempt.lease;
    const { request } = this;
    attempt.encoded = keepsEncoding(request.method, request.path);
    const init: BunFetchInit = {
      method: request.method,
      headers: upstreamRequestHeaders(request.headers, secret, attempt.encoded),
      decompress: !attempt.encoded,
      body: request.body,
      signal: attempt.controller.signal,
      redirect: "manual",
      timeout: false,
    };
    try {
      attempt.response = await this.context.fetch(`${this.context.baseUrl}${request.path}${request.search}`, init);
    } catch (error) {
      attempt.release();
      const timedOut = attempt.timedOut;
      const reason = timedOut ? String((attempt.controller.signal.reason as DOMException).message) : this.context.redactUrl(redactSecret(describeFetchError(error), secret));
      return { kind: "fault", status: 0, reason, noted: timedOut ? "upstream-timeout" : "upstream-unreachable", thrown: true, timedOut };
    }
    // An upstream that echoes the Authorization it got must not hand the key to the client.
    redactHeaders(attempt.response.headers, secret);
    return judgeAnswer(attempt.response, attempt, { method: request.method, usageShape: this.usageShape, streamCommitMs: this.context.streamCommitMs, redactUrl: this.context.redactUrl });
  }

  /** The one failure path: classify once, report once, note once, decide the retry once. */
  private async fail(attempt: Attempt, failure: Failure): Promise<"retry" | "stop" | Response> {
    if (failure.kind === "fault") {
      // A read that failed because the client left is the client's doing: the record keeps the attempt.
      if (failure.thrown && this.ended()) throw this.clientGone(this.note(attempt, failure.status, "client-gone"));
      const outcome: Outcome = { kind: "upstream-error", reason: failure.reason };
      this.report(attempt.keyId, outcome, undefined);
      this.note(attempt, failure.status, failure.noted);
      dropRest(this.last);
      this.last = { kind: "unreachable", reason: failure.reason, timedOut: failure.timedOut };
      return this.decide(outcome, attempt.lease);
    }
    const { status, facts } = failure;
    const outcome = classifyError(this.request.path, { status, headers: failure.headers, body: facts, now: this.context.now(), defaultCooldownMs: this.context.defaultCooldownMs, model: this.request.model });
    this.report(attempt.keyId, outcome, facts);
    this.note(attempt, status, outcome.kind);
    this.record.error = `upstream answered ${status}${facts.message ? `: ${facts.message}` : ""}`;
    if (this.context.logBodies) this.record.responseBody = bodyForLog(failure.bytes);
    if (failure.stream) {
      // An error event before a stream's content: the request's own fault goes to the client as it came.
      if (outcome.kind === "request-error") return this.relayAsItCame(attempt, failure.stream.reader, failure.stream.held);
      attempt.drop(failure.stream.reader);
    }
    const rest = failure.rest ? { reader: failure.rest, attempt } : undefined;
    dropRest(this.last);
    this.last = { kind: "response", keyId: attempt.keyId, status: failure.answerStatus, headers: failure.headers, bytes: failure.bytes, outcome, encoded: failure.encoded === true, rest };
    return this.decide(outcome, attempt.lease);
  }

  private async decide(outcome: Outcome, lease: KeyLease): Promise<"retry" | "stop"> {
    const { retry, waitMs } = this.plan.after(outcome, lease, this.context.now());
    if (!retry) return "stop";
    // Another attempt follows: this answer's unread rest is not needed, and the wait is worth it.
    if (this.record.attempts.length < this.context.maxAttempts) {
      dropRest(this.last);
      if (waitMs > 0) await this.context.sleep(waitMs, this.waitSignal());
    }
    return "retry";
  }

  private report(keyId: string, outcome: Outcome, facts: ErrorBodyFacts | undefined): void {
    const context: ReportContext = { model: this.request.model, account: facts?.userId };
    this.context.pool.report(keyId, outcome, context);
  }

  private note(attempt: Attempt, status: number, outcome: string): AttemptRecord {
    const noted: AttemptRecord = { keyId: attempt.keyId, status, outcome, ms: round(performance.now() - attempt.started) };
    this.record.attempts.push(noted);
    return noted;
  }

  /** The commit point: the answer goes to the client; from here on nothing is retried. */
  private commit(attempt: Attempt, judged: Extract<Judged, { kind: "whole" | "relay" }>): Response {
    const response = attempt.response as Response;
    const outcome = classify({ status: response.status, headers: response.headers, now: this.context.now(), defaultCooldownMs: this.context.defaultCooldownMs });
    this.report(attempt.keyId, outcome, undefined);
    this.note(attempt, response.status, outcome.kind);
    const elapsed = performance.now() - this.started;
    this.committed = true;
    const headers = clientResponseHeaders(response.headers, {
      "x-proxy-key-id": attempt.keyId,
      "x-proxy-attempts": String(this.record.attempts.length),
      "server-timing": serverTiming(this.record.attempts, elapsed),
    }, attempt.encoded);
    const record = this.record;
    record.keyId = attempt.keyId;
    record.ttfbMs = round(elapsed);
    record.generationId = generationIdOf(response.headers, judged.kind === "whole" ? (judged.body ?? undefined) : judged.held[0]);
    delete record.error;
    if (this.session !== undefined) this.context.affinity?.pin(this.session, attempt.keyId);
    if (judged.kind === "relay") {
      return new Response(this.relayed(attempt, response.status, judged.reader, judged.held, judged.pending, judged.isStream), { status: response.status, headers });
    }
    if (judged.usage) record.usage = judged.usage;
    if (this.context.logBodies && judged.body) record.responseBody = bodyForLog(judged.body);
    this.finish(response.status);
    return new Response(judged.body, { status: response.status, headers });
  }

  /** A stream whose first event is the request's own error: relayed as it came, already judged. */
  private relayAsItCame(attempt: Attempt, reader: ChunkReader, held: Uint8Array[]): Response {
    const response = attempt.response as Response;
    this.committed = true;
    this.record.keyId = attempt.keyId;
    this.record.ttfbMs = round(performance.now() - this.started);
    const body = this.relayed(attempt, response.status, reader, held, undefined, true);
    return new Response(body, {
      status: response.status,
      headers: clientResponseHeaders(response.headers, { "x-proxy-key-id": attempt.keyId, "x-proxy-attempts": String(this.record.attempts.length) }),
    });
  }

  private relayed(attempt: Attempt, status: number, reader: ChunkReader, held: Uint8Array[], pending: Promise<ReadResult> | undefined, isStream: boolean): ReadableStream<Uint8Array> {
    // Encoded bytes say nothing readable: no usage tap for them.
    const tap = attempt.encoded ? undefined : new UsageTap(this.usageShape, this.context.logBodies ? BODY_LOG_LIMIT + 1 : 0);
    this.relaying = { attempt, status, tap, isStream };
    return relay(reader, { upstream: attempt.controller, silence: attempt.silence, tap, held, pending, onEnd: this });
  }

  /** The relayed answer has ended: the record is complete. */
  relayEnded(end: RelayEnd): void {
    const relayed = this.relaying;
    if (!this.committed || !relayed) return;
    relayed.attempt.detach();
    recordRelayEnd(this.record, end, relayed.tap, relayed.isStream, this.context.redactUrl);
    this.finish(relayed.status);
  }

  /** Nothing served: the upstream's last answer as it came, or the proxy's own error. */
  private answerWithLast(): Response {
    const { last, record } = this;
    if (!last || last.kind === "unreachable") throw this.failWith(unreachableError(last, this.context.shownBaseUrl, record.attempts.length));
    const extraHeaders: Record<string, string> = {
      "x-proxy-key-id": last.keyId,
      "x-proxy-attempts": String(record.attempts.length),
      "server-timing": serverTiming(record.attempts, performance.now() - this.started),
    };
    // Only a reset the upstream announced becomes a Retry-After: a 429 sent without one is passed
    // back without one (a made-up wait would have the client's SDK sleep on the proxy's guess).
    if (last.outcome.kind === "shared-capacity" && last.outcome.source !== "default" && !last.headers.has("retry-after")) {
      extraHeaders["retry-after"] = String(Math.max(1, Math.ceil((last.outcome.until - this.context.now()) / 1000)));
    }
    record.keyId = last.keyId;
    record.ttfbMs = round(performance.now() - this.started);
    this.finish(last.status);
    const rest = last.rest;
    const body = rest ? relay(rest.reader, { upstream: rest.attempt.controller, silence: rest.attempt.silence, held: [last.bytes], onEnd: rest.attempt }) : last.bytes;
    return new Response(body, { status: last.status, headers: clientResponseHeaders(last.headers, extraHeaders, last.encoded) });
  }

  /** The client left, or the shutdown grace ran out: either way nobody waits for this answer any more. */
  private ended(): boolean {
    return this.request.signal.aborted || this.context.shutdown?.aborted === true;
  }

  /** `attempt`: the one cut short by the client leaving; it reached the upstream, so the record keeps it. */
  private clientGone(attempt?: AttemptRecord): ProxyError {
    dropRest(this.last);
    if (attempt) this.record.keyId = attempt.keyId;
    if (!this.request.signal.aborted && this.context.shutdown?.aborted) return this.failWith(shuttingDownError());
    this.record.aborted = true;
    this.record.error = "the client closed the request";
    this.finish(499);
    return clientClosedError();
  }

  private failWith(error: ProxyError): ProxyError {
    this.record.error = error.message;
    this.record.ttfbMs = round(performance.now() - this.started);
    this.finish(error.status);
    return error;
  }

  private finish(status: number): void {
    this.record.status = status;
    this.record.durationMs = round(performance.now() - this.started);
    this.request.onDone?.(this.record); // a client's reservation is settled before anyone reads the record
    this.context.events?.emit("request.done", this.record);
  }

  /** Built for the rare waits between attempts, not per request: AbortSignal.any is not free. */
  private waitSignal(): AbortSignal {
    const { shutdown } = this.context;
    return shutdown ? AbortSignal.any([this.request.signal, shutdown]) : this.request.signal;
  }
}

/* What the last failed attempt left, to answer with when no attempt serves, and the small
 * judgements about it the run needs at its end. */

type LastFailure =
  | {
      kind: "response";
      keyId: string;
      status: number;
      headers: Headers;
      bytes: Uint8Array;
      outcome: Outcome;
      /** The bytes are as the upstream encoded them: relayed with their Content-Encoding. */
      encoded: boolean;
      /** An error answer larger than what was read: the rest, and the attempt it belongs to. */
      rest?: { reader: ChunkReader; attempt: Attempt } | undefined;
    }
  | { kind: "unreachable"; reason: string; timedOut: boolean };

/** The upstream's last answer is the one to give when nothing else can serve (see answerStands). */
function answersItself(last: LastFailure): boolean {
  return last.kind === "response" && answerStands(last.outcome);
}

/**
 * Whether a rate limit ended the request and the proxy may say when a key returns instead: then
 * the run asks the pool once more, for nothing but that answer (see RequestRun.run).
 */
function mayTellWhenKeysReturn(last: LastFailure | undefined): boolean {
  return last?.kind === "response" && (last.outcome.kind === "rate-limited" || last.outcome.kind === "payment") && !answersItself(last);
}

/** The pool's "no key" is the answer (rather than the upstream's last): only waiting helps. */
function onlyWaitingHelps(acquired: Exclude<AcquireResult, { ok: true }>, last: LastFailure | undefined): boolean {
  if (last && answersItself(last)) return false;
  return !last || acquired.reason === "all-cooling" || acquired.reason === "free-budget-exhausted" || acquired.reason === "over-budget";
}

function rateLimitMessage(last: LastFailure | undefined): string | undefined {
  return last?.kind === "response" && last.outcome.kind === "rate-limited" ? last.outcome.message : undefined;
}

/** Every attempt failed without an answer to pass back (none was made: a 500, which cannot happen with MAX_ATTEMPTS ≥ 1). */
function unreachableError(last: Extract<LastFailure, { kind: "unreachable" }> | undefined, shownBaseUrl: string, attempts: number): ProxyError {
  if (!last) return new ProxyError(500, "no upstream attempt was made", { type: "internal_error", code: "internal_error" });
  return new ProxyError(
    last.timedOut ? 504 : 502,
    `the upstream ${shownBaseUrl} could not be reached after ${attempts} attempt${attempts === 1 ? "" : "s"}: ${last.reason}`,
    { type: last.timedOut ? "timeout_error" : "upstream_error", code: last.timedOut ? "upstream_timeout" : "upstream_unreachable" },
  );
}

/** Ends the unread rest of the last error answer: another attempt follows, or nobody needs it. */
function dropRest(last: LastFailure | undefined): void {
  if (last?.kind !== "response" || !last.rest) return;
  const { reader, attempt } = last.rest;
  last.rest = undefined;
  attempt.drop(reader);
}

const shuttingDownError = (): ProxyError =>
  new ProxyError(503, "the proxy shut down before the upstream answered (SHUTDOWN_GRACE_SECONDS ran out): retry in a moment", {
    type: "service_unavailable",
    code: "shutting_down",
    headers: { connection: "close", "retry-after": "1" },
  });

const clientClosedError = (): ProxyError =>
  new ProxyError(499, "the client closed the request", { type: "invalid_request_error", code: "client_closed_request" });
