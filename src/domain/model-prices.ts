/**
 * What a model costs, as OpenRouter's models catalog says (`GET /models`: `pricing.prompt` and
 * `pricing.completion`, strings of USD per token, read as numbers): upstream/model-catalog.ts
 * keeps it, clients/reservations.ts reads it. A leaf, so neither folder imports the other.
 */
export interface ModelPrice {
  /** USD per prompt (input) token. */
  prompt: number;
  /** USD per completion (output) token. */
  completion: number;
}

export interface PriceBook {
  /** The model's price; undefined when the catalog does not price it (or has not loaded). */
  priceOf(model: string): ModelPrice | undefined;
}

export const NO_PRICES: PriceBook = { priceOf: () => undefined };
