/**
 * The proxy's one error type and its OpenAI-shaped rendering.
 *
 * OpenAI SDKs read `error.message` from `{"error":{"message","type","code"}}` and show it to
 * the user, so every error the proxy itself makes has that shape and a message that says what
 * to do next. Errors that come from the upstream are passed back as they came, not through here.
 */

export type ProxyErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "not_found_error"
  | "rate_limit_error"
  /** OpenAI's type for "no money left": every account is out of credits. */
  | "insufficient_quota"
  | "service_unavailable"
  | "upstream_error"
  | "timeout_error"
  | "internal_error"
  /** 403: the caller may not do this (a client asking for a model outside its `--models`). */
  | "permission_error"
  /** 429 for a spent budget, as OpenAI names it (`client_budget_exceeded`). */
  | "insufficient_quota";

export interface ProxyErrorOptions {
  type: ProxyErrorType;
  /** A stable machine-readable code, e.g. `no_keys_available`. */
  code: string;
  headers?: Record<string, string>;
  cause?: unknown;
}

export class ProxyError extends Error {
  readonly status: number;
  readonly type: ProxyErrorType;
  readonly code: string;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, { type, code, headers = {}, cause }: ProxyErrorOptions) {
    super(message, { cause });
    this.name = "ProxyError";
    this.status = status;
    this.type = type;
    this.code = code;
    this.headers = headers;
  }
}

export interface OpenAIErrorBody {
  error: { message: string; type: string; code: string };
}

export function errorBody(message: string, type: ProxyErrorType, code: string): OpenAIErrorBody {
  return { error: { message, type, code } };
}

/** Renders a ProxyError (or anything thrown) as the OpenAI-shaped JSON response. */
export function renderError(err: unknown, extraHeaders: Record<string, string> = {}): Response {
  const proxyError =
    err instanceof ProxyError
      ? err
      : new ProxyError(500, "internal error in the proxy; see its error log for the details", {
          type: "internal_error",
          code: "internal_error",
          cause: err,
        });
  return Response.json(errorBody(proxyError.message, proxyError.type, proxyError.code), {
    status: proxyError.status,
    headers: { ...proxyError.headers, ...extraHeaders },
  });
}
