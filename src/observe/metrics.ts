/**
 * Prometheus metrics (text format 0.0.4), kept as plain counters updated from request records:
 * an increment per request, no formatting until someone scrapes `GET /metrics`.
 */
import type { RequestRecord } from "../domain/request-record.ts";

const knownRoutes = new Set(["/chat/completions", "/completions", "/responses", "/messages", "/embeddings", "/embeddings/models", "/models", "/generation", "/key", "/credits"]);
/** Unknown paths share one label value, so a client cannot grow the label set without bound. */
const routeLabel = (path: string) => (knownRoutes.has(path) ? path : "other");

const latencyBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600];
const addedBuckets = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1];

class Histogram {
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly buckets: number[]) {
    this.counts = buckets.map(() => 0);
  }
  observe(value: number): void {
    this.sum += value;
    this.count++;
    for (let index = 0; index < this.buckets.length; index++) {
      if (value <= (this.buckets[index] as number)) {
        this.counts[index] = (this.counts[index] as number) + 1;
        return;
      }
    }
  }
}

/**
 * A counter keyed by its label values, as a tree of maps (one level per label): a request adds to
 * it without building a key string, and label text is built (and escaped) only when scraped.
 */
type CounterNode = Map<string | number, CounterNode | number>;

function child(node: CounterNode, value: string | number): CounterNode {
  let next = node.get(value) as CounterNode | undefined;
  if (!next) node.set(value, (next = new Map()));
  return next;
}

class LabelledCounter {
  readonly root: CounterNode = new Map();
  constructor(readonly labelNames: readonly string[]) {}
  /** Adds `by` to the counter of these label values (as many as the counter has labels). */
  add(by: number, first: string | number, second?: string | number, third?: string | number, fourth?: string | number): void {
    const values = this.labelNames.length;
    let node = this.root;
    if (values > 1) node = child(node, first);
    if (values > 2) node = child(node, second as string | number);
    if (values > 3) node = child(node, third as string | number);
    const leaf = (values === 1 ? first : values === 2 ? second : values === 3 ? third : fourth) as string | number;
    node.set(leaf, ((node.get(leaf) as number | undefined) ?? 0) + by);
  }
  lines(name: string): string[] {
    const out: string[] = [];
    const walk = (node: CounterNode, depth: number, prefix: string) => {
      for (const [value, child] of node) {
        // An empty value is an absent label to Prometheus: left out (requests without a client).
        const label = value === "" ? "" : `${this.labelNames[depth]}="${escape(String(value))}"`;
        const text = prefix === "" || label === "" ? `${prefix}${label}` : `${prefix},${label}`;
        if (typeof child === "number") out.push(`${name}{${text}} ${child}`);
        else walk(child, depth + 1, text);
      }
    };
    walk(this.root, 0, "");
    return out;
  }
}

const escape = (value: string) => value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');

export interface Metrics {
  record(request: RequestRecord): void;
  /** A client key's request refused before it went upstream (client keys: model, limit, expiry). */
  clientRefused(client: string, code: string): void;
  render(): string;
}

export interface MetricsOptions {
  /**
   * How many keys are in each state now, for the `openrouter_proxy_keys` gauge. A function, not
   * the pool: observe/ reads the keys' status without importing src/keys (no folder cycle).
   */
  keysByState: () => Readonly<Record<string, number>>;
  /** With REDIS_URL: "connected", or "degraded" while Redis is unreachable (serving from memory). */
  sharedState?: () => "connected" | "degraded";
}

