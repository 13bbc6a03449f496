/**
 * One shared timer for every "has the upstream been silent too long?" question, instead of a
 * timer per request: at tens of thousands of requests a second, arming and clearing a timer each
 * costs more than the check itself. Entries are looked at every `limit / 8` (10 ms to 1 s), so a
 * limit fires at most an eighth late.
 */
import { LiveSet, type Slotted } from "../domain/live-set.ts";

export interface SilenceWatch {
  /** Records activity: the silence starts again from now. */
  touch(): void;
  stop(): void;
}

/** Told when the silence got too long: a function, or an object (no closure per watch). */
export type SilenceHandler = (() => void) | { onSilence(): void };

export interface SilenceWatcher {
  watch(limitMs: number, onSilence: SilenceHandler): SilenceWatch;
}

const noWatch: SilenceWatch = { touch() {}, stop() {} };

/** One watched request: itself the handle its owner touches and stops (one object per watch). */
class Entry implements SilenceWatch, Slotted {
  last: number;
  slot = -1;
  constructor(
    private readonly owner: Watcher,
    readonly limitMs: number,
    readonly handler: SilenceHandler,
  ) {
    this.last = owner.now();
  }
  touch(): void {
    this.last = this.owner.now();
  }
  stop(): void {
    this.owner.entries.delete(this);
  }
}

class Watcher implements SilenceWatcher {
  readonly entries = new LiveSet<Entry>();
  private timer: Timer | undefined;
  private tickMs = Infinity;
  constructor(readonly now: () => number) {}

  watch(limitMs: number, onSilence: SilenceHandler): SilenceWatch {
    if (limitMs <= 0) return noWatch;
    const entry = new Entry(this, limitMs, onSilence);
    this.entries.add(entry);
    const wanted = Math.min(1000, Math.max(10, limitMs / 8));
    if (!this.timer || wanted < this.tickMs) {
      if (this.timer) clearInterval(this.timer);
      this.tickMs = wanted;
      this.timer = setInterval(() => this.check(), wanted);
      this.timer.unref?.();
    }
    return entry;
  }

  private check(): void {
    const at = this.now();
    const items = this.entries.items;
    // From the end: a removal moves the last item into the removed one's place.
    for (let index = items.length - 1; index >= 0; index--) {
      const entry = items[index] as Entry;
      if (at - entry.last >= entry.limitMs) {
        this.entries.delete(entry);
        const handler = entry.handler;
        if (typeof handler === "function") handler();
        else handler.onSilence();
      }
    }
    if (this.entries.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
      this.tickMs = Infinity;
    }
  }
}

export function createSilenceWatcher(now: () => number = () => performance.now()): SilenceWatcher {
  return new Watcher(now);
}
