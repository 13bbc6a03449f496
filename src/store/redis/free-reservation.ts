/**
 * Free-model requests reserve their slot in Redis before they are sent (issue 14): one script
 * checks the account's daily count against its known limit and counts the request, so N
 * instances never send an account more free requests than its limit. It sits in front of the
 * upstream `fetch` (the forward loop stays as it is): a paid request passes straight through and
 * never waits on Redis; a free one waits for one script call at most (the connection's timeout).
 *
 * - granted: the request goes upstream as usual;
 * - refused: the account's day is used up elsewhere. The answer is OpenRouter's own 429 for the
 *   free-models-per-day limit (limit, remaining 0, reset at 00:00 UTC), made here without
 *   sending anything: the pool learns the limit and rests the account exactly as it would from
 *   the upstream, and the forward loop tries another account;
 * - Redis away (timeout, breaker open): served from memory, as without Redis, and the request is
 *   counted for the day once Redis is back (the change writer's counter batch).
 */
import { classOfModel } from "../../domain/model-class.ts";
import { accountIdOf, utcDayOf } from "../../keys/account-state.ts";
import { nextUtcMidnight } from "../../domain/time-text.ts";
import type { KeyPool } from "../../keys/key-pool.ts";
import type { SharedState } from "./shared-state.ts";

export interface FreeReservationOptions {
  fetch: typeof fetch;
  pool: KeyPool;
  shared: SharedState;
  now: () => number;
}

export function reservingFetch({ fetch: upstream, pool, shared, now }: FreeReservationOptions): typeof fetch {
  const reserving = async (input: Parameters<typeof fetch>[0], init?: Parameters<typeof fetch>[1]): Promise<Response> => {
    const body = bodyBytes(init?.body);
    // Only a body that names a free model can be one: the rest are not parsed (a native search, no copy).
    if (body === undefined || (!body.includes(":free") && !body.includes("openrouter/free"))) return upstream(input, init);
    const model = modelOf(body.toString("utf8"));
    if (classOfModel(model) !== "free") return upstream(input, init);
    const secret = bearerOf(init?.headers);
    const key = secret === undefined ? undefined : pool.records().find((record) => record.secret === secret);
    if (key === undefined) return upstream(input, init);
    const account = accountIdOf(key);
    const at = now();
    const day = utcDayOf(at);
    const free = pool.accounts().get(account)?.free;
    const knownLimit = free?.day === day ? free.limit : undefined;
    const slot = await shared.scripts.reserveFreeSlot({ account, day, ...(knownLimit === undefined ? {} : { knownLimit }) });
    if (!slot.ok) {
      shared.writer.record({ kind: "free-requests", account, day, delta: 1 });
      return upstream(input, init);
    }
    if (slot.value.granted) return upstream(input, init);
    return usedUp(slot.value.limit ?? slot.value.used, nextUtcMidnight(at), account);
  };
  return Object.assign(reserving, { preconnect: upstream.preconnect }) as typeof fetch;
}

function bodyBytes(body: RequestInit["body"] | undefined): Buffer | undefined {
  if (body instanceof ArrayBuffer) return Buffer.from(body);
  if (body instanceof Uint8Array) return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  if (typeof body === "string") return Buffer.from(body);
  return undefined;
}

function modelOf(body: string): string | undefined {
  try {
    const parsed: unknown = JSON.parse(body);
    const model = typeof parsed === "object" && parsed !== null ? (parsed as { model?: unknown }).model : undefined;
    return typeof model === "string" ? model : undefined;
  } catch {
    return undefined;
  }
}

function bearerOf(headers: RequestInit["headers"]): string | undefined {
  const value = new Headers(headers).get("authorization");
  return value?.startsWith("Bearer ") ? value.slice("Bearer ".length) : undefined;
}

/** OpenRouter's 429 for a used-up daily free-model limit (docs/openrouter.md, "Limits belong to the account"). */
function usedUp(limit: number, reset: number, account: string): Response {
  const headers = { "X-RateLimit-Limit": String(limit), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": String(reset) };
  const body = {
    error: { message: "Rate limit exceeded: free-models-per-day (reserved by other instances of this proxy)", code: 429, metadata: { headers, provider_name: null } },
    ...(account.startsWith("key:") ? {} : { user_id: account }),
  };
  return new Response(JSON.stringify(body), { status: 429, headers: { "content-type": "application/json", ...headers } });
}
