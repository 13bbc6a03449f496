import { describe, expect, test } from "bun:test";
import { createSecretBox, isSealed, type BoxResult, type SecretBox } from "../src/store/secret-box.ts";

const SECRET = "sk-or-v1-secret-box-test-0123456789abcdef0123456789abcdef";
const KEY = Buffer.alloc(32, 7).toString("base64");
const OTHER_KEY = Buffer.alloc(32, 9).toString("base64");

function value<T>(result: BoxResult<T>): T {
  if (!result.ok) throw new Error(result.message);
  return result.value;
}

const boxOf = async (raw: string | undefined): Promise<SecretBox> => value(await createSecretBox(raw));

describe("KEYS_ENCRYPTION_KEY", () => {
  test("a secret sealed with the key opens with the same key, and the stored form does not contain it", async () => {
    const box = await boxOf(KEY);
    const stored = value(await box.seal(SECRET, "key-1"));
    expect(stored).toMatch(/^enc:v1:[A-Za-z0-9_-]{16}:[A-Za-z0-9_-]+$/);
    expect(stored).not.toContain(SECRET);
    expect(value(await box.open(stored, "key-1"))).toBe(SECRET);
  });

  test("sealing twice gives two different strings (a fresh IV each time)", async () => {
    const box = await boxOf(KEY);
    expect(value(await box.seal(SECRET))).not.toBe(value(await box.seal(SECRET)));
  });

  test("URL-safe base64 and unpadded forms of the key are accepted", async () => {
    const stored = value(await (await boxOf(KEY)).seal(SECRET));
    const urlSafe = Buffer.alloc(32, 7).toString("base64url");
    expect(value(await (await boxOf(urlSafe)).open(stored))).toBe(SECRET);
  });

  test("a plain secret (written before encryption was on) opens as it is, with or without a key", async () => {
    expect(value(await (await boxOf(KEY)).open(SECRET))).toBe(SECRET);
    expect(value(await (await boxOf(undefined)).open(SECRET))).toBe(SECRET);
    expect(isSealed(SECRET)).toBe(false);
  });

  test("a wrong key is a one-line error naming KEYS_ENCRYPTION_KEY, not a throw", async () => {
    const stored = value(await (await boxOf(KEY)).seal(SECRET));
    const result = await (await boxOf(OTHER_KEY)).open(stored);
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.message).toContain("KEYS_ENCRYPTION_KEY");
      expect(result.message).not.toContain("\n");
      expect(result.message).not.toContain(OTHER_KEY);
    }
  });

  test("a missing key for a sealed secret is a one-line error naming KEYS_ENCRYPTION_KEY", async () => {
    const stored = value(await (await boxOf(KEY)).seal(SECRET));
    const result = await (await boxOf(undefined)).open(stored);
    expect(result).toEqual({ ok: false, message: expect.stringContaining("KEYS_ENCRYPTION_KEY is not set") });
    expect((await (await boxOf(undefined)).seal(SECRET)).ok).toBe(false);
  });

  test("a malformed key is refused with the variable named and its value hidden", async () => {
    for (const raw of ["short", Buffer.alloc(16, 1).toString("base64"), Buffer.alloc(33, 1).toString("base64"), "not base64 at all!!", `${KEY}x`]) {
      const result = await createSecretBox(raw);
      expect(result.ok).toBe(false);
      if (!result.ok) {
        expect(result.message).toStartWith("invalid KEYS_ENCRYPTION_KEY=(hidden): expected 32 bytes in base64");
        expect(result.message).not.toContain(raw);
      }
    }
  });

  test("a ciphertext moved onto another key's entry does not open (the key id is bound in)", async () => {
    const box = await boxOf(KEY);
    const stored = value(await box.seal(SECRET, "key-1"));
    expect((await box.open(stored, "key-2")).ok).toBe(false);
  });

  test("a damaged enc:v1 value is an error naming the variable, whatever was cut or changed", async () => {
    const box = await boxOf(KEY);
    const stored = value(await box.seal(SECRET));
    const flipped = stored.slice(0, -2) + (stored.endsWith("A") ? "B" : "A") + stored.slice(-1);
    for (const damaged of ["enc:v1:", "enc:v1:abc", `${stored}:extra`, stored.slice(0, -10), flipped, "enc:v1:!!!!:????"]) {
      const result = await box.open(damaged);
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.message).toContain("KEYS_ENCRYPTION_KEY");
    }
  });
});
