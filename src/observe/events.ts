/**
 * A small typed event bus. The pool and the forward loop announce what happened; logs, metrics
 * and tests subscribe. Emitting is synchronous and cheap; listeners must not throw or block.
 */
import type { ResetSource } from "../domain/outcome.ts";
import type { RequestRecord } from "../domain/request-record.ts";

export interface ProxyEventMap {
  "key.cooldown": { keyId: string; until: number; source: ResetSource; reason: string };
  "key.failure": { keyId: string; consecutiveFailures: number; reason: string };
  "key.disabled": { keyId: string; reason: string };
  "key.recovered": { keyId: string };
  "request.done": RequestRecord;
  "key.added": { keyId: string; label?: string };
  "key.removed": { keyId: string };
  "key.enabled": { keyId: string };
  "store.error": { message: string };
  /** The store problem last reported is over (the file loads, or can be written, again). */
  "store.recovered": { message: string };
  "account.rest": {
    account: string;
    keyId: string;
    scope: "account" | "model" | "key";
    modelClass: string;
    model?: string;
    until: number;
    source: string;
    reason: string;
    cause?: string;
  };
  /** What a person's enable-key cleared besides the key's failures and cooldown. */
  "account.rests-cleared": { account: string; keyId: string; cleared: string[] };
  /** A client key's request refused before it went upstream (a model outside --models, a limit, expiry). */
  "client.refused": { client: string; code: string };
}

export type ProxyEventName = keyof ProxyEventMap;
type Listener<K extends ProxyEventName> = (event: ProxyEventMap[K]) => void;

export interface EventBus {
  on<K extends ProxyEventName>(name: K, listener: Listener<K>): () => void;
  emit<K extends ProxyEventName>(name: K, event: ProxyEventMap[K]): void;
}

export interface EventBusOptions {
  /**
   * Where a failing listener is reported (the server hands it to the error log). The bus itself
   * never prints: every line the proxy writes goes through its loggers.
   */
  onListenerError?: (name: ProxyEventName, error: unknown) => void;
}

export function createEventBus({ onListenerError }: EventBusOptions = {}): EventBus {
  const listeners = new Map<ProxyEventName, Set<(event: never) => void>>();
  return {
    on(name, listener) {
      let set = listeners.get(name);
      if (!set) listeners.set(name, (set = new Set()));
      set.add(listener as (event: never) => void);
      return () => set.delete(listener as (event: never) => void);
    },
    emit(name, event) {
      const set = listeners.get(name);
      if (!set) return;
      for (const listener of set) {
        try {
          (listener as Listener<typeof name>)(event);
        } catch (error) {
          // A broken subscriber must not break a request.
          onListenerError?.(name, error);
        }
      }
    },
  };
}
