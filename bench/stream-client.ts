/**
 * Opens many concurrent SSE chat-completion streams and timestamps every chunk's arrival.
 *
 *   bun run bench/stream-client.ts '<StreamClientConfig as JSON>'
 *
 * Prints JSON lines on stdout: in "hold" mode first `{"event":"open",...}` once every stream has
 * its first chunk (or holdOpenTimeoutMs passed), then always one `{"event":"result",...}`.
 *
 * It speaks HTTP/1.1 over raw `Bun.connect` sockets instead of `fetch`: on a 2-core machine
 * fetch's per-chunk cost (~3x more CPU) would delay the arrival timestamps it is measuring, and
 * fetch caps concurrent requests at 256 unless BUN_CONFIG_MAX_HTTP_REQUESTS is raised.
 *
 * Per-chunk transit = arrival - x_sent_ms (the mock's send timestamp). The two clocks belong to
 * different processes, so the offset between them is measured first against the mock's /__clock
 * (the sample with the smallest round trip wins; error <= rtt/2).
 */
import { summarize, type Percentiles } from "./lib/stats.ts";

export interface StreamClientConfig {
  /** full URL of the chat completions endpoint (http, loopback) */
  url: string;
  auth: string;
  streams: number;
  chunks: number;
  delayMs: number;
  clockUrl: string;
  mode: "complete" | "hold";
  /** hold mode: longest wait for every stream to have its first chunk */
  holdOpenTimeoutMs: number;
  /** hold mode: how long to keep them open after the "open" event, then close them */
  holdMs: number;
  /** stream i starts at i/streams * staggerMs, so the mock's chunk timers are not all in phase */
  staggerMs: number;
  /** cap on the whole run */
  timeoutMs: number;
}

export interface StreamOpenEvent {
  event: "open";
  /** streams that got their first chunk */
  opened: number;
  /** of those, still open at this moment */
  openNow: number;
  streams: number;
  waitedMs: number;
}

export interface StreamResult {
  event: "result";
  streams: number;
  completed: number;
  aborted: number;
  failed: number;
  errors: string[];
  expectedChunksPerStream: number;
  chunksReceived: number;
  ttfcMs: Percentiles;
  /**
   * arrival - sent, for chunks that arrived once every stream was open (steady state; the
   * connection storm before that is what ttfc measures)
   */
  transitMs: Percentiles;
  /** gaps between consecutive content chunks of a stream in steady state (the mock sends them delayMs apart) */
  gapMs: Percentiles;
  clockRttMs: number;
  wallMs: number;
}

const clientNow = (): number => performance.timeOrigin + performance.now();

/** mockClock ≈ clientClock + offset */
async function clockOffset(clockUrl: string): Promise<{ offset: number; rtt: number }> {
  let best = { offset: 0, rtt: Number.POSITIVE_INFINITY };
  for (let i = 0; i < 40; i++) {
    const t0 = clientNow();
    const res = await fetch(clockUrl, { signal: AbortSignal.timeout(2000) });
    const mock = Number(await res.text());
    const t1 = clientNow();
    if (t1 - t0 < best.rtt) best = { offset: mock - (t0 + t1) / 2, rtt: t1 - t0 };
  }
  return best;
}

const SENT_KEY = '"x_sent_ms":';

type Outcome = "completed" | "aborted" | "failed";

interface StreamHooks {
  /** first SSE data event with a send timestamp */
  onFirst(arrival: number): void;
  /** every SSE data event with a send timestamp (index 0 = first) */
  onChunk(index: number, arrival: number, sent: number): void;
}

/**
 * One streaming request over a raw socket: minimal HTTP/1.1 response parsing (status line,
 * chunked or content-length or close-delimited body), then SSE events split on blank lines.
 * Bytes are kept as latin1 strings so that string lengths equal byte counts.
 */
