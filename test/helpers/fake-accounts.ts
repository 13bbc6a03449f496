/**
 * An OpenRouter stand-in with accounts: a real HTTP server on a random loopback port where every
 * key belongs to one account, and each account enforces its own limits the way OpenRouter does
 * (docs/openrouter.md, "Limits belong to the account", "Errors"):
 * - free (`:free`) models: `freePerMinute` (20) per account per clock minute and `freePerDay`
 *   (50, or 1000 with credits bought) per account per UTC day, answered with OpenRouter's 429
 *   bodies and `X-RateLimit-*` headers (reset in epoch milliseconds), naming `user_id`;
 * - paid models: `credits` (USD) per account, `paidCost` a request; 402 when they run out;
 * - a model out of shared capacity for everyone (`sharedCapacity`), and a provider's own 429 for
 *   a model (`providerLimit`);
 * - `GET /key` with `creator_user_id`, `free_model_daily_requests` and each key's own cap
 *   (`limit`, `limit_remaining`, `limit_reset`), answered from the state of the moment, so it
 *   changes as requests spend and as a test moves credits (`setCredits`);
 * - 402s by cause ("402 and 403 by cause" in docs/openrouter.md): `openrouter_credits` when
 *   the account cannot pay, `openrouter_key_limit` when a key's cap is spent (or the newer 403
 *   "Budget limit exceeded" with `resets_at`), `weight_exceeds_budget` (or the bare message) when
 *   `max_tokens` × `pricePerToken` is more than the account holds, a 402 on a free model when
 *   the balance is negative; `inFlightReply()` and `budgetReply()` script the others;
 * - the privacy 404 for models an account's data policy excludes (`privacyExcludes`).
 * Only served requests count against the free limits. The clock is injected (`now`), so a
 * simulated day runs in seconds. `scriptOnce` answers chosen requests as a test says.
 *
 * It also keeps score of the 429s a proxy should not have caused (see `WasteScore`).
 */

export interface FakeAccountSpec {
  /** The account's id: `creator_user_id` on GET /key, `user_id` in error bodies. */
  id: string;
  keys: string[];
  freePerDay?: number;
  freePerMinute?: number;
  /** USD left for paid models. */
  credits?: number;
  /** Free-model requests already made today when the fake starts (another client's, say). */
  freeUsedToday?: number;
  /**
   * Keys with their own spending cap (USD), reset daily/weekly/monthly or never (null). A spent cap
   * answers 402 "Key limit exceeded" by default; `status: 403` answers OpenRouter's newer 403
   * "Budget limit exceeded" with `resets_at` (`resetsAt`, epoch ms; absent: none sent).
   */
  keyLimits?: Record<string, { limit: number; reset: "daily" | "weekly" | "monthly" | null; used?: number; status?: 402 | 403; resetsAt?: number }>;
  /**
   * How this account answers a request too big for its credits: `labelled` (default) with
   * `reason: weight_exceeds_budget`; `bare` as OpenRouter often does, with the message alone.
   */
  tooBigAnswer?: "labelled" | "bare";
  /** Models this account's privacy settings exclude: 404 "No endpoints found matching your data policy". */
  privacyExcludes?: string[];
}

export interface FakeAccountsOptions {
  accounts: FakeAccountSpec[];
  now?: () => number;
  /** What one paid request costs (USD). */
  paidCost?: number;
  /** What one token of `max_tokens` may cost (USD): a request the account cannot cover gets weight_exceeds_budget. */
  pricePerToken?: number;
  /**
   * The plain baseline: answers stripped of everything a policy could read about accounts and
   * limit kinds (no `user_id`, no "free-models-per-…" words, no `limit_source`, no provider
   * name). Status and `X-RateLimit-*` headers stay, so each 429 reads as a generic per-key one.
   */
  plain?: boolean;
}

