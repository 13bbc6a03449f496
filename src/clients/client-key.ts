/**
 * Client keys (`sk-orp-…`): made here, shown once, and from then on known only by their SHA-256.
 * The proxy compares a presented key by hashing it first and looking the hash up, so the lookup
 * never compares secret bytes, and the keys file holds nothing a reader could use as a key.
 */
import { createHash, randomBytes } from "node:crypto";

export const CLIENT_KEY_PREFIX = "sk-orp-";

/** 32 random bytes, base64url: 256 bits, no characters that need quoting in a shell or a header. */
export function newClientKey(): string {
  return `${CLIENT_KEY_PREFIX}${randomBytes(32).toString("base64url")}`;
}

/** Hex SHA-256 of the key as presented: what the keys file stores and what the lookup uses. */
export function hashClientKey(key: string): string {
  return createHash("sha256").update(key).digest("hex");
}

/** `sk-orp-…Ab3x`: enough for a person to tell keys apart, nothing to use. Stored with the hash. */
export function clientKeyHint(key: string): string {
  return `${CLIENT_KEY_PREFIX}…${key.slice(-4)}`;
}
