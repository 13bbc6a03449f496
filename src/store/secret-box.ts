/**
 * Secrets at rest: with `KEYS_ENCRYPTION_KEY` set (32 bytes, base64), pool keys are
 * stored AES-256-GCM encrypted, in Redis and in the keys file, as a self-describing string:
 *
 *   enc:v1:<iv, base64url>:<ciphertext and tag, base64url>
 *
 * A value without the `enc:v1:` prefix is a plain secret (files written before encryption was
 * turned on keep working). Every failure is a one-line error value naming KEYS_ENCRYPTION_KEY —
 * never a throw past this module, never the key or the secret in the message.
 *
 * `context` (e.g. the key id) is bound as GCM additional data: a ciphertext copied onto another
 * key's entry does not decrypt.
 */

export const ENCRYPTED_PREFIX = "enc:v1:";
const VARIABLE = "KEYS_ENCRYPTION_KEY";

export type BoxResult<T> = { ok: true; value: T } | { ok: false; message: string };

export interface SecretBox {
  /** A key is configured: secrets are to be stored sealed. Without one they are stored as given. */
  readonly sealing: boolean;
  /** The secret as `enc:v1:…`. */
  seal(secret: string, context?: string): Promise<BoxResult<string>>;
  /** The secret from `enc:v1:…`; a plain (unencrypted) value is returned as it is. */
  open(stored: string, context?: string): Promise<BoxResult<string>>;
}

export const isSealed = (stored: string): boolean => stored.startsWith(ENCRYPTED_PREFIX);

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * A box for `rawKey` (KEYS_ENCRYPTION_KEY's value), or for no key at all: then sealing is refused
 * and opening works for plain values only, with an error naming the variable for sealed ones.
 */
export async function createSecretBox(rawKey: string | undefined): Promise<BoxResult<SecretBox>> {
  if (rawKey === undefined || rawKey.trim() === "") return { ok: true, value: keylessBox };
  const bytes = decodeKey(rawKey.trim());
  if (bytes === undefined) {
    return { ok: false, message: `invalid ${VARIABLE}=(hidden): expected 32 bytes in base64 (make one with: openssl rand -base64 32)` };
  }
  let key: CryptoKey;
  try {
    key = await crypto.subtle.importKey("raw", bytes, { name: "AES-GCM" }, false, ["encrypt", "decrypt"]);
  } catch {
    return { ok: false, message: `invalid ${VARIABLE}=(hidden): not usable as an AES-256 key` };
  }
  return { ok: true, value: keyedBox(key) };
}

const keylessBox: SecretBox = {
  sealing: false,
  seal: async () => ({ ok: false, message: `cannot encrypt a secret: ${VARIABLE} is not set` }),
  open: async (stored) =>
    isSealed(stored) ? { ok: false, message: `a stored secret is encrypted but ${VARIABLE} is not set: set it to the key it was encrypted with` } : { ok: true, value: stored },
};

function keyedBox(key: CryptoKey): SecretBox {
  return {
    sealing: true,
    async seal(secret, context = "") {
      try {
        const iv = crypto.getRandomValues(new Uint8Array(12));
        const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv, additionalData: encoder.encode(context) }, key, encoder.encode(secret));
        return { ok: true, value: `${ENCRYPTED_PREFIX}${toBase64Url(iv)}:${toBase64Url(new Uint8Array(sealed))}` };
      } catch {
        return { ok: false, message: `could not encrypt a secret with ${VARIABLE}` };
      }
    },
    async open(stored, context = "") {
      if (!isSealed(stored)) return { ok: true, value: stored };
      const [ivText = "", sealedText = "", ...rest] = stored.slice(ENCRYPTED_PREFIX.length).split(":");
      const iv = fromBase64Url(ivText);
      const sealed = fromBase64Url(sealedText);
      if (rest.length > 0 || iv === undefined || iv.byteLength !== 12 || sealed === undefined || sealed.byteLength < 16) {
        return { ok: false, message: `a stored secret is not a valid enc:v1 value (damaged?); ${VARIABLE} cannot decrypt it` };
      }
      try {
        const plain = await crypto.subtle.decrypt({ name: "AES-GCM", iv, additionalData: encoder.encode(context) }, key, sealed);
        return { ok: true, value: decoder.decode(plain) };
      } catch {
        return { ok: false, message: `${VARIABLE} does not decrypt a stored secret: is it the key the secrets were encrypted with?` };
      }
    },
  };
}

/** 32 bytes from standard or URL-safe base64 (padding optional); undefined for anything else. */
function decodeKey(text: string): Uint8Array<ArrayBuffer> | undefined {
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(text)) return undefined;
  const bytes = fromBase64Url(text.replace(/=+$/, "").replaceAll("+", "-").replaceAll("/", "_"));
  return bytes?.byteLength === 32 ? bytes : undefined;
}

function toBase64Url(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString("base64url");
}

function fromBase64Url(text: string): Uint8Array<ArrayBuffer> | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) return undefined;
  const buffer = Buffer.from(text, "base64url");
  return new Uint8Array(buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength) as ArrayBuffer);
}
