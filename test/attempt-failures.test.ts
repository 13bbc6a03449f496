/**
 * The attempt state machine's one failure path (src/upstream/request-run.ts `fail`): whatever
 * way an answer fails before the commit point, the attempt is classified once, reported to the
 * pool once (as the upstream's fault), noted once in the request record, its key is avoided by
 * the next attempt, and the retry backs off — the same for every kind of failure.
 */
import { afterEach, describe, expect, test } from "bun:test";
import type { Outcome } from "../src/domain/outcome.ts";
import type { RequestRecord } from "../src/domain/request-record.ts";
import { sseChunk } from "./helpers/fake-openrouter.ts";
import { startRawUpstream, type Behaviour, type RawUpstream } from "./helpers/raw-upstream.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

let proxy: TestProxy | undefined;
let rawServer: RawUpstream | undefined;

afterEach(async () => {
  await proxy?.close();
  rawServer?.stop();
  proxy = undefined;
  rawServer = undefined;
});

const chatBody = JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] });
const streamBody = JSON.stringify({ model: "openai/gpt-4o-mini", stream: true, messages: [{ role: "user", content: "hi" }] });

const okJson = JSON.stringify({ id: "gen-raw", object: "chat.completion", choices: [{ index: 0, message: { role: "assistant", content: "recovered" }, finish_reason: "stop" }] });
const answerOk: Behaviour = (socket) => {
  socket.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: ${okJson.length}\r\n\r\n${okJson}`);
};
const resetAtOnce: Behaviour = (socket) => socket.terminate();
const jsonBreaksOff: Behaviour = (socket) => {
  socket.write('HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"id":"gen-raw","choi');
  setTimeout(() => socket.terminate(), 20);
};
const streamBreaksOffBeforeContent: Behaviour = (socket) => {
  const comment = ": OPENROUTER PROCESSING\n\n";
  socket.write(`HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n${comment.length.toString(16)}\r\n${comment}\r\n`);
  setTimeout(() => socket.terminate(), 20);
};
const errorBodyBreaksOff: Behaviour = (socket) => {
  socket.write('HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"error":{"message":"provider fail');
  setTimeout(() => socket.terminate(), 20);
};
const notJson = "<html>502 Bad Gateway</html>";
const claimsJsonButIsNot: Behaviour = (socket) => {
  // Connection: close, so the retry comes on a connection of its own (one behaviour per connection).
  socket.write(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: ${notJson.length}\r\n\r\n${notJson}`);
  socket.end();
};

interface Watched {
  proxy: TestProxy;
  records: RequestRecord[];
  reports: Array<{ keyId: string; kind: Outcome["kind"] }>;
  pauses: number[];
}

/** A proxy whose pool reports, finished records and pauses between attempts are written down. */
async function watchedProxy(upstream: string): Promise<Watched> {
  const pauses: number[] = [];
  const started = await startTestProxy({
    upstream,
    config: { RETRY_BACKOFF_MS: 40 },
    overrides: {
      sleep: async (ms) => {
        pauses.push(ms);
      },
    },
  });
  proxy = started;
  const records: RequestRecord[] = [];
  started.events.on("request.done", (record) => void records.push(structuredClone(record)));
  const reports: Watched["reports"] = [];
  const report = started.pool.report.bind(started.pool);
  started.pool.report = (keyId, outcome, context) => {
    reports.push({ keyId, kind: outcome.kind });
    report(keyId, outcome, context);
  };
  return { proxy: started, records, reports, pauses };
}

describe("an answer that breaks off before the commit point counts as an upstream fault of that attempt, whatever its kind", () => {
  test.each([
    ["fetch throws (the connection is reset before any answer)", resetAtOnce, chatBody, 0, "upstream-unreachable"],
    ["a JSON 200 whose body breaks off", jsonBreaksOff, chatBody, 200, "upstream-error"],
    ["a stream that breaks off before any content", streamBreaksOffBeforeContent, streamBody, 200, "upstream-error"],
    ["an error answer whose body breaks off", errorBodyBreaksOff, chatBody, 500, "upstream-error"],
    ["a 200 claiming JSON that is not", claimsJsonButIsNot, chatBody, 200, "upstream-error"],
  ] as const)("%s: reported once as an upstream error, noted once, the key avoided, the retry backed off", async (_kind, failure, body, status, noted) => {
    rawServer = startRawUpstream([failure, answerOk]);
    const { proxy: p, records, reports, pauses } = await watchedProxy(rawServer.url);
    const response = await fetch(`${p.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body });
    expect(response.status).toBe(200);
    expect(await response.text()).toBe(okJson);
    expect(response.headers.get("x-proxy-attempts")).toBe("2");

    expect(records).toHaveLength(1);
    const attempts = records[0]?.attempts ?? [];
    expect(attempts.map(({ status: s, outcome }) => ({ status: s, outcome }))).toEqual([
      { status, outcome: noted },
      { status: 200, outcome: "ok" },
    ]);
    const [failed, served] = attempts;
    // The next attempt went to another key.
    expect(served?.keyId).not.toBe(failed?.keyId);
    expect(response.headers.get("x-proxy-key-id")).toBe(served?.keyId ?? "");
    // Reported once each: the fault as the upstream's, the answer as served.
    expect(reports).toEqual([
      { keyId: failed?.keyId ?? "", kind: "upstream-error" },
      { keyId: served?.keyId ?? "", kind: "ok" },
    ]);
    // One back-off pause, of RETRY_BACKOFF_MS.
    expect(pauses).toEqual([40]);
    // Nobody's key is blamed for the upstream's fault.
    for (const key of p.pool.records()) {
      expect({ failures: key.failures, cooldownUntil: key.cooldownUntil, disabled: key.disabled }).toEqual({ failures: 0, cooldownUntil: 0, disabled: undefined });
    }
    expect(p.pool.records()).toHaveLength(testKeys.length);
  });

  test("after the commit point nothing is retried: a stream that breaks off after content ends the client's stream, one attempt, one report", async () => {
    const resetAfterContent: Behaviour = (socket) => {
      const part = sseChunk("partial ");
      socket.write(`HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n${part.length.toString(16)}\r\n${part}\r\n`);
      setTimeout(() => socket.terminate(), 20);
    };
    rawServer = startRawUpstream([resetAfterContent, answerOk]);
    const { proxy: p, records, reports, pauses } = await watchedProxy(rawServer.url);
    const response = await fetch(`${p.url}/v1/chat/completions`, { method: "POST", headers: { "content-type": "application/json" }, body: streamBody });
    expect(response.status).toBe(200);
    await response.text().catch(() => "");
    for (let waited = 0; records.length === 0 && waited < 100; waited++) await Bun.sleep(10);
    expect(rawServer.connections()).toBe(1);
    expect(records[0]?.attempts.map((attempt) => attempt.outcome)).toEqual(["ok"]);
    expect(records[0]?.error).toContain("broke off");
    expect(reports.map((each) => each.kind)).toEqual(["ok"]);
    expect(pauses).toEqual([]);
  });
});
