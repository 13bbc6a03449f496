/**
 * Bun's Redis client has no per-command timeout: with Redis paused (SIGSTOP) a command stays
 * pending until Redis resumes (docs/state-model.md, "Redis"). Every call goes through `withTimeout`,
 * so a caller waits at most `ms`; the abandoned promise's late answer or error is swallowed.
 */

export type Timed<T> = { ok: true; value: T } | { ok: false; timedOut: true } | { ok: false; timedOut: false; error: unknown };

export function withTimeout<T>(start: () => Promise<T>, ms: number): Promise<Timed<T>> {
  let promise: Promise<T>;
  try {
    promise = start();
  } catch (error) {
    // Some client methods throw synchronously (e.g. unsubscribe outside subscriber mode).
    return Promise.resolve({ ok: false, timedOut: false, error });
  }
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, timedOut: true }), ms);
    promise.then(
      (value) => {
        clearTimeout(timer);
        resolve({ ok: true, value });
      },
      (error: unknown) => {
        clearTimeout(timer);
        resolve({ ok: false, timedOut: false, error });
      },
    );
  });
}

/** A one-line message from whatever a client threw. */
export function errorText(error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  return text.split("\n")[0] ?? "";
}
