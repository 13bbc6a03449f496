/**
 * The proxy's logs: requests, keys and errors, each a date-rotated file of JSON lines in LOG_DIR,
 * plus one short human line per request on standard output (filtered by LOG_LEVEL).
 *
 * Listeners only queue the event: formatting and writing happen on a timer, off the request.
 * Nothing here ever sees a key (events carry ids) or a client's Authorization header.
 */
import type { EventBus, ProxyEventMap } from "../events.ts";
import type { RequestRecord } from "../upstream/request-record.ts";
import { createDailyAppender, type DailyAppender } from "./daily-appender.ts";

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

type Queued =
  | { kind: "request"; record: RequestRecord }
  | { kind: "key"; at: number; event: string; fields: Record<string, unknown> }
  | { kind: "error"; at: number; fields: Record<string, unknown> };

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
  let reportedDiskProblem = false;
  const onError = (message: string) => {
    if (reportedDiskProblem) return;
    reportedDiskProblem = true;
    err(`${message}\n`);
  };
  const appender = (prefix: string): DailyAppender => createDailyAppender({ dir, prefix, retentionDays, now, flushIntervalMs, onError });
  const requests = appender("requests");
  const keys = appender("keys");
  const errors = appender("errors");
  const shows = (wanted: LogLevel) => levelRank[wanted] >= levelRank[level];

  let queue: Queued[] = [];
  let timer: Timer | undefined;
  const enqueue = (item: Queued) => {
    queue.push(item);
    if (!timer) {
      timer = setTimeout(drain, Math.min(flushIntervalMs, 50));
      timer.unref?.();
    }
  };

  function drain(): void {
    timer = undefined;
    const batch = queue;
    queue = [];
    let stdout = "";
    let stderr = "";
    for (const item of batch) {
      switch (item.kind) {
        case "request": {
          const { record } = item;
          const time = new Date(record.startedAt).toISOString();
          // Each line goes to the file of its own `time`, even when drained just after midnight.
          requests.write(JSON.stringify({ time, ...record, startedAt: undefined }), record.startedAt);
          // Upstream errors: an error in the answer itself (a 5xx, a late error event or a broken
          // 200 stream), and any attempt that failed with a 5xx or no answer, even when another
          // attempt then served (the forward loop may clear `error` once it has). A client that
          // leaves is not one, even in the middle of a 200 stream.
          const answerError = record.error !== undefined && !record.aborted && (record.status >= 500 || record.status === 200);
          const failed = record.attempts.filter((attempt) => attempt.status >= 500 || attempt.status === 0);
          if (answerError || failed.length > 0) {
            const error = answerError
              ? record.error
              : `upstream attempt failed: ${failed.map((attempt) => (attempt.status === 0 ? attempt.outcome : `${attempt.status} ${attempt.outcome}`)).join(", ")}`;
            errors.write(
              JSON.stringify({ time, kind: "upstream", requestId: record.requestId, status: record.status, error, attempts: record.attempts }),
              record.startedAt,
            );
          }
          const warn = record.status >= 500;
          if (shows(warn ? "warn" : "info")) {
            const line = humanLine(record, time);
            if (warn) stderr += line;
            else stdout += line;
          }
          break;
        }
        case "key": {
          const time = new Date(item.at).toISOString();
          keys.write(JSON.stringify({ time, event: item.event, ...item.fields }), item.at);
          const warn = item.event === "key.disabled" || item.event === "key.cooldown" || item.event === "account.rest";
          if (shows(warn ? "warn" : "info")) {
            const line = `${time} ${item.event} ${String(item.fields.keyId ?? "")}${describeKeyEvent(item.fields)}\n`;
            // Warnings go to stderr, as for requests (see `err` above).
            if (warn) stderr += line;
            else stdout += line;
          }
          break;
        }
        case "error": {
          const time = new Date(item.at).toISOString();
          errors.write(JSON.stringify({ time, ...item.fields }), item.at);
          if (shows("error")) stderr += `${time} error ${String(item.fields.message ?? "")}\n`;
          break;
        }
      }
    }
    if (stdout) out(stdout);
    if (stderr) err(stderr);
  }

  const unsubscribes = [
    events.on("request.done", (record) => enqueue({ kind: "request", record })),
    ...(["key.cooldown", "key.recovered", "key.failure", "key.disabled", "key.added", "key.removed", "key.enabled", "account.rest"] as const).map((name) =>
      events.on(name, (event: ProxyEventMap[typeof name]) => enqueue({ kind: "key", at: now(), event: name, fields: keyFields(event) })),
    ),
    events.on("store.error", ({ message }) => enqueue({ kind: "error", at: now(), fields: { kind: "key-store", message } })),
  ];

  const flush = async () => {
    if (timer) {
      clearTimeout(timer);
      drain();
    }
    await Promise.all([requests.flush(), keys.flush(), errors.flush()]);
  };

  return {
    internalError(error, context) {
      const fields = {
        kind: "internal",
        message: error instanceof Error ? error.message : String(error),
        ...(error instanceof Error && error.stack ? { stack: error.stack } : {}),
        ...context,
      };
      enqueue({ kind: "error", at: now(), fields });
    },
    flush,
    async close() {
      for (const unsubscribe of unsubscribes) unsubscribe();
      await flush();
      await Promise.all([requests.close(), keys.close(), errors.close()]);
    },
  };
}

function keyFields(event: object): Record<string, unknown> {
  const fields: Record<string, unknown> = { ...event };
  if (typeof fields.until === "number") fields.until = new Date(fields.until).toISOString();
  return fields;
}

function describeKeyEvent(fields: Record<string, unknown>): string {
  if (fields.until) return ` until ${String(fields.until)} (${String(fields.source)}): ${String(fields.reason ?? "")}`;
  if (fields.reason) return `: ${String(fields.reason)}`;
  return "";
}

/** `2026-11-25T10:00:00.123Z 200 POST /v1/chat/completions openai/gpt-4o k_1234abcd 1 try 812 ms 153 tok` */
export function humanLine(record: RequestRecord, time = new Date(record.startedAt).toISOString()): string {
  const parts = [
    time,
    String(record.status),
    record.method,
    `/v1${record.path}`,
    record.model ?? "-",
    record.keyId ?? "-",
    `${record.attempts.length} ${record.attempts.length === 1 ? "try" : "tries"}`,
    `${Math.round(record.durationMs)} ms`,
  ];
  if (record.usage) parts.push(`${record.usage.totalTokens} tok`);
  if (record.aborted) parts.push("(client left)");
  if (record.error && record.status >= 400) parts.push(`: ${record.error}`);
  return `${parts.join(" ")}\n`;
}
