/**
 * The proxy's own error bodies, read in the dialect their path promises (README, "Errors made by
 * the proxy"): on `/api/v1/…` OpenRouter's `{"error":{"code":<status>,"message","metadata":{"code","type"}}}`,
 * elsewhere OpenAI's `{"error":{"message","type","code"}}`. Each read first checks the shape is
 * exactly that one, then hands back the same three fields whichever it was.
 */
import { expect } from "bun:test";

export interface ReadError {
  code: string;
  type: string;
  message: string;
}

/** The error in `text`, a body answered with `status` on `path`; fails the test when its shape is not the path's. */
export function proxyErrorIn(text: string, path: string, status: number): ReadError {
  const body = JSON.parse(text) as { error: Record<string, unknown> };
  expect(Object.keys(body)).toEqual(["error"]);
  const error = body.error;
  if (/^\/api\/v1(?:\/|$)/.test(new URL(path, "http://x").pathname)) {
    expect(Object.keys(error).sort()).toEqual(["code", "message", "metadata"]);
    expect(error.code).toBe(status);
    const metadata = error.metadata as Record<string, unknown>;
    expect(Object.keys(metadata).sort()).toEqual(["code", "type"]);
    return { code: String(metadata.code), type: String(metadata.type), message: String(error.message) };
  }
  expect(Object.keys(error).sort()).toEqual(["code", "message", "type"]);
  expect(typeof error.code).toBe("string");
  return { code: String(error.code), type: String(error.type), message: String(error.message) };
}

/** The same for a Response: reads its body. */
export async function proxyErrorOf(response: Response, path: string): Promise<ReadError> {
  return proxyErrorIn(await response.text(), path, response.status);
}