export type CallKind =
  | "served"
  | "key-info"
  | "invalid-key"
  | "free-per-min"
  | "free-per-day"
  | "credits"
  | "negative-balance"
  | "key-limit"
  | "too-big"
  | "privacy"
  | "shared-capacity"
  | "provider"
  | "scripted";

export interface UpstreamCall {
  at: number;
  key: string;
  /** The key's account; undefined for a key no account owns. */
  account?: string;
  path: string;
  model?: string;
  stream: boolean;
  status: number;
  kind: CallKind;
  /** For a 429 on an account limit: the proxy had been told about this limit already (see WasteScore). */
  wasted?: boolean;
}

/**
 * How the 429s on account limits (free-models-per-min, free-models-per-day) divide:
 * - `firstLearned`: the first time the proxy hears of that limit being reached;
 * - `wasted`: a 429 the proxy could have avoided with what it had been told: the same limit of
 *   the same account with the same announced reset (a per-minute window, a UTC day) was already
 *   answered to it (on any key: the 429 named the account), or, for the daily limit, the
 *   account's daily limit had been announced before (by GET /key or an earlier 429's
 *   `X-RateLimit-Limit`): all of an account's traffic goes through the proxy, so knowing the
 *   limit is knowing when it is used up.
 */
export interface WasteScore {
  firstLearned: number;
  wasted: number;
}

export interface ScriptedReply {
  /** Which request this answers; the first matching script is used once. */
  match?: (call: { key: string; account?: string; model?: string; stream: boolean; path: string }) => boolean;
  reply: (call: { key: string; account?: string; model?: string; stream: boolean }) => Response | Promise<Response>;
}

export interface FakeAccounts {
  /** Base URL in OpenRouter's shape, e.g. http://127.0.0.1:PORT/api/v1 */
  url: string;
  /** Every request received, in order, with how it was answered. */
  calls: UpstreamCall[];
  /** The requests other than GET /key. */
  chatCalls(): UpstreamCall[];
  score(): WasteScore;
  /** From now until `until`, every request for `model` gets the shared-capacity 429. */
  sharedCapacity(model: string, until: number): void;
  /** From now until `until`, requests for `model` on these accounts (all when omitted) get a provider's 429. */
  providerLimit(model: string, until: number, accounts?: string[]): void;
  scriptOnce(...scripts: ScriptedReply[]): void;
  /** GET /key answers only after `gate` settles (to show that nothing waits for it). */
  holdKeyInfo(gate: Promise<void>): void;
  /** Sets an account's balance (USD); below zero, even free models answer 402. */
  setCredits(account: string, usd: number): void;
  stop(): Promise<void>;
}

const MINUTE = 60_000;
const DAY = 86_400_000;

