/** The secret scrubber and the URL redaction, on their own: every way a key can be cut across chunks. */
import { describe, expect, test } from "bun:test";
import { maskKey } from "../src/domain/key-identity.ts";
import { displayUrl, SecretScrubber, urlCredentialsRedactor } from "../src/domain/redact.ts";
import { testKeys } from "./helpers/test-proxy.ts";

const key = testKeys[0] as string;
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function scrub(pieces: string[]): string {
  const scrubber = new SecretScrubber(key);
  let out = "";
  for (const piece of pieces) out += decoder.decode(scrubber.push(encoder.encode(piece)));
  const rest = scrubber.flush();
  return out + (rest ? decoder.decode(rest) : "");
}

describe("the secret scrubber", () => {
  const text = `data: {"error":{"message":"you sent Bearer ${key} and ${key}s"}}\n\n`;
  const expected = text.replaceAll(key, maskKey(key));

  test("a key cut in two at any byte is masked", () => {
    for (let cut = 0; cut <= text.length; cut++) expect(scrub([text.slice(0, cut), text.slice(cut)])).toBe(expected);
  });

  test("a key cut in three anywhere is masked", () => {
    const start = text.indexOf(key);
    for (let first = start - 2; first < start + key.length; first += 3) {
      for (let second = first + 1; second <= start + key.length + 2; second += 5) {
        expect(scrub([text.slice(0, first), text.slice(first, second), text.slice(second)])).toBe(expected);
      }
    }
  });

  test("a chunk with no part of the key is passed on as the same object", () => {
    const chunk = encoder.encode(`data: {"choices":[{"delta":{"content":"hello"}}]}\n\n`);
    expect(new SecretScrubber(key).push(chunk)).toBe(chunk);
  });

  test("the start of a key that never completes is passed on at the end", () => {
    expect(scrub(["text ending in ", key.slice(0, 20)])).toBe(`text ending in ${key.slice(0, 20)}`);
  });
});

describe("credentials in a URL", () => {
  test("displayUrl shows the credentials as ***", () => {
    expect(displayUrl("http://user:pa%20ss@127.0.0.1:8080/api/v1")).toBe("http://***@127.0.0.1:8080/api/v1");
    expect(displayUrl("http://127.0.0.1:8080/api/v1")).toBe("http://127.0.0.1:8080/api/v1");
    expect(displayUrl("http://user:pass@exa mple.com/v1")).toBe("http://***@exa mple.com/v1"); // not a URL at all
  });

  test("a message quoting the URL or the password loses them", () => {
    const redact = urlCredentialsRedactor("http://user:pa%20ss@127.0.0.1:8080/api/v1");
    expect(redact("fetch http://user:pa%20ss@127.0.0.1:8080/x failed; password pa ss")).toBe("fetch http://***@127.0.0.1:8080/x failed; password ***");
  });
});