export function createMetrics({ keysByState, sharedState }: MetricsOptions): Metrics {
  // `client`: the client key's name (client keys), empty and so left out otherwise.
  const requests = new LabelledCounter(["route", "status", "client"]);
  const attempts = new LabelledCounter(["outcome"]);
  const tokens = new LabelledCounter(["model", "key_id", "type", "client"]);
  const cost = new LabelledCounter(["model", "key_id", "client"]);
  const refusals = new LabelledCounter(["client", "code"]);
  let retries = 0;
  const ttfb = new Histogram(latencyBuckets);
  const duration = new Histogram(latencyBuckets);
  const added = new Histogram(addedBuckets);

  return {
    clientRefused(client, code) {
      refusals.add(1, client, code);
    },
    record(request) {
      const client = request.client ?? "";
      requests.add(1, routeLabel(request.path), request.status, client);
      for (const attempt of request.attempts) attempts.add(1, attempt.outcome);
      retries += Math.max(0, request.attempts.length - 1);
      if (request.usage && request.keyId) {
        const model = request.model ?? "(none)";
        tokens.add(request.usage.promptTokens, model, request.keyId, "prompt", client);
        tokens.add(request.usage.completionTokens, model, request.keyId, "completion", client);
        if (request.usage.cost !== undefined) cost.add(request.usage.cost, model, request.keyId, client);
      }
      duration.observe(request.durationMs / 1000);
      if (request.ttfbMs !== undefined) {
        ttfb.observe(request.ttfbMs / 1000);
        const upstreamMs = request.attempts.reduce((sum, attempt) => sum + attempt.ms, 0);
        added.observe(Math.max(0, request.ttfbMs - upstreamMs) / 1000);
      }
    },

    render() {
      const lines: string[] = [];
      const counter = (name: string, help: string, counter: LabelledCounter) => {
        lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} counter`);
        lines.push(...counter.lines(name));
      };
      const histogram = (name: string, help: string, histogram: Histogram) => {
        lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} histogram`);
        let cumulative = 0;
        histogram.buckets.forEach((bound, index) => {
          cumulative += histogram.counts[index] as number;
          lines.push(`${name}_bucket{le="${bound}"} ${cumulative}`);
        });
        lines.push(`${name}_bucket{le="+Inf"} ${histogram.count}`, `${name}_sum ${histogram.sum}`, `${name}_count ${histogram.count}`);
      };
      counter("openrouter_proxy_requests_total", "Requests answered, by API route, status and client (client keys).", requests);
      counter("openrouter_proxy_upstream_attempts_total", "Upstream attempts, by outcome.", attempts);
      lines.push("# HELP openrouter_proxy_retries_total Upstream attempts after the first, over all requests.", "# TYPE openrouter_proxy_retries_total counter", `openrouter_proxy_retries_total ${retries}`);
      lines.push("# HELP openrouter_proxy_keys Keys by state.", "# TYPE openrouter_proxy_keys gauge");
      for (const [state, value] of Object.entries(keysByState())) lines.push(`openrouter_proxy_keys{state="${state}"} ${value}`);
      if (sharedState) {
        const state = sharedState();
        lines.push("# HELP openrouter_proxy_shared_state The shared state in Redis: 1 for the state it is in (degraded: unreachable, serving from memory).", "# TYPE openrouter_proxy_shared_state gauge");
        for (const each of ["connected", "degraded"]) lines.push(`openrouter_proxy_shared_state{state="${each}"} ${each === state ? 1 : 0}`);
      }
      counter("openrouter_proxy_tokens_total", "Tokens the upstream reported, by model, key, type (prompt, completion) and client.", tokens);
      counter("openrouter_proxy_cost_usd_total", "Cost in USD the upstream reported, by model, key and client.", cost);
      counter("openrouter_proxy_client_refusals_total", "Client keys' requests refused before going upstream, by client and code (model_not_allowed, client_rate_limited, client_budget_exceeded, invalid_api_key when expired).", refusals);
      histogram("openrouter_proxy_time_to_first_byte_seconds", "From receiving a request to sending the response headers.", ttfb);
      histogram("openrouter_proxy_request_duration_seconds", "From receiving a request to the end of its answer.", duration);
      histogram("openrouter_proxy_added_seconds", "The proxy's own time before the first byte: time to first byte less the upstream attempts' time.", added);
      return `${lines.join("\n")}\n`;
    },
  };
}
