/** Bearer-token checks in constant time, for the admin token and the proxy's client keys. */
import { createHash, timingSafeEqual } from "node:crypto";

const digest = (value: string) => createHash("sha256").update(value).digest();

/** Compares digests, so neither the content nor the length of a secret leaks through timing. */
export function secretEquals(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/**
 * The keys a request presents: `Authorization: Bearer …` (OpenAI's clients) and `x-api-key`
 * (Anthropic's SDK, Claude Code). Some clients send both, one of them a placeholder, so each is
 * a candidate; at most two, the bearer first.
 */
export function presentedKeys(headers: Headers): string[] {
  const keys: string[] = [];
  const authorization = headers.get("authorization");
  if (authorization) {
    const bearer = /^Bearer\s+(.+)$/i.exec(authorization.trim())?.[1]?.trim();
    if (bearer) keys.push(bearer);
  }
  const apiKey = headers.get("x-api-key")?.trim();
  if (apiKey && apiKey !== keys[0]) keys.push(apiKey);
  return keys;
}

/** True when the request presents one of `accepted`; every candidate is compared, found or not. */
export function carriesOneOf(headers: Headers, accepted: readonly string[]): boolean {
  let found = false;
  for (const token of presentedKeys(headers)) {
    for (const candidate of accepted) found = secretEquals(token, candidate) || found;
  }
  return found;
}
