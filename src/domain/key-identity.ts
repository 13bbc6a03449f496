/**
 * How a key is named outside the pool: a short id derived from the key (stable across restarts
 * and machines, reveals nothing usable) and a masked form for people to recognise it by.
 */
import { createHash } from "node:crypto";

export function keyIdOf(secret: string): string {
  return `k_${createHash("sha256").update(secret).digest("hex").slice(0, 10)}`;
}

/** `sk-or-v1-4f2…a9c1`: the public prefix, three characters and the last four. */
export function maskKey(secret: string): string {
  if (secret.length < 16) return `…${secret.slice(-2)}`;
  const prefixLength = secret.startsWith("sk-or-v1-") ? 12 : 6;
  return `${secret.slice(0, prefixLength)}…${secret.slice(-4)}`;
}