export function startFakeAccounts({ accounts: specs, now = Date.now, paidCost = 0.01, pricePerToken = 1e-6, plain = false }: FakeAccountsOptions): FakeAccounts {
  interface Account {
    spec: FakeAccountSpec;
    freePerDay: number;
    freePerMinute: number;
    credits: number;
    day: number;
    usedToday: number;
    minute: number;
    usedThisMinute: number;
  }
  const accounts = new Map<string, Account>();
  const accountOfKey = new Map<string, Account>();
  const startDay = Math.floor(now() / DAY);
  for (const spec of specs) {
    const account: Account = {
      spec,
      freePerDay: spec.freePerDay ?? 50,
      freePerMinute: spec.freePerMinute ?? 20,
      credits: spec.credits ?? 10,
      day: startDay,
      usedToday: spec.freeUsedToday ?? 0,
      minute: -1,
      usedThisMinute: 0,
    };
    accounts.set(spec.id, account);
    for (const key of spec.keys) accountOfKey.set(key, account);
  }

  const calls: UpstreamCall[] = [];
  /** USD each key has spent against its own cap. */
  const keyUsed = new Map<string, number>();
  for (const spec of specs) for (const [key, cap] of Object.entries(spec.keyLimits ?? {})) keyUsed.set(key, cap.used ?? 0);
  const scripts: ScriptedReply[] = [];
  const shared = new Map<string, number>();
  const providers: Array<{ model: string; until: number; accounts?: string[] }> = [];
  let keyInfoGate: Promise<void> | undefined;
  /** `account|limit|reset` of every account-limit 429 already answered. */
  const announced = new Set<string>();
  /** Accounts whose daily free-model limit has been told (GET /key, or a per-day 429's header). */
  const dailyLimitTold = new Set<string>();
  const score: WasteScore = { firstLearned: 0, wasted: 0 };

  /** Rolls the account's counters over to the current minute and UTC day. */
  const roll = (account: Account, at: number) => {
    const day = Math.floor(at / DAY);
    if (day !== account.day) {
      account.day = day;
      account.usedToday = 0;
    }
    const minute = Math.floor(at / MINUTE);
    if (minute !== account.minute) {
      account.minute = minute;
      account.usedThisMinute = 0;
    }
  };

  const userId = (account: Account | undefined) => (plain || !account ? {} : { user_id: account.spec.id });

  /** OpenRouter's own 429 on an account limit, body and headers as it sends them. */
  function limitReply(account: Account, kind: "free-per-min" | "free-per-day", at: number): Response {
    const perDay = kind === "free-per-day";
    const limit = perDay ? account.freePerDay : account.freePerMinute;
    const reset = perDay ? (Math.floor(at / DAY) + 1) * DAY : (Math.floor(at / MINUTE) + 1) * MINUTE;
    const headers = { "X-RateLimit-Limit": String(limit), "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": String(reset) };
    const words = perDay
      ? `Rate limit exceeded: free-models-per-day.${account.freePerDay < 1000 ? " Add 10 credits to unlock 1000 free model requests per day" : ""}`
      : "Rate limit exceeded: free-models-per-min.";
    const message = plain ? "Rate limit exceeded" : words;
    return Response.json(
      { error: { message, code: 429, metadata: { headers, provider_name: null } }, ...userId(account) },
      { status: 429, headers },
    );
  }

  function sharedCapacityReply(model: string, until: number, account: Account | undefined): Response {
    const headers = { "X-RateLimit-Limit": "1", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": String(until) };
    const base = model.replace(/:free$/, "");
    const message = plain
      ? "Rate limit exceeded"
      : `Rate limit exceeded: limit_rpm/${base}/7d3c1f0e-5b2a-4c8e-9f61-2a4b8c0d1e3f. High demand for ${model} on OpenRouter - limited to 1 requests per minute. Please retry shortly.`;
    const metadata = plain ? { headers, provider_name: null } : { headers, provider_name: null, limit_source: "openrouter_shared_capacity" };
    return Response.json({ error: { message, code: 429, metadata }, ...userId(account) }, { status: 429, headers });
  }

  function providerReply(model: string, until: number, account: Account | undefined, at: number): Response {
    const seconds = Math.max(1, Math.ceil((until - at) / 1000));
    const metadata = plain
      ? {}
      : { raw: `${model} is temporarily rate-limited upstream. Please retry shortly.`, provider_name: "Chutes" };
    return Response.json(
      { error: { message: plain ? "Rate limit exceeded" : "Provider returned error", code: 429, metadata }, ...userId(account) },
      { status: 429, headers: { "Retry-After": String(seconds) } },
    );
  }

  function creditsReply(account: Account): Response {
    const message = plain ? "Payment required" : "Insufficient credits. This account never purchased credits or has run out. Add more at https://openrouter.ai/settings/credits";
    const metadata = plain ? {} : { metadata: { limit_source: "openrouter_credits" } };
    return Response.json({ error: { message, code: 402, ...metadata }, ...userId(account) }, { status: 402 });
  }

  function keyLimitReply(account: Account, key: string): Response {
    const cap = account.spec.keyLimits?.[key];
    if (cap?.status === 403) {
      const metadata = { limit_source: "openrouter_key_limit", scope: "key", limit_usd: cap.limit, spend_usd: keyUsed.get(key) ?? 0, ...(cap.resetsAt === undefined ? {} : { resets_at: new Date(cap.resetsAt).toISOString() }) };
      return Response.json({ error: { message: "Budget limit exceeded", code: 403, metadata }, ...userId(account) }, { status: 403 });
    }
    const message = "Key limit exceeded. Manage it using https://openrouter.ai/settings/keys";
    return Response.json({ error: { message, code: 402, metadata: { limit_source: "openrouter_key_limit" } }, ...userId(account) }, { status: 402 });
  }

  function tooBigReply(account: Account, maxTokens: number): Response {
    const affordable = Math.floor(account.credits / pricePerToken);
    const message = `This request requires more credits, or fewer max_tokens. You requested up to ${maxTokens} tokens, but can only afford ${affordable}. To increase, visit https://openrouter.ai/settings/credits and add more credits`;
    if (account.spec.tooBigAnswer === "bare") return Response.json({ error: { code: 402, message } }, { status: 402 });
    return Response.json(
      { error: { message, code: 402, metadata: { reason: "weight_exceeds_budget", limit_source: "openrouter_credits" } }, ...userId(account) },
      { status: 402 },
    );
  }

  function privacyReply(): Response {
    return Response.json({ error: { message: "No endpoints found matching your data policy (Free model publication). Configure: https://openrouter.ai/settings/privacy", code: 404 } }, { status: 404 });
  }

  function keyInfoReply(key: string, account: Account): Response {
    dailyLimitTold.add(account.spec.id);
    const remaining = Math.max(0, account.freePerDay - account.usedToday);
    const cap = account.spec.keyLimits?.[key];
    const spent = keyUsed.get(key) ?? 0;
    return Response.json({
      data: {
        label: `sk-or-v1-${key.slice(-3)}...`,
        limit: cap ? cap.limit : null,
        limit_remaining: cap ? Math.max(0, cap.limit - spent) : null,
        limit_reset: cap ? cap.reset : null,
        usage: 0,
        usage_daily: 0,
        usage_weekly: 0,
        usage_monthly: 0,
        is_free_tier: account.freePerDay < 1000,
        creator_user_id: account.spec.id,
        expires_at: null,
        rate_limit: { requests: -1, interval: "10s", note: "This field is deprecated and safe to ignore." },
        free_model_daily_requests: { used: account.usedToday, limit: account.freePerDay, remaining },
      },
    });
  }

  function success(model: string | undefined, stream: boolean, key: string): Response {
    const name = model ?? "openai/gpt-4o-mini";
    const content = `hello from ${key.slice(-4)}`;
    const usage = { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8, cost: classIsFree(model) ? 0 : paidCost };
    if (!stream) {
      return Response.json({
        id: "gen-fake-1",
        object: "chat.completion",
        created: 1_780_000_000,
        model: name,
        choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: "stop" }],
        usage,
      });
    }
    const chunk = (body: object) => `data: ${JSON.stringify({ id: "gen-fake-1", object: "chat.completion.chunk", created: 1_780_000_000, model: name, ...body })}\n\n`;
    const text =
      ": OPENROUTER PROCESSING\n\n" +
      chunk({ choices: [{ index: 0, delta: { role: "assistant", content }, finish_reason: null }] }) +
      chunk({ choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }) +
      chunk({ choices: [], usage }) +
      "data: [DONE]\n\n";
    return new Response(text, { headers: { "content-type": "text/event-stream" } });
  }

  /** Decides one request against the account's limits; the kind says what happened. */
  function answer(key: string, account: Account | undefined, model: string | undefined, stream: boolean, at: number, maxTokens: number | undefined): { response: Response; kind: CallKind } {
    if (!account) return { response: Response.json({ error: { message: "User not found.", code: 401 } }, { status: 401 }), kind: "invalid-key" };
    roll(account, at);
    const sharedUntil = model === undefined ? undefined : shared.get(model);
    if (model !== undefined && sharedUntil !== undefined && sharedUntil > at) {
      return { response: sharedCapacityReply(model, sharedUntil, account), kind: "shared-capacity" };
    }
    const provider = providers.find((each) => each.model === model && each.until > at && (!each.accounts || each.accounts.includes(account.spec.id)));
    if (model !== undefined && provider) return { response: providerReply(model, provider.until, account, at), kind: "provider" };
    if (model !== undefined && account.spec.privacyExcludes?.includes(model)) return { response: privacyReply(), kind: "privacy" };
    if (classIsFree(model)) {
      if (account.credits < 0) return { response: creditsReply(account), kind: "negative-balance" };
      if (account.usedThisMinute >= account.freePerMinute) return { response: limitReply(account, "free-per-min", at), kind: "free-per-min" };
      if (account.usedToday >= account.freePerDay) return { response: limitReply(account, "free-per-day", at), kind: "free-per-day" };
      account.usedThisMinute++;
      account.usedToday++;
    } else {
      if (account.credits < paidCost) return { response: creditsReply(account), kind: "credits" };
      const cap = account.spec.keyLimits?.[key];
      if (cap && (keyUsed.get(key) ?? 0) + paidCost > cap.limit) return { response: keyLimitReply(account, key), kind: "key-limit" };
      if (maxTokens !== undefined && maxTokens * pricePerToken > account.credits) return { response: tooBigReply(account, maxTokens), kind: "too-big" };
      account.credits -= paidCost;
      keyUsed.set(key, (keyUsed.get(key) ?? 0) + paidCost);
    }
    return { response: success(model, stream, key), kind: "served" };
  }

  /** Scores an account-limit 429 (before it is answered, so a later one sees this one). */
  function judgeWaste(call: UpstreamCall): void {
    if ((call.kind !== "free-per-min" && call.kind !== "free-per-day") || call.account === undefined) return;
    const account = accounts.get(call.account) as Account;
    const reset = call.kind === "free-per-day" ? (Math.floor(call.at / DAY) + 1) * DAY : (Math.floor(call.at / MINUTE) + 1) * MINUTE;
    const id = `${call.account}|${call.kind}|${reset}`;
    const known = announced.has(id) || (call.kind === "free-per-day" && dailyLimitTold.has(call.account));
    call.wasted = known;
    if (known) score.wasted++;
    else score.firstLearned++;
    announced.add(id);
    // The 429 carried X-RateLimit-Limit: from now on the proxy knows this account's daily limit.
    if (call.kind === "free-per-day") dailyLimitTold.add(account.spec.id);
  }

  const server = Bun.serve({
    port: 0,
    hostname: "127.0.0.1",
    idleTimeout: 0,
    async fetch(raw) {
      const url = new URL(raw.url);
      const path = url.pathname.replace(/^\/api\/v1/, "");
      const key = (raw.headers.get("authorization") ?? "").replace(/^Bearer /, "");
      const account = accountOfKey.get(key);
      const at = now();
      if (path === "/key" && raw.method === "GET") {
        if (keyInfoGate) await keyInfoGate;
        const response = account ? keyInfoReply(key, (roll(account, now()), account)) : Response.json({ error: { message: "User not found.", code: 401 } }, { status: 401 });
        calls.push({ at, key, ...(account ? { account: account.spec.id } : {}), path, stream: false, status: response.status, kind: account ? "key-info" : "invalid-key" });
        return response;
      }
      const text = await raw.text();
      let model: string | undefined;
      let stream = false;
      let maxTokens: number | undefined;
      try {
        const body = JSON.parse(text) as { model?: unknown; stream?: unknown; max_tokens?: unknown };
        if (typeof body.model === "string") model = body.model;
        stream = body.stream === true;
        if (typeof body.max_tokens === "number") maxTokens = body.max_tokens;
      } catch {
        // not JSON: no model
      }
      const seen = { key, ...(account ? { account: account.spec.id } : {}), ...(model === undefined ? {} : { model }), stream, path };
      const scripted = scripts.findIndex((script) => !script.match || script.match(seen));
      let response: Response;
      let kind: CallKind;
      if (scripted !== -1) {
        const [script] = scripts.splice(scripted, 1);
        response = await (script as ScriptedReply).reply(seen);
        kind = "scripted";
      } else {
        ({ response, kind } = answer(key, account, model, stream, at, maxTokens));
      }
      const call: UpstreamCall = { at, ...seen, status: response.status, kind };
      judgeWaste(call);
      calls.push(call);
      return response;
    },
  });

  return {
    url: `http://127.0.0.1:${server.port}/api/v1`,
    calls,
    chatCalls: () => calls.filter((call) => call.path !== "/key"),
    score: () => ({ ...score }),
    sharedCapacity(model, until) {
      shared.set(model, until);
    },
    providerLimit(model, until, onAccounts) {
      providers.push({ model, until, ...(onAccounts ? { accounts: onAccounts } : {}) });
    },
    scriptOnce(...more) {
      scripts.push(...more);
    },
    holdKeyInfo(gate) {
      keyInfoGate = gate;
    },
    setCredits(id, usd) {
      const account = accounts.get(id);
      if (account) account.credits = usd;
    },
    async stop() {
      await server.stop(true);
    },
  };
}

