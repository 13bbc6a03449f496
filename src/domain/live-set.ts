/**
 * The set of things in flight (watched requests, upstream attempts): each comes and goes within
 * a request, thousands of times a second. A JavaScript `Set` used that way makes JavaScriptCore's
 * collector run full collections (an old set holding young objects): 25 in 5 s of load instead
 * of 9, counted with BUN_JSC_logGC=1. An array with swap-remove does not, and is O(1) both ways.
 */
export interface Slotted {
  /** Where the item sits in its set; -1 when it is in none. */
  slot: number;
}

export class LiveSet<T extends Slotted> {
  /** In no particular order; to remove items while walking it, walk it from the end. */
  readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  add(item: T): void {
    if (item.slot !== -1) return;
    item.slot = this.items.length;
    this.items.push(item);
  }

  delete(item: T): void {
    const at = item.slot;
    if (at === -1 || this.items[at] !== item) return;
    const last = this.items.pop() as T;
    if (last !== item) {
      this.items[at] = last;
      last.slot = at;
    }
    item.slot = -1;
  }
}
