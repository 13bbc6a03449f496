/**
 * What happened to one proxied request: the forward loop (src/upstream) fills it in and announces
 * it once, when the answer (or the stream) has ended; the logs, metrics, usage ledger and status
 * page (src/observe, src/http) read it. A leaf, so readers need not import the request path.
 */

/** Token usage as the upstream reported it, in one shape whatever the API (upstream/usage-shapes.ts). */
export interface Usage {
  promptTokens: number;
  completionTokens: number;
  totalTokens: number;
  /** Of the prompt's tokens, those read from the provider's cache. */
  cachedTokens?: number;
  /** Of the prompt's tokens, those written to the provider's cache (Anthropic, some chat providers). */
  cacheWriteTokens?: number;
  reasoningTokens?: number;
  /** USD, as OpenRouter reports it. */
  cost?: number;
}

export interface AttemptRecord {
  keyId: string;
  /** The upstream's status, or 0 when it could not be reached. */
  status: number;
  outcome: string;
  /** From sending the attempt to its response headers (or failure). */
  ms: number;
}

export interface RequestRecord {
  requestId: string;
  /** Epoch milliseconds when the proxy received the request. */
  startedAt: number;
  method: string;
  path: string;
  model?: string;
  stream: boolean;
  status: number;
  attempts: AttemptRecord[];
  /** The key that served the answer the client got (or carried the attempt the client left during). */
  keyId?: string;
  /**
   * OpenRouter's id for the generation (`X-Generation-Id`, else the answer's `id`): with it a user
   * looks the cost up later (`GET /generation?id=`).
   */
  generationId?: string;
  /** From receiving the request to sending the client the response headers. */
  ttfbMs?: number;
  durationMs: number;
  usage?: Usage;
  error?: string;
  /** The client went away before the answer was complete. */
  aborted: boolean;
  clientAddress?: string;
  /** The client (by name, never its key) when client keys are in use. */
  client?: string;
  userAgent?: string;
  /** Only with LOG_BODIES=true: the bodies as text, each cut at BODY_LOG_LIMIT bytes. */
  requestBody?: string;
  responseBody?: string;
}

