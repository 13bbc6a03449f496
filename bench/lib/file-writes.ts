/**
 * Counts how often a file is written while a measurement runs. The proxy writes its keys file to a
 * temporary file and renames it into place, so each write gives the path a new inode; polling
 * `stat` every few milliseconds sees every write that is more than one poll apart (the proxy's
 * saves are hundreds of milliseconds apart at the least).
 */
import { stat } from "node:fs/promises";

export interface FileWriteCounter {
  /** Stops polling; when each write was seen (`performance.now()`), since the start. */
  stop(): Promise<number[]>;
}

export function countFileWrites(path: string, pollMs = 20): FileWriteCounter {
  let last: string | undefined;
  const writes: number[] = [];
  let running = true;
  const look = async (): Promise<void> => {
    const seen = await stat(path).then((info) => `${info.ino}:${info.mtimeMs}`, () => "missing");
    if (last !== undefined && seen !== last && seen !== "missing") writes.push(performance.now());
    last = seen;
  };
  const loop = (async () => {
    while (running) {
      await look();
      await Bun.sleep(pollMs);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return writes;
    },
  };
}
