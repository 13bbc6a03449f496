/**
 * When Redis stops answering, asking it again on every request only adds a timeout to each one
 * (LiteLLM's users saw ~8 s per counter update before theirs had a breaker). After `threshold`
 * consecutive failures the breaker opens: calls fail at once, without touching the network,
 * and one probe at a time tests Redis after a backoff that doubles up to `maxBackoffMs`. A
 * successful probe closes it.
 */

export type BreakerState = "closed" | "open";

export interface CircuitBreakerOptions {
  /** Consecutive failures that open the breaker. */
  threshold?: number;
  /** First wait before a probe; doubled after each failed probe. */
  backoffMs?: number;
  maxBackoffMs?: number;
}

export interface CircuitBreaker {
  readonly state: BreakerState;
  /** How long to wait before the next probe while open. */
  readonly backoffMs: number;
  /** A call (or probe) succeeded: closed, backoff back to its start. Returns true if it was open. */
  success(): boolean;
  /** A call failed. Returns true when this failure opened the breaker. */
  failure(): boolean;
  /** Opens at once (a closed connection needs no more evidence). Returns true if it was closed. */
  trip(): boolean;
  /** A probe failed while open: the next one waits longer. */
  probeFailed(): void;
}

export function createCircuitBreaker({ threshold = 3, backoffMs = 200, maxBackoffMs = 5_000 }: CircuitBreakerOptions = {}): CircuitBreaker {
  let state: BreakerState = "closed";
  let failures = 0;
  let wait = backoffMs;
  const open = (): boolean => {
    if (state === "open") return false;
    state = "open";
    wait = backoffMs;
    return true;
  };
  return {
    get state() {
      return state;
    },
    get backoffMs() {
      return wait;
    },
    success() {
      failures = 0;
      wait = backoffMs;
      if (state === "closed") return false;
      state = "closed";
      return true;
    },
    failure() {
      failures += 1;
      return failures >= threshold ? open() : false;
    },
    trip() {
      failures = threshold;
      return open();
    },
    probeFailed() {
      wait = Math.min(maxBackoffMs, wait * 2);
    },
  };
}
