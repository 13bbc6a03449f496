/**
 * ROTATION: which of the keys that could serve a request gets it. Sticky keeps the last key
 * while it serves; least-recently-used spreads by last use; round-robin walks the key list.
 */
import type { Rotation } from "../config.ts";
import type { KeyRecord } from "./schema.ts";

export interface Chooser {
  choose(candidates: readonly KeyRecord[], keys: readonly KeyRecord[]): KeyRecord;
  /** The key just chosen (sticky follows it) or dropped (it rests, so sticky lets go). */
  used(keyId: string): void;
  dropped(keyId: string): void;
}

export function createChooser(rotation: Rotation): Chooser {
  let stickyId: string | undefined;
  let roundRobinCursor = 0;
  const leastRecentlyUsed = (candidates: readonly KeyRecord[]) =>
    candidates.reduce((best, key) => (key.lastUsedAt < best.lastUsedAt ? key : best), candidates[0] as KeyRecord);
  return {
    choose(candidates, keys) {
      switch (rotation) {
        case "sticky": {
          const sticky = stickyId === undefined ? undefined : candidates.find((key) => key.id === stickyId);
          return sticky ?? leastRecentlyUsed(candidates);
        }
        case "least-recently-used":
          return leastRecentlyUsed(candidates);
        case "round-robin": {
          // Walk the key list in its order from the cursor; the first candidate found is next.
          const candidateIds = new Set(candidates.map((key) => key.id));
          for (let step = 0; step < keys.length; step++) {
            const key = keys[(roundRobinCursor + step) % keys.length] as KeyRecord;
            if (candidateIds.has(key.id)) {
              roundRobinCursor = (keys.indexOf(key) + 1) % keys.length;
              return key;
            }
          }
          return candidates[0] as KeyRecord;
        }
      }
    },
    used(keyId) {
      stickyId = keyId;
    },
    dropped(keyId) {
      if (stickyId === keyId) stickyId = undefined;
    },
  };
}
