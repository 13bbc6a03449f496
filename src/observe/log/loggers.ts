/**
 * The proxy's logs: requests, keys and errors, each a date-rotated file of JSON lines in LOG_DIR,
 * plus one short human line per request on standard output (filtered by LOG_LEVEL).
 *
 * A line is formatted when its event happens; writing happens later, in batches, off the request.
 * Nothing here ever sees a key (events carry ids) or a client's Authorization header, and every
 * line, on stdout or in a file, has its control characters escaped (escape-controls.ts).
 */
import type { EventBus, ProxyEventMap } from "../../domain/events.ts";
import type { RequestRecord } from "../../domain/request-record.ts";
import { isoTime } from "../../domain/time-text.ts";
import { createDailyAppender, type DailyAppender } from "./daily-appender.ts";
import { escapeHumanLine, escapeJsonLine } from "./escape-controls.ts";
import { LineBuffer } from "./line-buffer.ts";

const decoder = new TextDecoder();

export type LogLevel = "debug" | "info" | "warn" | "error";
const levelRank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface LoggingOptions {
  dir: string;
  retentionDays: number;
  level: LogLevel;
  events: EventBus;
  now?: () => number;
  /** Where the human lines go (stdout, and stderr for warnings and errors). */
  out?: (text: string) => void;
  err?: (text: string) => void;
  flushIntervalMs?: number;
}

export interface Logging {
  /** An exception of the proxy's own (with its stack) for the errors log. */
  internalError(error: unknown, context: Record<string, unknown>): void;
  flush(): Promise<void>;
  close(): Promise<void>;
}

export function startLogging({
  dir,
  retentionDays,
  level,
  events,
  now = Date.now,
  out = (text) => process.stdout.write(text),
  err = (text) => process.stderr.write(text),
  flushIntervalMs = 200,
}: LoggingOptions): Logging {
  // The three files usually fail together (one folder, one disk): the first to fail says so, the
  // last to recover says it is over; each outage once, however often it comes back.
  const failingFiles = new Set<string>();
  const diskProblem = (prefix: string) => (message: string) => {
    if (failingFiles.size === 0) err(`${escapeHumanLine(message)}\n`);
    failingFiles.add(prefix);
  };
  const diskRecovered = (prefix: string) => (message: string) => {
    if (!failingFiles.delete(prefix) || failingFiles.size > 0) return;
    err(`${escapeHumanLine(message)}\n`);
  };
  const appender = (prefix: string): DailyAppender => {
    const files = createDailyAppender({ dir, prefix, retentionDays, now, flushIntervalMs, onError: diskProblem(prefix), onRecovered: diskRecovered(prefix), onLost: (message) => err(`${escapeHumanLine(message)}\n`) });
    // Every file line passes here: no value in it can forge a line or reach a terminal raw.
    return { ...files, write: (line, at) => files.write(escapeJsonLine(line), at) };
  };
  const requests = appender("requests");
  const keys = appender("keys");
  const errors = appender("errors");
  const shows = (wanted: LogLevel) => levelRank[wanted] >= levelRank[level];
  const showsInfo = shows("info");
  const showsWarn = shows("warn");

  // The human lines are batched into one write per stream on a short timer; the file lines are
  // buffered by their appenders. Each line is formatted when its event happens, while the record
  // is still in the CPU's cache: formatting a batch of them later cost several times as much.
  const stdout = new LineBuffer();
  const stderr = new LineBuffer();
  let timer: Timer | undefined;
  const say = (line: string, warn: boolean) => {
    (warn ? stderr : stdout).append(escapeHumanLine(line));
    if (!timer) {
      timer = setTimeout(sayNow, Math.min(flushIntervalMs, 50));
      timer.unref?.();
    }
  };
  function sayNow(): void {
    timer = undefined;
    if (stdout.lineCount > 0) out(decoder.decode(stdout.take().bytes));
    if (stderr.lineCount > 0) err(decoder.decode(stderr.take().bytes));
  }

  const onRequest = (record: RequestRecord) => {
    const time = isoTime(record.startedAt);
    // Each line goes to the file of its own `time`, even when written just after midnight.
    requests.write(requestLine(record, time), record.startedAt);
    // Upstream errors: an error in the answer itself (a 5xx, a late error event or a broken 200
    // stream), and any attempt that failed with a 5xx or no answer, even when another attempt
    // then served (the forward loop may clear `error` once it has). A client that leaves is not
    // one, even in the middle of a 200 stream.
    const answerError = record.error !== undefined && !record.aborted && (record.status >= 500 || record.status === 200);
    let failed: string | undefined;
    for (const attempt of record.attempts) {
      if (attempt.status < 500 && attempt.status !== 0) continue;
      const text = attempt.status === 0 ? attempt.outcome : `${attempt.status} ${attempt.outcome}`;
      failed = failed === undefined ? text : `${failed}, ${text}`;
    }
    if (answerError || failed !== undefined) {
      const error = answerError ? record.error : `upstream attempt failed: ${failed}`;
      errors.write(JSON.stringify({ time, kind: "upstream", requestId: record.requestId, status: record.status, error, attempts: record.attempts }), record.startedAt);
    }
    const warn = record.status >= 500;
    if (warn ? showsWarn : showsInfo) say(humanLine(record, time), warn);
  };

  const onKeyEvent = (name: string, event: object) => {
    const at = now();
    const time = isoTime(at);
    const fields = keyFields(event);
    keys.write(JSON.stringify({ time, event: name, ...fields }), at);
    const warn = name === "key.disabled" || name === "key.cooldown" || name === "account.rest";
    if (shows(warn ? "warn" : "info")) say(`${time} ${name} ${String(fields.keyId ?? "")}${describeKeyEvent(fields)}\n`, warn);
  };

  const onError = (fields: Record<string, unknown>) => {
    const at = now();
    const time = isoTime(at);
    errors.write(JSON.stringify({ time, ...fields }), at);
    if (shows("error")) say(`${time} error ${String(fields.message ?? "")}\n`, true);
  };

  /** The end of a problem goes where its start went (errors log and stderr), so the two pair up. */
  const onRecovered = (fields: Record<string, unknown>) => {
    const at = now();
    const time = isoTime(at);
    errors.write(JSON.stringify({ time, ...fields }), at);
    say(`${time} recovered ${String(fields.message ?? "")}\n`, true);
  };

  /**
   * Redis going and coming back, and what an instance did once (an import): always on stdout, at
   * any LOG_LEVEL (an operator watching one instance must see it), and in the errors or keys log.
   */
  const onSharedState = ({ kind, message }: ProxyEventMap["shared.state"]) => {
    const at = now();
    const time = isoTime(at);
    if (kind === "notice") keys.write(JSON.stringify({ time, event: "shared.notice", message }), at);
    else errors.write(JSON.stringify({ time, kind: kind === "degraded" ? "shared-store" : "shared-store-recovered", message }), at);
    say(`${time} ${message}\n`, false);
    // Rare and about the whole instance: out at once, not with the next batch.
    clearTimeout(timer);
    sayNow();
  };

  const unsubscribes = [
    events.on("request.done", onRequest),
    ...(["key.cooldown", "key.recovered", "key.failure", "key.disabled", "key.added", "key.removed", "key.enabled", "account.rest", "account.rests-cleared"] as const).map((name) =>
      events.on(name, (event: ProxyEventMap[typeof name]) => onKeyEvent(name, event)),
    ),
    events.on("store.error", ({ message }) => onError({ kind: "key-store", message })),
    events.on("store.recovered", ({ message }) => onRecovered({ kind: "key-store-recovered", message })),
    events.on("prices.state", ({ kind, message }) => (kind === "failed" ? onError({ kind: "model-prices", message }) : onRecovered({ kind: "model-prices-recovered", message }))),
    events.on("shared.state", onSharedState),
  ];

  const flush = async () => {
    if (timer) {
      clearTimeout(timer);
      sayNow();
    }
    await Promise.all([requests.flush(), keys.flush(), errors.flush()]);
  };

  return {
    internalError(error, context) {
      onError({
        kind: "internal",
        message: error instanceof Error ? error.message : String(error),
        ...(error instanceof Error && error.stack ? { stack: error.stack } : {}),
        ...context,
      });
    },
    flush,
    async close() {
      for (const unsubscribe of unsubscribes) unsubscribe();
      await flush();
      await Promise.all([requests.close(), keys.close(), errors.close()]);
    },
  };
}