function openStream(
  target: URL,
  request: string,
  expected: number,
  hooks: StreamHooks,
  register: (close: () => void) => void,
): Promise<{ outcome: Outcome; error?: string }> {
  return new Promise((resolve) => {
    let settled = false;
    let aborted = false;
    let socketRef: { end(): void } | undefined;
    let state: "head" | "size" | "data" | "crlf" | "identity" | "done" = "head";
    let raw = "";
    let sse = "";
    let status = 0;
    let remaining = 0;
    let contentLength = -1;
    let identityReceived = 0;
    let errorBody = "";
    let seen = 0;
    let gotDone = false;
    let gotUsage = false;

    const settle = (outcome: Outcome, error?: string): void => {
      if (settled) return;
      settled = true;
      socketRef?.end();
      resolve(error === undefined ? { outcome } : { outcome, error });
    };
    const finishBody = (): void => {
      state = "done";
      if (status !== 200) settle("failed", `status ${status}: ${errorBody.slice(0, 200)}`);
      else if (gotDone && gotUsage && seen === expected) settle("completed");
      else settle("failed", `incomplete stream: ${seen}/${expected} chunks, usage=${gotUsage}, done=${gotDone}`);
    };
    const onBody = (text: string, arrival: number): void => {
      if (status !== 200) {
        if (errorBody.length < 1000) errorBody += text;
        return;
      }
      sse += text.includes("\r") ? text.replace(/\r\n/g, "\n") : text;
      let end = sse.indexOf("\n\n");
      for (let guard = 0; end >= 0 && guard < 100_000; guard++) {
        const ev = sse.slice(0, end);
        sse = sse.slice(end + 2);
        end = sse.indexOf("\n\n");
        if (!ev.startsWith("data:")) continue;
        if (ev.includes("[DONE]")) {
          gotDone = true;
          continue;
        }
        const at = ev.lastIndexOf(SENT_KEY);
        if (at < 0) continue;
        const sent = Number.parseFloat(ev.slice(at + SENT_KEY.length));
        if (seen === 0) hooks.onFirst(arrival);
        hooks.onChunk(seen, arrival, sent);
        if (ev.includes('"usage"')) gotUsage = true;
        seen++;
      }
    };
    const onData = (text: string, arrival: number): void => {
      raw += text;
      for (let guard = 0; guard < 100_000; guard++) {
        if (state === "head") {
          const end = raw.indexOf("\r\n\r\n");
          if (end < 0) return;
          const head = raw.slice(0, end).toLowerCase();
          raw = raw.slice(end + 4);
          status = Number(head.slice(9, 12));
          const cl = /\r\ncontent-length:\s*(\d+)/.exec(head);
          contentLength = cl?.[1] !== undefined ? Number(cl[1]) : -1;
          state = /\r\ntransfer-encoding:[^\r]*chunked/.test(head) ? "size" : "identity";
          if (state === "identity" && contentLength === 0) return finishBody();
        } else if (state === "size") {
          const nl = raw.indexOf("\r\n");
          if (nl < 0) return;
          const size = Number.parseInt(raw.slice(0, nl), 16);
          raw = raw.slice(nl + 2);
          if (!Number.isFinite(size)) return settle("failed", "bad chunk size in response");
          if (size === 0) return finishBody();
          remaining = size;
          state = "data";
        } else if (state === "data") {
          if (raw.length === 0) return;
          const take = Math.min(remaining, raw.length);
          onBody(raw.slice(0, take), arrival);
          raw = raw.slice(take);
          remaining -= take;
          if (remaining === 0) state = "crlf";
        } else if (state === "crlf") {
          if (raw.length < 2) return;
          raw = raw.slice(2);
          state = "size";
        } else if (state === "identity") {
          identityReceived += raw.length;
          onBody(raw, arrival);
          raw = "";
          if (contentLength >= 0 && identityReceived >= contentLength) finishBody();
          return;
        } else {
          return;
        }
      }
    };

    register(() => {
      aborted = true;
      settle("aborted");
    });
    Bun.connect({
      hostname: target.hostname,
      port: Number(target.port),
      socket: {
        open(socket) {
          socketRef = socket;
          if (settled) socket.end();
          else socket.write(request);
        },
        data(_socket, data) {
          onData(data.toString("latin1"), clientNow());
        },
        close() {
          if (state === "identity" && contentLength < 0) finishBody();
          else settle(aborted ? "aborted" : "failed", `connection closed (state ${state}, ${seen}/${expected} chunks)`);
        },
        error(_socket, err) {
          settle(aborted ? "aborted" : "failed", err.message);
        },
        connectError(_socket, err) {
          settle("failed", `connect: ${err.message}`);
        },
      },
    }).catch((err: unknown) => settle("failed", `connect: ${err instanceof Error ? err.message : String(err)}`));
  });
}

