/**
 * The proxy's one error type and its rendering, in the dialect of the URL the client called.
 *
 * SDKs show the user `error.message`, so every error the proxy itself makes carries one that says
 * what to do next. OpenAI's SDKs read `{"error":{"message","type","code"}}`; OpenRouter's reads
 * `{"error":{"code":<status>,"message","metadata"}}` and rejects a string `code`. Errors that come
 * from the upstream are passed back as they came, not through here.
 */

export type ProxyErrorType =
  | "invalid_request_error"
  | "authentication_error"
  | "not_found_error"
  | "rate_limit_error"
  /** OpenAI's type for "no money left": every account is out of credits, or a client's budget is spent (429). */
  | "insufficient_quota"
  | "service_unavailable"
  | "upstream_error"
  | "timeout_error"
  | "internal_error"
  /** 403: the caller may not do this (a client asking for a model outside its `--models`). */
  | "permission_error";

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

/**
 * OpenRouter's own error shape (docs/openrouter.md, "Errors"): `code` is the HTTP status as
 * a number. `@openrouter/sdk` validates it as an integer and throws `ResponseValidationError` on a
 * string, so the proxy's code and type ride in `metadata`, where that SDK accepts any record.
 */
export interface OpenRouterErrorBody {
  error: { code: number; message: string; metadata: { code: string; type: string } };
}

/** Which SDK's error shape a client reading this path expects. */
export type ErrorDialect = "openai" | "openrouter";

/**
 * `/api/v1/…` is OpenRouter's URL shape, offered to clients of OpenRouter's SDK; everything else
 * (`/v1/…`, the admin API, unknown routes) speaks OpenAI's, which is what clients there read.
 */
function errorDialect(path: string): ErrorDialect {
  return path.startsWith("/api/v1/") || path === "/api/v1" ? "openrouter" : "openai";
}

function errorBody(error: ProxyError, dialect: ErrorDialect): OpenAIErrorBody | OpenRouterErrorBody {
  if (dialect === "openrouter") return { error: { code: error.status, message: error.message, metadata: { code: error.code, type: error.type } } };
  return { error: { message: error.message, type: error.type, code: error.code } };
}

/**
 * Renders a ProxyError (or anything thrown, as a 500) as JSON in the dialect of the path the
 * client asked for: the one place the proxy's own errors get their shape.
 */
export function renderError(err: unknown, path: string, extraHeaders: Record<string, string> = {}): Response {
  const proxyError =
    err instanceof ProxyError
      ? err
      : new ProxyError(500, "internal error in the proxy; see its error log for the details", {
          type: "internal_error",
          code: "internal_error",
          cause: err,
        });
  return Response.json(errorBody(proxyError, errorDialect(path)), {
    status: proxyError.status,
    headers: { ...proxyError.headers, ...extraHeaders },
  });
}