function classIsFree(model: string | undefined): boolean {
  return model !== undefined && model.endsWith(":free");
}

/**
 * An error event inside a 200 stream, in OpenRouter's shape: a top-level `error` and a choice
 * that finishes with "error" ("Streaming", docs/openrouter.md).
 */
export function errorChunk(code: number, message: string, metadata?: Record<string, unknown>): string {
  return `data: ${JSON.stringify({
    id: "gen-fake-err",
    object: "chat.completion.chunk",
    created: 1_780_000_000,
    model: "meta-llama/llama-3.3-70b-instruct:free",
    error: { code, message, ...(metadata ? { metadata } : {}) },
    choices: [{ index: 0, delta: { content: "" }, finish_reason: "error" }],
  })}\n\n`;
}

/** One content event of a stream. */
export function contentChunk(content: string): string {
  return `data: ${JSON.stringify({ id: "gen-fake-2", object: "chat.completion.chunk", created: 1_780_000_000, model: "meta-llama/llama-3.3-70b-instruct:free", choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`;
}

/** A 200 event stream with exactly this text. */
export function eventStream(text: string): Response {
  return new Response(text, { headers: { "content-type": "text/event-stream" } });
}

/**
 * OpenRouter's in-flight 402: credits are held by requests still running; temporary. `retryAfter`
 * in seconds, or none; `labelled: false` leaves out limit_source and reason (only Retry-After says it).
 */
