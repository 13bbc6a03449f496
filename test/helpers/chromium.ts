/**
 * A tiny Chrome DevTools Protocol driver for tests that need a real browser (the status page):
 * it starts Debian's headless `chromium` with a fresh profile, opens one page over a single
 * WebSocket (flattened target sessions) and offers navigate / evaluate / waitFor / screenshot.
 * No npm dependency. Protocol: https://chromedevtools.github.io/devtools-protocol/
 */
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** Where chromium is, or undefined when it is not installed (`.ci/run` installs it in CI). */
export function chromiumPath(): string | undefined {
  if (existsSync("/usr/bin/chromium")) return "/usr/bin/chromium";
  return Bun.which("chromium") ?? undefined;
}

export interface Browser {
  /** Loads `url` and resolves when its load event fires (at once for a same-document change). */
  navigate(url: string): Promise<void>;
  /** Runs `expression` in the page (promises awaited) and returns its value as JSON. */
  evaluate<T>(expression: string): Promise<T>;
  /** Resolves with the first truthy value of `expression`, checked every 50 ms until `timeoutMs`. */
  waitFor<T>(expression: string, timeoutMs?: number): Promise<T>;
  setViewport(width: number, height: number): Promise<void>;
  /** Writes a PNG of the viewport to `path`. */
  screenshot(path: string): Promise<void>;
  /** Closes the browser, kills it if it lingers, and removes its profile folder. Idempotent. */
  close(): Promise<void>;
}

export interface LaunchOptions {
  /** How long chromium may take to start and to answer each command. */
  timeoutMs?: number;
}

interface CdpMessage {
  id?: number;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { message: string };
  sessionId?: string;
}

const LOCAL_ONLY = [
  "--headless=new",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-dev-shm-usage",
  "--disable-extensions",
  "--remote-debugging-port=0",
];

