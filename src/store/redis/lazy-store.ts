/**
 * A store opened on its first use: what a CLI subcommand needs when REDIS_URL is set, since most
 * commands are done before they would touch it, and a Redis that cannot be reached must become the
 * command's one-line error (the `StoreLoad` failure `open` gives) rather than a throw.
 */
import type { KeyStore, StoreLoad } from "../ports.ts";

export function lazyStore(name: string, open: () => Promise<KeyStore | StoreLoad>): KeyStore {
  let opening: Promise<KeyStore | StoreLoad> | undefined;
  const opened = () => (opening ??= open());
  const isStore = (value: KeyStore | StoreLoad): value is KeyStore => "update" in value;
  return {
    name,
    async load() {
      const store = await opened();
      return isStore(store) ? store.load() : store;
    },
    async update(change) {
      const store = await opened();
      return isStore(store) ? store.update(change) : store;
    },
    // A command stores its edit, publishes it and ends: it listens to nothing.
    watch: () => () => {},
  };
}