export async function runStreams(cfg: StreamClientConfig, onOpen?: (e: StreamOpenEvent) => void): Promise<StreamResult> {
  const target = new URL(cfg.url);
  if (target.protocol !== "http:" || !["127.0.0.1", "localhost", "[::1]"].includes(target.hostname)) {
    throw new Error(`stream-client only talks plain http to loopback, got ${cfg.url}`);
  }
  const { offset, rtt } = await clockOffset(cfg.clockUrl);
  const expected = cfg.chunks + 2; // content chunks + finish chunk + usage chunk
  const transit = new Float64Array(cfg.streams * expected);
  let transitN = 0;
  const gaps = new Float64Array(cfg.streams * expected);
  let gapsN = 0;
  const ttfc: number[] = [];
  const errors: string[] = [];
  const counts: Record<Outcome, number> = { completed: 0, aborted: 0, failed: 0 };
  const closers: (() => void)[] = [];
  let opened = 0;
  let openNow = 0;
  let received = 0;
  let ready = 0; // streams that either opened or gave up
  let allOpen: () => void = () => undefined;
  const allOpenPromise = new Promise<void>((resolve) => {
    allOpen = resolve;
  });
  let steadyFrom = Number.POSITIVE_INFINITY;
  const markReady = (): void => {
    if (++ready === cfg.streams) {
      steadyFrom = clientNow();
      allOpen();
    }
  };

  const body = JSON.stringify({
    model: "openai/gpt-4o-mini",
    stream: true,
    max_tokens: cfg.chunks,
    messages: [{ role: "user", content: "Tell me a short story about a fox." }],
  });
  const request =
    `POST ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\n` +
    `Content-Type: application/json\r\nAccept: text/event-stream\r\nAuthorization: ${cfg.auth}\r\n` +
    `x-mock-chunks: ${cfg.chunks}\r\nx-mock-delay-ms: ${cfg.delayMs}\r\n` +
    `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;

  let stopped = false;
  const one = async (_: unknown, index: number): Promise<void> => {
    if (cfg.staggerMs > 0) await Bun.sleep((index / cfg.streams) * cfg.staggerMs);
    if (stopped) {
      counts.aborted++;
      markReady();
      return;
    }
    const t0 = clientNow();
    let lastArrival = 0;
    let isOpen = false;
    const { outcome, error } = await openStream(
      target,
      request,
      expected,
      {
        onFirst(arrival) {
          ttfc.push(arrival - t0);
          isOpen = true;
          opened++;
          openNow++;
          markReady();
        },
        onChunk(i, arrival, sent) {
          received++;
          if (i > 0 && arrival >= steadyFrom) {
            if (transitN < transit.length) transit[transitN++] = arrival + offset - sent;
            if (i < cfg.chunks && lastArrival >= steadyFrom && gapsN < gaps.length) gaps[gapsN++] = arrival - lastArrival;
          }
          lastArrival = arrival;
        },
      },
      (close) => closers.push(close),
    );
    if (isOpen) openNow--;
    else markReady();
    counts[outcome]++;
    if (error !== undefined && outcome === "failed" && errors.length < 5) errors.push(error);
  };

  const stopAll = (): void => {
    stopped = true;
    for (const close of closers) close();
  };
  const started = performance.now();
  const runTimer = setTimeout(() => {
    errors.unshift(`run hit its ${cfg.timeoutMs} ms cap; open streams were closed`);
    stopAll();
  }, cfg.timeoutMs);
  try {
    const all = Promise.all(Array.from({ length: cfg.streams }, one));
    if (cfg.mode === "hold") {
      await Promise.race([allOpenPromise, all, Bun.sleep(cfg.holdOpenTimeoutMs)]);
      onOpen?.({ event: "open", opened, openNow, streams: cfg.streams, waitedMs: performance.now() - started });
      await Promise.race([all, Bun.sleep(cfg.holdMs)]);
      stopAll();
    }
    await all;
  } finally {
    clearTimeout(runTimer);
  }
  return {
    event: "result",
    streams: cfg.streams,
    completed: counts.completed,
    aborted: counts.aborted,
    failed: counts.failed,
    errors,
    expectedChunksPerStream: expected,
    chunksReceived: received,
    ttfcMs: summarize(ttfc),
    transitMs: summarize(transit.subarray(0, transitN)),
    gapMs: summarize(gaps.subarray(0, gapsN)),
    clockRttMs: rtt,
    wallMs: performance.now() - started,
  };
}

if (import.meta.main) {
  const arg = process.argv[2];
  if (arg === undefined) throw new Error("usage: bun run bench/stream-client.ts '<config json>'");
  const cfg = JSON.parse(arg) as StreamClientConfig;
  const result = await runStreams(cfg, (e) => process.stdout.write(`${JSON.stringify(e)}\n`));
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}
