/**
 * Asks the upstream about one key: `GET ${OPENROUTER_BASE_URL}/key`. A 401/403 there means the
 * key is rejected; anything else that is not a 200 (or no answer at all) means we could not tell.
 * See docs/openrouter.md ("Endpoints": GET /key).
 */
import { KeyInfoSchema, type KeyCheck } from "../domain/key-check.ts";
import { displayUrl, redactSecret, urlCredentialsRedactor } from "../domain/redact.ts";
import { boundedText } from "./bounded-read.ts";

const KEY_INFO_LIMIT = 64 * 1024;

export interface KeyCheckOptions {
  baseUrl: string;
  fetch?: typeof fetch;
  timeoutMs?: number;
}

export async function checkKey(secret: string, { baseUrl: url, fetch: fetchUpstream = globalThis.fetch, timeoutMs = 10_000 }: KeyCheckOptions): Promise<KeyCheck> {
  // What this says is printed by the CLI and stored as a key's reason: the key an upstream echoes
  // back and the credentials of OPENROUTER_BASE_URL are masked in it.
  const baseUrl = displayUrl(url);
  let response: Response;
  try {
    response = await fetchUpstream(`${url}/key`, {
      headers: { authorization: `Bearer ${secret}` },
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    const reason = urlCredentialsRedactor(url)(redactSecret(error instanceof Error ? error.message : String(error), secret));
    return { kind: "unknown", reason: `${baseUrl}/key could not be reached: ${reason}` };
  }
  // GET /key answers are small: a longer one is not read whole (one answer must not take gigabytes).
  const text = redactSecret((await boundedText(response, KEY_INFO_LIMIT)) ?? "", secret);
  if (response.status === 401 || response.status === 403) {
    return { kind: "rejected", status: response.status, message: upstreamMessage(text) ?? `the upstream answered ${response.status}` };
  }
  if (!response.ok) {
    return { kind: "unknown", reason: `${baseUrl}/key answered ${response.status}${upstreamMessage(text) ? `: ${upstreamMessage(text)}` : ""}` };
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    return { kind: "unknown", reason: `${baseUrl}/key answered 200 but not with JSON` };
  }
  const parsed = KeyInfoSchema.safeParse(json);
  return parsed.success ? { kind: "valid", info: parsed.data.data } : { kind: "unknown", reason: `${baseUrl}/key answered in an unexpected shape` };
}

function upstreamMessage(text: string): string | undefined {
  try {
    const message = (JSON.parse(text) as { error?: { message?: unknown } }).error?.message;
    return typeof message === "string" ? message : undefined;
  } catch {
    return undefined;
  }
}
