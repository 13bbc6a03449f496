/**
 * What the proxy announces, by name, and the bus's face: the key pool and the request path emit,
 * the logs, metrics and tests listen (observe/event-bus.ts is the bus). A leaf, so src/keys announces
 * without importing src/observe.
 */
import type { ResetSource } from "./outcome.ts";
import type { RequestRecord } from "./request-record.ts";

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
  /**
   * The shared store (Redis) became unreachable ("degraded"), reachable again ("recovered"), or
   * did something once a person should know of ("notice": an import, a start from KEYS_FILE).
   */
  "shared.state": { kind: "degraded" | "recovered" | "notice"; message: string };
  /** The models catalog (prices for budgets) could not be fetched, after it could; or can again. */
  "prices.state": { kind: "failed" | "recovered"; message: string };
  /** A client key's request refused before it went upstream (a model outside --models, a limit, expiry). */
  "client.refused": { client: string; code: string };
}

export type ProxyEventName = keyof ProxyEventMap;
type Listener<K extends ProxyEventName> = (event: ProxyEventMap[K]) => void;

export interface EventBus {
  on<K extends ProxyEventName>(name: K, listener: Listener<K>): () => void;
  emit<K extends ProxyEventName>(name: K, event: ProxyEventMap[K]): void;
}