export async function launchChromium({ timeoutMs = 10_000 }: LaunchOptions = {}): Promise<Browser> {
  const executable = chromiumPath();
  if (!executable) throw new Error("chromium is not installed: apt-get install chromium (see .ci/run)");
  const profile = await mkdtemp(join(tmpdir(), "orp-chromium-"));
  const child = Bun.spawn([executable, ...LOCAL_ONLY, `--user-data-dir=${profile}`, "about:blank"], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  let stderrTail = "";
  let socket: WebSocket | undefined;
  let closed = false;

  const close = async () => {
    if (closed) return;
    closed = true;
    if (socket?.readyState === WebSocket.OPEN) {
      // Browser.close lets chromium take its helper processes down with it.
      await Promise.race([command("Browser.close").catch(() => {}), Bun.sleep(1000)]);
      socket.close();
    }
    if ((await Promise.race([child.exited, Bun.sleep(2000).then(() => "timeout" as const)])) === "timeout") {
      child.kill("SIGKILL");
      await Promise.race([child.exited, Bun.sleep(2000)]);
    }
    await rm(profile, { recursive: true, force: true });
  };

  const endpoint = await withTimeout(readDevToolsUrl(child.stderr, (text) => (stderrTail = (stderrTail + text).slice(-2000))), timeoutMs, "chromium to print its DevTools address").catch(async (error: unknown) => {
    await close();
    throw new Error(`${error instanceof Error ? error.message : String(error)}; chromium said: ${stderrTail.trim() || "(nothing)"}`);
  });

  let nextId = 1;
  const pending = new Map<number, { resolve: (result: Record<string, unknown>) => void; reject: (error: Error) => void }>();
  const listeners = new Set<(message: CdpMessage) => void>();
  socket = new WebSocket(endpoint);
  const ws = socket;
  ws.addEventListener("message", (event) => {
    const message = JSON.parse(String(event.data)) as CdpMessage;
    if (message.id !== undefined) {
      const waiter = pending.get(message.id);
      pending.delete(message.id);
      if (message.error) waiter?.reject(new Error(`CDP: ${message.error.message}`));
      else waiter?.resolve(message.result ?? {});
    } else {
      for (const listener of listeners) listener(message);
    }
  });
  ws.addEventListener("close", () => {
    for (const waiter of pending.values()) waiter.reject(new Error("the DevTools connection closed"));
    pending.clear();
  });
  try {
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        ws.addEventListener("open", () => resolve(), { once: true });
        ws.addEventListener("error", () => reject(new Error(`could not connect to ${endpoint}`)), { once: true });
      }),
      timeoutMs,
      "the DevTools WebSocket to open",
    );
  } catch (error) {
    await close();
    throw error;
  }

  function command(method: string, params: Record<string, unknown> = {}, sessionId?: string): Promise<Record<string, unknown>> {
    const id = nextId++;
    const sent = new Promise<Record<string, unknown>>((resolve, reject) => pending.set(id, { resolve, reject }));
    ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    return withTimeout(sent, timeoutMs, method).finally(() => pending.delete(id));
  }

  let session: string;
  try {
    const { targetId } = await command("Target.createTarget", { url: "about:blank" });
    ({ sessionId: session } = (await command("Target.attachToTarget", { targetId, flatten: true })) as { sessionId: string });
    await command("Page.enable", {}, session);
  } catch (error) {
    await close();
    throw error;
  }
  const page = (method: string, params: Record<string, unknown> = {}) => command(method, params, session);

  const evaluate = async <T>(expression: string): Promise<T> => {
    const answer = (await page("Runtime.evaluate", { expression, returnByValue: true, awaitPromise: true })) as {
      result: { value?: unknown };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    };
    if (answer.exceptionDetails) throw new Error(`in the page: ${answer.exceptionDetails.exception?.description ?? answer.exceptionDetails.text}`);
    return answer.result.value as T;
  };

  return {
    async navigate(url) {
      let onLoad: (message: CdpMessage) => void = () => {};
      const loaded = new Promise<void>((resolve) => {
        onLoad = (message) => {
          if (message.sessionId === session && message.method === "Page.loadEventFired") resolve();
        };
      });
      listeners.add(onLoad);
      try {
        const result = (await page("Page.navigate", { url })) as { loaderId?: string; errorText?: string };
        if (result.errorText) throw new Error(`could not load ${url}: ${result.errorText}`);
        // No loaderId: a same-document navigation (only the fragment changed), no load event.
        if (result.loaderId) await withTimeout(loaded, timeoutMs, `${url} to load`);
      } finally {
        listeners.delete(onLoad);
      }
    },
    evaluate,
    async waitFor<T>(expression: string, waitMs = 5000): Promise<T> {
      const deadline = Date.now() + waitMs;
      let last: unknown;
      for (;;) {
        try {
          last = await evaluate<unknown>(expression);
          if (last) return last as T;
        } catch (error) {
          last = error;
        }
        if (Date.now() > deadline) throw new Error(`timed out after ${waitMs} ms waiting for ${expression} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
        await Bun.sleep(50);
      }
    },
    async setViewport(width, height) {
      await page("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile: false });
    },
    async screenshot(path) {
      const { data } = (await page("Page.captureScreenshot", { format: "png" })) as { data: string };
      await Bun.write(path, Buffer.from(data, "base64"));
    },
    close,
  };
}

/** Reads chromium's stderr until the "DevTools listening on ws://…" line, then keeps draining it. */
async function readDevToolsUrl(stderr: ReadableStream<Uint8Array>, keep: (text: string) => void): Promise<string> {
  const reader = stderr.getReader();
  const decoder = new TextDecoder();
  let seen = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) throw new Error("chromium exited before printing its DevTools address");
    const text = decoder.decode(value, { stream: true });
    keep(text);
    seen += text;
    const match = /DevTools listening on (ws:\/\/\S+)/.exec(seen);
    if (match?.[1]) {
      void (async () => {
        // Keep reading so chromium never blocks on a full pipe.
        for (;;) {
          const next = await reader.read().catch(() => ({ done: true, value: undefined }));
          if (next.done) return;
          keep(decoder.decode(next.value, { stream: true }));
        }
      })();
      return match[1];
    }
  }
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: Timer | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