export function inFlightReply({ retryAfter, labelled = true }: { retryAfter?: number; labelled?: boolean } = {}): Response {
  const message = "This request would exceed your available credits given your current in-flight requests. Retry after in-flight requests settle, or add credits.";
  const metadata = labelled ? { metadata: { reason: "in_flight_budget_exhausted", limit_source: "openrouter_in_flight_budget" } } : {};
  return Response.json({ error: { message, code: 402, ...metadata } }, { status: 402, headers: retryAfter === undefined ? {} : { "Retry-After": String(retryAfter) } });
}

/**
 * OpenRouter's 403 (or 402) on a spending cap: `limitSource` names whose (the key's own, its
 * workspace's, a guardrail's), `resetsAt` (epoch ms) when it resets; no Retry-After.
 */
export function budgetReply({ limitSource, resetsAt, status = 403 }: { limitSource: string; resetsAt?: number; status?: 402 | 403 }): Response {
  const metadata = { limit_source: limitSource, scope: limitSource === "openrouter_workspace_budget" ? "workspace" : "key", limit_usd: 10, spend_usd: 10.01, ...(resetsAt === undefined ? {} : { resets_at: new Date(resetsAt).toISOString() }) };
  return Response.json({ error: { message: "Budget limit exceeded", code: status, metadata } }, { status });
}
