/**
 * A date-rotated log file appender: `<dir>/<prefix>-YYYY-MM-DD.log` (UTC), one line per record.
 *
 * - `write` only pushes onto an in-memory buffer: no disk I/O on the caller's path. A timer (or a
 *   buffer past `maxBufferBytes`) flushes it with one async append.
 * - The file for a line is chosen by the line's own time (`write(line, at)`), so a flush that spans
 *   midnight splits correctly and a new file starts at midnight without a restart.
 * - Retention: files of this prefix older than `retentionDays` are deleted at startup (when the
 *   appender is created, even if nothing is ever written) and at each rotation; other files in the
 *   folder are never touched. `flush()` also waits for the startup sweep.
 * - A write that fails (unwritable folder, full disk) is reported once through `onError`, and the
 *   process keeps serving; lines past `maxPendingBytes` are dropped rather than growing memory.
 */
import { appendFile, mkdir, readdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import { utcDay } from "../time-text.ts";

export interface DailyAppenderOptions {
  dir: string;
  prefix: string;
  retentionDays: number;
  now?: () => number;
  flushIntervalMs?: number;
  maxBufferBytes?: number;
  /** Bytes kept while the disk refuses writes, before lines are dropped. */
  maxPendingBytes?: number;
  onError?: (message: string) => void;
}

export interface DailyAppender {
  /** Queues a line for the file of the day `at` falls on (default: now). */
  write(line: string, at?: number): void;
  /** Writes what is queued (after the startup sweep) and waits for it. */
  flush(): Promise<void>;
  close(): Promise<void>;
}

const DAY_MS = 86_400_000;

export function createDailyAppender({
  dir,
  prefix,
  retentionDays,
  now = Date.now,
  flushIntervalMs = 200,
  maxBufferBytes = 256 * 1024,
  maxPendingBytes = 16 * 1024 * 1024,
  onError,
}: DailyAppenderOptions): DailyAppender {
  /** Lines waiting, grouped by the day they belong to (normally one group). */
  let pending = new Map<string, string[]>();
  let pendingBytes = 0;
  let timer: Timer | undefined;
  let flushing: Promise<void> | undefined;
  /** The newest day written to (or today at startup): a later day is a rotation. */
  let currentDay: string | undefined;
  let dirReady: Promise<void> | undefined;
  let reported = false;
  let dropped = 0;

  const report = (message: string) => {
    if (reported) return;
    reported = true; // once: a full disk must not flood stderr
    onError?.(message);
  };

  const fileName = (day: string) => `${prefix}-${day}.log`;
  const ownFile = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}-(\\d{4}-\\d{2}-\\d{2})\\.log$`);

  async function sweep(today: string): Promise<void> {
    const oldest = utcDay(Date.parse(`${today}T00:00:00Z`) - (retentionDays - 1) * DAY_MS);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      return;
    }
    await Promise.all(
      names.map(async (name) => {
        const day = ownFile.exec(name)?.[1];
        if (day !== undefined && day < oldest) await unlink(join(dir, name)).catch(() => {});
      }),
    );
  }

  async function writeOut(): Promise<void> {
    if (pending.size === 0) return;
    const batch = pending;
    pending = new Map();
    const batchBytes = pendingBytes;
    pendingBytes = 0;
    dirReady ??= mkdir(dir, { recursive: true }).then(() => undefined);
    try {
      await dirReady;
    } catch (error) {
      dirReady = undefined;
      report(`logs: cannot create ${dir}: ${describe(error)}; logging to files is paused, the proxy keeps serving`);
      requeue(batch, batchBytes);
      return;
    }
    for (const [day, lines] of batch) {
      if (day !== currentDay) {
        // A new day: a new file, and old files go.
        if (currentDay === undefined || day > currentDay) {
          currentDay = day;
          await sweep(day);
        }
      }
      try {
        await appendFile(join(dir, fileName(day)), lines.join(""), { mode: 0o600 });
        reported = false;
      } catch (error) {
        report(`logs: cannot write ${join(dir, fileName(day))}: ${describe(error)}; the proxy keeps serving`);
        requeue(new Map([[day, lines]]), lines.reduce((sum, line) => sum + line.length, 0));
      }
    }
  }

  function requeue(batch: Map<string, string[]>, bytes: number) {
    if (pendingBytes + bytes > maxPendingBytes) {
      // Count lines, not days: the close() message says how many lines were lost.
      for (const lines of batch.values()) dropped += lines.length;
      return;
    }
    for (const [day, lines] of batch) pending.set(day, [...lines, ...(pending.get(day) ?? [])]);
    pendingBytes += bytes;
  }

  function flush(): Promise<void> {
    if (timer) {
      clearTimeout(timer);
      timer = undefined;
    }
    const run = (flushing ?? Promise.resolve()).then(writeOut);
    flushing = run.finally(() => {
      if (flushing === tracked) flushing = undefined;
    });
    const tracked = flushing;
    return run;
  }

  // Retention holds at startup even for a proxy that never logs a line: sweep now, not on the first
  // write. Flushes chain after it, so `flush()` is the way to wait for it (sweep never rejects).
  currentDay = utcDay(now());
  flushing = sweep(currentDay);

  return {
    write(line, at = now()) {
      const day = utcDay(at);
      let lines = pending.get(day);
      if (!lines) pending.set(day, (lines = []));
      const text = line.charCodeAt(line.length - 1) === 10 ? line : `${line}\n`;
      if (pendingBytes + text.length > maxPendingBytes) {
        dropped++;
        return;
      }
      lines.push(text);
      pendingBytes += text.length;
      if (pendingBytes >= maxBufferBytes) void flush();
      else if (!timer) {
        timer = setTimeout(() => void flush(), flushIntervalMs);
        timer.unref?.();
      }
    },
    flush,
    async close() {
      await flush();
      if (dropped > 0) onError?.(`logs: ${dropped} lines for ${prefix} could not be written`);
    },
  };
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
