/**
 * One raw HTTP request on its own connection, for request lines and headers `fetch` will not send
 * as written (no Host, an invalid Host, dot segments, `Connection: close, X-Evil`). The request must
 * end its connection (HTTP/1.0, or `Connection: close`): the answer is read once the server closes.
 */
import { connectRaw, parseRawResponse, type RawResponse } from "./raw-http.ts";

export async function rawRequest(port: number, text: string, limitMs = 5000): Promise<RawResponse> {
  const connection = await connectRaw(port);
  try {
    await connection.write(text);
    await Promise.race([connection.closed, Bun.sleep(limitMs)]);
    // Interim answers (`100 Continue` to an `Expect`) come first: the final one is wanted.
    const response = parseRawResponse(connection.received().replace(/^(HTTP\/1\.[01] 1\d\d[^\r]*\r\n(?:[^\r]+\r\n)*\r\n)+/, ""));
    if (!response) throw new Error(`no complete answer to ${JSON.stringify(text.split("\r\n")[0])}: ${JSON.stringify(connection.received().slice(0, 300))}`);
    return response;
  } finally {
    connection.end();
  }
}
