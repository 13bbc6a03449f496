/**
 * Session affinity: OpenRouter caches prompts per account, so the requests of one conversation
 * should reach the same account (and key) while it can serve them (docs/openrouter.md,
 * "Usage, caching and sessions"). A conversation is named by the body's `session_id`,
 * `prompt_cache_key` or `user`, or the `x-session-id` header, the first found in that order.
 *
 * The map is bounded: at most `maxSessions`, least recently used dropped first, and a session
 * idle longer than `idleMs` is forgotten. Names are kept only as a hash, so neither memory dumps
 * nor logs hold what a client called its conversation.
 */

export interface SessionAffinity {
  /** The session's hashed name, or undefined when the request names none. */
  sessionOf(bodySession: string | undefined, headers: Headers): string | undefined;
  /** The key the session is pinned to, if it is still fresh. */
  pinned(session: string): string | undefined;
  /** The key that served the session's latest request: it stays there. */
  pin(session: string, keyId: string): void;
  readonly size: number;
}

export interface SessionAffinityOptions {
  maxSessions?: number;
  idleMs?: number;
  now?: () => number;
}

export const MAX_SESSIONS = 100_000;
export const SESSION_IDLE_MS = 3_600_000;

/** The session name a body carries: `session_id`, then `prompt_cache_key`, then `user`. */
export function sessionFromBody(body: { session_id?: unknown; prompt_cache_key?: unknown; user?: unknown }): string | undefined {
  return named(body.session_id) ?? named(body.prompt_cache_key) ?? named(body.user);
}

const named = (value: unknown): string | undefined => (typeof value === "string" && value !== "" ? value : undefined);

export function createSessionAffinity({ maxSessions = MAX_SESSIONS, idleMs = SESSION_IDLE_MS, now = Date.now }: SessionAffinityOptions = {}): SessionAffinity {
  // A Map iterates in insertion order: deleting and re-setting on use keeps the least recently used first.
  const pins = new Map<string, { keyId: string; at: number }>();
  return {
    get size() {
      return pins.size;
    },
    sessionOf(bodySession, headers) {
      const name = bodySession ?? (headers.get("x-session-id") || undefined);
      // Hashed with the length, so "a"+"bc" and "ab"+"c" style joins cannot collide by construction.
      return name === undefined ? undefined : Bun.hash(`${name.length}:${name}`).toString(36);
    },
    pinned(session) {
      const pin = pins.get(session);
      if (!pin) return undefined;
      if (now() - pin.at > idleMs) {
        pins.delete(session);
        return undefined;
      }
      return pin.keyId;
    },
    pin(session, keyId) {
      pins.delete(session);
      pins.set(session, { keyId, at: now() });
      if (pins.size > maxSessions) {
        const oldest = pins.keys().next();
        if (!oldest.done) pins.delete(oldest.value);
      }
    },
  };
}
