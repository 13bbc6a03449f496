/**
 * What a request of a client with a token limit or a budget holds while it runs (its reservation),
 * and what replaces it when it ends. The reservation is the request's estimated worst case:
 *
 * - tokens: the prompt, estimated as the body's size in bytes / 4 (about 4 bytes of JSON per
 *   token of English text; the JSON around the messages makes it an over-estimate, which is the
 *   safe side), plus the most output it may get: `max_tokens` (`max_completion_tokens`,
 *   `max_output_tokens`), or DEFAULT_MAX_TOKENS when it names none;
 * - cost: those tokens at the model's prices in OpenRouter's catalog (the prompt at the prompt
 *   price, the output at the completion price), the dearest of the models the request names (the
 *   fallbacks may serve it). A model the catalog does not price (or no catalog yet) holds the
 *   client's own recent average cost per request for that model, or $0 when it has none.
 *
 * When the request ends, the real figure replaces it: the answer's `usage`. When no usage was read
 * although the request reached the upstream and was not answered with an error (a stream the
 * client left, an answer without usage), the reservation stands as the charge: OpenRouter may
 * have billed it, and the estimate is the best figure there is. Requests that never reached the
 * upstream, or got an error answer, are charged nothing.
 */
import type { PriceBook } from "../domain/model-prices.ts";
import type { RequestRecord } from "../domain/request-record.ts";
import { NOTHING_HELD, type ClientLimits, type Held } from "./usage-windows.ts";

/** The output a request is assumed to want when its body names no maximum (OpenRouter's own cap varies by model). */
export const DEFAULT_MAX_TOKENS = 4096;
/** Bytes of request body per estimated prompt token. */
export const BYTES_PER_TOKEN = 4;
/** How many of a client's requests to a model its average follows (an exponential moving average). */
const AVERAGE_OVER = 20;
/** Averages kept, for all clients together: the oldest go first. */
const MAX_AVERAGES = 10_000;

/** What the reservation reads of a request (http/request-body.ts read it from the one parse). */
export interface ReservedRequest {
  method: string;
  model?: string | undefined;
  models?: readonly string[] | undefined;
  body?: ArrayBuffer | undefined;
  maxTokens?: number | undefined;
}

/** Whether a client's requests hold anything: only token limits and budgets need a reservation. */
export const reserves = (limits: ClientLimits): boolean => limits.tpm !== undefined || limits.usdPerDay !== undefined || limits.usdPerMonth !== undefined;

export interface Reservations {
  /** What `request` of `client` holds; nothing for a request that names no model (a listing). */
  estimate(client: string, limits: ClientLimits, request: ReservedRequest): Held;
  /** The charge of an ended request: its usage, the reservation standing, or nothing (see above); a budgeted client's average learns it. */
  settlement(client: string, limits: ClientLimits, held: Held, record: RequestRecord): Held;
}

export function createReservations(prices: PriceBook): Reservations {
  // Insertion order is age: a model seen again moves to the end.
  const averages = new Map<string, { cost: number; count: number }>();
  const keyOf = (client: string, model: string) => `${client}\u0000${model}`;

  const costFor = (client: string, model: string, promptTokens: number, maxTokens: number): number => {
    const price = prices.priceOf(model);
    if (price) return promptTokens * price.prompt + maxTokens * price.completion;
    return averages.get(keyOf(client, model))?.cost ?? 0;
  };

  const learn = (client: string, model: string, cost: number): void => {
    const key = keyOf(client, model);
    const known = averages.get(key);
    const count = Math.min((known?.count ?? 0) + 1, AVERAGE_OVER);
    const average = known ? known.cost + (cost - known.cost) / count : cost;
    averages.delete(key);
    averages.set(key, { cost: average, count });
    if (averages.size > MAX_AVERAGES) averages.delete(averages.keys().next().value as string);
  };

  return {
    estimate(client, limits, { model, models, body, maxTokens }) {
      if (model === undefined && (models === undefined || models.length === 0)) return NOTHING_HELD;
      const promptTokens = Math.ceil((body?.byteLength ?? 0) / BYTES_PER_TOKEN);
      const output = maxTokens ?? DEFAULT_MAX_TOKENS;
      let cost = 0;
      if (limits.usdPerDay !== undefined || limits.usdPerMonth !== undefined) {
        for (const each of model === undefined ? (models ?? []) : [model, ...(models ?? [])]) cost = Math.max(cost, costFor(client, each, promptTokens, output));
      }
      return { tokens: limits.tpm === undefined ? 0 : promptTokens + output, cost };
    },
    settlement(client, limits, held, record) {
      if (record.usage) {
        const cost = record.usage.cost ?? 0;
        const budgeted = limits.usdPerDay !== undefined || limits.usdPerMonth !== undefined;
        if (budgeted && record.model !== undefined && record.usage.cost !== undefined) learn(client, record.model, cost);
        return { tokens: record.usage.totalTokens, cost };
      }
      const reached = record.keyId !== undefined;
      const errorAnswer = record.status >= 400 && !record.aborted;
      return reached && !errorAnswer ? held : NOTHING_HELD;
    },
  };
}