/**
 * The requests-log line: `time` first, then the record's fields in their order, `startedAt` left
 * out (it is `time`). Cut out of the serialized record rather than copying the record without
 * it: the copy cost more than the serializing. `startedAt` is a number, so its text has no comma.
 */
function requestLine(record: RequestRecord, time: string): string {
  const json = JSON.stringify(record);
  const at = json.indexOf(',"startedAt":');
  if (at === -1) return `{"time":"${time}",${json.slice(1)}`;
  const end = json.indexOf(",", at + 13);
  return `{"time":"${time}",${json.slice(1, at)}${end === -1 ? "}" : json.slice(end)}`;
}

function keyFields(event: object): Record<string, unknown> {
  const fields: Record<string, unknown> = { ...event };
  if (typeof fields.until === "number") fields.until = isoTime(fields.until);
  return fields;
}

function describeKeyEvent(fields: Record<string, unknown>): string {
  if (fields.until) return ` until ${String(fields.until)} (${String(fields.source)}): ${String(fields.reason ?? "")}`;
  if (fields.reason) return `: ${String(fields.reason)}`;
  if (Array.isArray(fields.cleared)) return `: cleared ${fields.cleared.join("; ")}`;
  return "";
}

/** `2026-11-25T10:00:00.123Z 200 POST /v1/chat/completions openai/gpt-4o k_1234abcd 1 try 812 ms 153 tok` */
export function humanLine(record: RequestRecord, time = isoTime(record.startedAt)): string {
  const tries = record.attempts.length;
  let line = `${time} ${record.status} ${record.method} /v1${record.path} ${record.model ?? "-"} ${record.keyId ?? "-"} ${tries} ${tries === 1 ? "try" : "tries"} ${Math.round(record.durationMs)} ms`;
  if (record.usage) line += ` ${record.usage.totalTokens} tok`;
  if (record.client !== undefined) line += ` client ${record.client}`;
  if (record.aborted) line += " (client left)";
  if (record.error && record.status >= 400) line += ` : ${record.error}`;
  return `${line}\n`;
}
