/**
 * One shared timer for every "has the upstream been silent too long?" question, instead of a
 * timer per request: at tens of thousands of requests a second, arming and clearing a timer each
 * costs more than the check itself. Entries are looked at every `limit / 8` (10 ms to 1 s), so a
 * limit fires at most an eighth late.
 */

export interface SilenceWatch {
  /** Records activity: the silence starts again from now. */
  touch(): void;
  stop(): void;
}

interface Entry {
  last: number;
  limitMs: number;
  onSilence: () => void;
}

export interface SilenceWatcher {
  watch(limitMs: number, onSilence: () => void): SilenceWatch;
}

const noWatch: SilenceWatch = { touch() {}, stop() {} };

export function createSilenceWatcher(now: () => number = () => performance.now()): SilenceWatcher {
  const entries = new Set<Entry>();
  let timer: Timer | undefined;
  let tickMs = Infinity;

  const check = () => {
    const at = now();
    for (const entry of entries) {
      if (at - entry.last >= entry.limitMs) {
        entries.delete(entry);
        entry.onSilence();
      }
    }
    if (entries.size === 0 && timer) {
      clearInterval(timer);
      timer = undefined;
      tickMs = Infinity;
    }
  };

  return {
    watch(limitMs, onSilence) {
      if (limitMs <= 0) return noWatch;
      const entry: Entry = { last: now(), limitMs, onSilence };
      entries.add(entry);
      const wanted = Math.min(1000, Math.max(10, limitMs / 8));
      if (!timer || wanted < tickMs) {
        if (timer) clearInterval(timer);
        tickMs = wanted;
        timer = setInterval(check, tickMs);
        timer.unref?.();
      }
      return {
        touch: () => {
          entry.last = now();
        },
        stop: () => {
          entries.delete(entry);
        },
      };
    },
  };
}
