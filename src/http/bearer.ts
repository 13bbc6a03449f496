/** Bearer-token checks in constant time, for the admin token and the proxy's client keys. */
import { createHash, timingSafeEqual } from "node:crypto";

const digest = (value: string) => createHash("sha256").update(value).digest();

/** Compares digests, so neither the content nor the length of a secret leaks through timing. */
export function secretEquals(given: string, expected: string): boolean {
  return timingSafeEqual(digest(given), digest(expected));
}

/** The token from `Authorization: Bearer …` (or an Anthropic-style `x-api-key`), if any. */
export function bearerToken(headers: Headers): string | undefined {
  const authorization = headers.get("authorization");
  if (authorization) {
    const match = /^Bearer\s+(.+)$/i.exec(authorization.trim());
    return match?.[1]?.trim();
  }
  return headers.get("x-api-key")?.trim() || undefined;
}

/** True when the request carries one of `accepted`; every candidate is compared, found or not. */
export function carriesOneOf(headers: Headers, accepted: readonly string[]): boolean {
  const token = bearerToken(headers);
  if (token === undefined) return false;
  let found = false;
  for (const candidate of accepted) found = secretEquals(token, candidate) || found;
  return found;
}
