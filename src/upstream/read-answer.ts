/**
 * The "judge" step of an attempt: reads as much of the upstream's answer as it takes to know
 * whether it serves, and no more. A small whole answer is read and checked (and can still be
 * retried); a large one is checked by its head; a stream is held until its first content. The
 * result is either an answer to commit, or a `Failure` for the request run's one failure path.
 */
import { redactBytes, ScrubbedReader, type ChunkReader, type ReadResult } from "../domain/redact.ts";
import type { Attempt, Failure } from "./attempt.ts";
import { claimsJsonButIsNot, describeFetchError } from "./answer-checks.ts";
import { ANSWER_HEAD_BYTES, declaredWithin, ERROR_HEAD_BYTES, joinChunks, readHead, type BodyHead } from "./bounded-read.ts";
import { errorFactsOf, readErrorBody } from "./policy.ts";
import { holdUntilCommit, statusOfCode } from "./stream-commit.ts";
import { readJsonAnswerTail } from "./usage-tap.ts";
import type { UsageShape } from "./usage-shapes.ts";
import type { Usage } from "../domain/request-record.ts";

export type Judged =
  /** Served, read whole: `body` is the answer (null: none). */
  | { kind: "whole"; body: Uint8Array | null; usage?: Usage | undefined }
  /** Served, relayed from here: `held` first, then `pending` (a read under way), then the rest. */
  | { kind: "relay"; reader: ChunkReader; held: Uint8Array[]; pending?: Promise<ReadResult> | undefined; isStream: boolean }
  | Failure;

export interface JudgeContext {
  method: string;
  /** Which API's answer this is, for its usage (usage-shapes.ts). */
  usageShape: UsageShape;
  streamCommitMs: number;
  /** Takes credentials of OPENROUTER_BASE_URL out of a message. */
  redactUrl: (text: string) => string;
}

const decoder = new TextDecoder();

function brokeOff(attempt: Attempt, status: number, what: string, error: unknown, context: JudgeContext): Failure {
  attempt.release();
  return { kind: "fault", status, reason: `${what} broke off: ${context.redactUrl(describeFetchError(error))}`, noted: "upstream-error", thrown: true, timedOut: false };
}

export function judgeAnswer(response: Response, attempt: Attempt, context: JudgeContext): Promise<Judged> | Judged {
  // Encoded bytes cannot be read: relayed as they came (a served answer), or judged by the status alone.
  attempt.encoded = attempt.encoded && response.headers.has("content-encoding");
  if (response.status >= 400) return judgeErrorAnswer(response, attempt, context);
  if (attempt.encoded && response.body) return { kind: "relay", reader: response.body.getReader(), held: [], isStream: false };
  if (!response.body) {
    attempt.release();
    return { kind: "whole", body: null };
  }
  const body = response.body;
  const isEventStream = (response.headers.get("content-type") ?? "").includes("text/event-stream");
  return isEventStream ? judgeStream(body, response, attempt, context) : judgeWholeAnswer(body, response, attempt, context);
}

/**
 * A whole answer (JSON, a model list). Up to ANSWER_HEAD_BYTES it is read whole, checked, and can
 * still be retried; a larger one is checked by its head and relayed as it arrives, so one answer
 * never costs more memory than that. A declared small length is read in one native call: a
 * JavaScript pass per chunk would cost more than the rest of the request.
 */
async function judgeWholeAnswer(body: NonNullable<Response["body"]>, response: Response, attempt: Attempt, context: JudgeContext): Promise<Judged> {
  const { secret } = attempt.lease;
  const reader = declaredWithin(response.headers, ANSWER_HEAD_BYTES) ? undefined : new ScrubbedReader(body.getReader(), secret);
  let head: BodyHead;
  try {
    head = reader ? await readHead(reader, ANSWER_HEAD_BYTES, attempt.silence) : wholeHead(redactBytes(new Uint8Array(await response.arrayBuffer()), secret));
  } catch (error) {
    return brokeOff(attempt, response.status, "the upstream's answer", error, context);
  }
  const view = joinChunks(head.chunks);
  const tail = head.complete ? readJsonAnswerTail(view, context.usageShape) : undefined;
  if (head.complete) attempt.release();
  if (tail?.lateError !== undefined) {
    // A 200 that carries an error (OpenRouter does this): judged like the status it stands for.
    const facts = tail.errorAnswer !== undefined ? errorFactsOf(tail.errorAnswer) : readErrorBody(decoder.decode(view));
    return { kind: "answer", status: statusOfCode(facts.code), answerStatus: response.status, facts, bytes: view, headers: response.headers };
  }
  if (claimsJsonButIsNot(response.headers, view, context.method, response.status, head.complete)) {
    // A 200 that says JSON but is not (an HTML error page from something in between, a cut body).
    if (!head.complete) attempt.drop(reader);
    return { kind: "fault", status: response.status, reason: "the upstream answered 200 with a body that is not JSON", noted: "upstream-error", thrown: false, timedOut: false };
  }
  if (reader && !head.complete) return { kind: "relay", reader, held: head.chunks, isStream: false };
  return { kind: "whole", body: view, usage: tail?.usage };
}

const wholeHead = (bytes: Uint8Array): BodyHead => ({ chunks: [bytes], bytes: bytes.byteLength, complete: true });

/**
 * A stream: held until its first content (or STREAM_COMMIT_SECONDS), so an error event that
 * comes first can still be retried on another key, invisibly.
 */
async function judgeStream(body: NonNullable<Response["body"]>, response: Response, attempt: Attempt, context: JudgeContext): Promise<Judged> {
  const reader = new ScrubbedReader(body.getReader(), attempt.lease.secret);
  const decision = await holdUntilCommit(reader, { commitMs: context.streamCommitMs, silence: attempt.silence });
  switch (decision.kind) {
    case "failed":
      return brokeOff(attempt, response.status, "the upstream's stream", decision.error, context);
    case "error-event":
      return {
        kind: "answer",
        status: decision.status,
        answerStatus: response.status,
        facts: decision.facts,
        bytes: Buffer.concat(decision.held),
        headers: response.headers,
        stream: { reader, held: decision.held },
      };
    case "commit":
      return { kind: "relay", reader, held: decision.held, pending: decision.pending, isStream: true };
    case "ended":
      return { kind: "relay", reader, held: decision.held, isStream: true };
  }
}

/**
 * An error answer: its first ERROR_HEAD_BYTES are read for the policy (message, reset); a longer
 * one keeps the rest unread, relayed only if this answer is the one the client gets.
 */
async function judgeErrorAnswer(response: Response, attempt: Attempt, context: JudgeContext): Promise<Judged> {
  const { encoded } = attempt;
  const raw = response.body?.getReader();
  const reader = raw && !encoded ? new ScrubbedReader(raw, attempt.lease.secret) : raw;
  let head: BodyHead;
  try {
    head = reader ? await readHead(reader, ERROR_HEAD_BYTES, attempt.silence) : { chunks: [], bytes: 0, complete: true };
  } catch (error) {
    return brokeOff(attempt, response.status, `the upstream's ${response.status} answer`, error, context);
  }
  if (head.complete) attempt.release();
  const bytes = joinChunks(head.chunks);
  return {
    kind: "answer",
    status: response.status,
    answerStatus: response.status,
    facts: encoded ? {} : readErrorBody(decoder.decode(bytes)),
    bytes,
    headers: response.headers,
    encoded,
    rest: head.complete ? undefined : reader,
  };
}
