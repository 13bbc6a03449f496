/**
 * The small typed event bus. The pool and the forward loop announce what happened; logs, metrics
 * and tests subscribe. Emitting is synchronous and cheap; listeners must not throw or block. The
 * events' names and shapes are a leaf (domain/events.ts), so the announcers need not import this.
 */
import type { EventBus, ProxyEventMap, ProxyEventName } from "../domain/events.ts";

type Listener<K extends ProxyEventName> = (event: ProxyEventMap[K]) => void;

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
