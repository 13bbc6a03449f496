/**
 * A date-rotated log file appender: `<dir>/<prefix>-YYYY-MM-DD.log` (UTC), one line per record.
 *
 * - `write` only encodes the line into an in-memory byte buffer: no disk I/O on the caller's path.
 *   A timer (or a buffer past `maxBufferBytes`) flushes it with one async append. Bytes, not the
 *   strings: thousands of lines a second kept as strings until the flush outlived the young
 *   generation of the garbage collector, and the full collections they caused cost more CPU than
 *   the proxy's own work (counted with BUN_JSC_logGC).
 * - The file for a line is chosen by the line's own time (`write(line, at)`), so a flush that spans
 *   midnight splits correctly and a new file starts at midnight without a restart.
 * - Retention: files of this prefix older than `retentionDays` are deleted at startup (when the
 *   appender is created, even if nothing is ever written) and at each rotation; other files in the
 *   folder are never touched. `flush()` also waits for the startup sweep.
 * - A write that fails (unwritable folder, full disk) is reported through `onError` when the
 *   problem starts, and through `onRecovered` when a write goes through again: once each per
 *   outage, however many flushes fail in between. The process keeps serving; the lines wait in
 *   memory up to `maxPendingBytes` and are dropped past it rather than growing memory.
 */
import { mkdir, open, readdir, unlink } from "node:fs/promises";
import { join } from "node:path";
import { utcDay } from "../../domain/time-text.ts";
import { joinBlocks, LineBuffer, recycleBlocks } from "./line-buffer.ts";

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
  /** A write went through after `onError`: the problem is over. */
  onRecovered?: (message: string) => void;
  /** At close: how many lines were dropped (the disk refused them for too long). */
  onLost?: (message: string) => void;
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
  onRecovered,
  onLost,
}: DailyAppenderOptions): DailyAppender {
  /** Lines waiting, grouped by the day they belong to (normally one group). */
  let pending = new Map<string, LineBuffer>();
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
    reported = true; // once per outage: a full disk must not flood stderr
    onError?.(message);
  };
  const settle = (file: string) => {
    if (!reported) return;
    reported = false;
    onRecovered?.(`logs: ${file} can be written again`);
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
    pendingBytes = 0;
    dirReady ??= mkdir(dir, { recursive: true }).then(() => undefined);
    try {
      await dirReady;
    } catch (error) {
      dirReady = undefined;
      report(`logs: cannot create ${dir}: ${describe(error)}; logging to files is paused, the proxy keeps serving`);
      for (const [day, lines] of batch) requeue(day, lines.take());
      return;
    }
    for (const [day, lines] of batch) {
      const taken = lines.takeBlocks();
      if (day !== currentDay) {
        // A new day: a new file, and old files go.
        if (currentDay === undefined || day > currentDay) {
          currentDay = day;
          await sweep(day);
        }
      }
      try {
        await appendBlocks(join(dir, fileName(day)), taken.blocks);
        settle(join(dir, fileName(day)));
        recycleBlocks(taken.blocks);
      } catch (error) {
        report(`logs: cannot write ${join(dir, fileName(day))}: ${describe(error)}; the proxy keeps serving`);
        requeue(day, { bytes: joinBlocks(taken.blocks), lineCount: taken.lineCount });
      }
    }
  }

  /** Puts bytes that could not be written back in front of what came since, or drops them past the limit. */
  function requeue(day: string, taken: { bytes: Uint8Array; lineCount: number }) {
    if (pendingBytes + taken.bytes.byteLength > maxPendingBytes) {
      // Count lines, not bytes: the close() message says how many lines were lost.
      dropped += taken.lineCount;
      return;
    }
    const lines = new LineBuffer();
    lines.appendBytes(taken);
    const later = pending.get(day);
    if (later) lines.appendBytes(later.take());
    pending.set(day, lines);
    pendingBytes += taken.bytes.byteLength;
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
      // A UTF-16 unit takes at most 3 bytes in UTF-8: a bound that needs no encoding to check.
      if (pendingBytes + line.length * 3 + 1 > maxPendingBytes) {
        dropped++;
        return;
      }
      let lines = pending.get(day);
      if (!lines) pending.set(day, (lines = new LineBuffer()));
      pendingBytes += lines.append(line);
      if (pendingBytes >= maxBufferBytes) void flush();
      else if (!timer) {
        timer = setTimeout(() => void flush(), flushIntervalMs);
        timer.unref?.();
      }
    },
    flush,
    async close() {
      await flush();
      if (dropped > 0) onLost?.(`logs: ${dropped} lines for ${prefix} could not be written`);
    },
  };
}

/** Appends the blocks in order with one vectored write: no copy of them into one buffer first. */
async function appendBlocks(path: string, blocks: readonly Uint8Array[]): Promise<void> {
  const file = await open(path, "a", 0o600);
  try {
    let unwritten = blocks.filter((block) => block.byteLength > 0);
    // A vectored write may take less than it was given: go on from where it stopped.
    while (unwritten.length > 0) {
      let { bytesWritten } = await file.writev(unwritten);
      const rest: Uint8Array[] = [];
      for (const block of unwritten) {
        if (bytesWritten >= block.byteLength) {
          bytesWritten -= block.byteLength;
          continue;
        }
        rest.push(bytesWritten > 0 ? block.subarray(bytesWritten) : block);
        bytesWritten = 0;
      }
      unwritten = rest;
    }
  } finally {
    await file.close();
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
