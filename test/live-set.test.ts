import { describe, expect, test } from "bun:test";
import { LiveSet } from "../src/domain/live-set.ts";

describe("live set", () => {
  test("items added and removed in any order leave exactly the ones still in, each knowing its place", () => {
    const set = new LiveSet<{ id: number; slot: number }>();
    const items = Array.from({ length: 200 }, (_, id) => ({ id, slot: -1 }));
    for (const item of items) set.add(item);
    const removed = new Set<number>();
    // A fixed shuffle: every third, then every fifth, then some twice (a second delete is a no-op).
    for (const step of [3, 5, 3]) {
      for (let index = 0; index < items.length; index += step) {
        set.delete(items[index] as { id: number; slot: number });
        removed.add(index);
      }
    }
    expect(set.size).toBe(items.length - removed.size);
    expect(new Set(set.items.map((item) => item.id))).toEqual(new Set(items.filter((item) => !removed.has(item.id)).map((item) => item.id)));
    set.items.forEach((item, index) => expect(item.slot).toBe(index));
    for (const index of removed) expect(items[index]?.slot).toBe(-1);
  });

  test("adding an item twice keeps it once", () => {
    const set = new LiveSet<{ slot: number }>();
    const item = { slot: -1 };
    set.add(item);
    set.add(item);
    expect(set.size).toBe(1);
  });
});
