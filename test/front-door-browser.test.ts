/**
 * Browsers cannot drive the proxy unless allowed, shown in Debian's headless Chromium: a page served
 * from another origin (a second Bun server on port 0) tries the requests a page can send without a
 * CORS preflight — `fetch` with `mode: "no-cors"`, a form POST with `enctype="text/plain"` and
 * `navigator.sendBeacon`, each with a chat completion as its body, then a no-cors GET and an image,
 * which carry no Origin at all. The fake upstream receives zero requests.
 *
 * Nothing sleeps: the page posts what it saw to its own server once its fetch and its form have been
 * answered, and a byte-counting relay in front of the proxy tells when all five requests (the
 * beacon too, which the page cannot observe) have reached the proxy and been answered.
 * With the page's origin in CORS_ORIGINS, the same page's real CORS request is served: the zero
 * above is the front door's doing, not a test that could not reach the upstream.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type { Socket } from "bun";
import { chromiumPath, launchChromium, type Browser } from "./helpers/chromium.ts";
import { chatCompletion } from "./helpers/fake-openrouter.ts";
import { useSuite } from "./helpers/suite.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const { fake, cleanups } = useSuite({ secrets: testKeys, reply: () => chatCompletion("served") });

/** What crossed the relay: request lines one way, status codes the other. */
interface Relay {
  port: number;
  requestLines: string[];
  statuses: number[];
  /** Resolves once `count` answers have gone back to the browser. */
  answered(count: number): Promise<void>;
  stop(): void;
}

/** A TCP relay to `targetPort` that only watches: it reads HTTP/1.1 heads as they pass. */
async function startRelay(targetPort: number): Promise<Relay> {
  const requestLines: string[] = [];
  const statuses: number[] = [];
  const waiters: Array<{ count: number; resolve: () => void }> = [];
  const notify = () => {
    for (const waiter of [...waiters]) {
      if (statuses.length >= waiter.count) {
        waiters.splice(waiters.indexOf(waiter), 1);
        waiter.resolve();
      }
    }
  };
  const decoder = new TextDecoder();
  interface Link {
    upstream?: Socket<undefined>;
    pending: Uint8Array[];
  }
  const server = Bun.listen<Link>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      async open(client) {
        client.data = { pending: [] };
        client.data.upstream = await Bun.connect({
          hostname: "127.0.0.1",
          port: targetPort,
          socket: {
            data(_upstream, chunk) {
              for (const match of decoder.decode(chunk).matchAll(/^HTTP\/1\.1 (\d{3})/gm)) statuses.push(Number(match[1]));
              client.write(chunk);
              notify();
            },
            close() {
              client.end();
            },
            error() {
              client.end();
            },
          },
        });
        for (const chunk of client.data.pending.splice(0)) client.data.upstream.write(chunk);
      },
      data(client, chunk) {
        for (const match of decoder.decode(chunk).matchAll(/^(GET|POST|OPTIONS|PUT|DELETE) \S+ HTTP\/1\.1/gm)) requestLines.push(match[0]);
        if (client.data.upstream) client.data.upstream.write(chunk);
        else client.data.pending.push(new Uint8Array(chunk));
      },
      close(client) {
        client.data.upstream?.end();
      },
      error(client) {
        client.data.upstream?.end();
      },
    },
  });
  return {
    port: server.port,
    requestLines,
    statuses,
    answered: (count) => new Promise<void>((resolve) => {
      waiters.push({ count, resolve });
      notify();
    }),
    stop: () => server.stop(true),
  };
}

/** The attacking page: three preflight-free requests at `target`, then a report to its own server. */
function attackPage(target: string): string {
  return `<!doctype html><html><body>
<iframe name="sink"></iframe>
<form id="form" method="POST" enctype="text/plain" target="sink" action="${target}/v1/chat/completions">
  <input name='{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"from a form"}],"x":"' value='"}'>
</form>
<script>
(async () => {
  const body = JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "from a page" }] });
  const seen = {};
  try {
    const answer = await fetch("${target}/v1/chat/completions", { method: "POST", mode: "no-cors", headers: { "content-type": "text/plain; x=json" }, body });
    seen.fetch = answer.type;
  } catch (error) { seen.fetch = "failed: " + error; }
  seen.beacon = navigator.sendBeacon("${target}/api/v1/chat/completions", new Blob([body], { type: "text/plain" }));
  await new Promise((resolve) => {
    document.querySelector("iframe").addEventListener("load", resolve, { once: true });
    document.getElementById("form").submit();
  });
  seen.form = "answered";
  // GETs a page can send without an Origin: a no-cors fetch and an image.
  try {
    seen.getFetch = (await fetch("${target}/v1/models", { mode: "no-cors" })).type;
  } catch (error) { seen.getFetch = "failed: " + error; }
  await new Promise((resolve) => {
    const image = new Image();
    image.onload = image.onerror = resolve;
    image.src = "${target}/api/v1/models?as=image";
  });
  seen.image = "answered";
  await fetch("/done", { method: "POST", body: JSON.stringify(seen) });
})();
</script></body></html>`;
}

/** A page that asks properly (a CORS request with a JSON body, so a preflight first) and reads the answer. */
function corsPage(target: string): string {
  return `<!doctype html><html><body><script>
(async () => {
  let seen;
  try {
    const answer = await fetch("${target}/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json", authorization: "Bearer from-the-page" },
      body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }] }),
    });
    seen = { status: answer.status, content: (await answer.json()).choices[0].message.content, requestId: answer.headers.get("x-request-id") };
  } catch (error) { seen = { failed: String(error) }; }
  await fetch("/done", { method: "POST", body: JSON.stringify(seen) });
})();
</script></body></html>`;
}

/**
 * A server on another origin: serves `html` at / (set once the proxy's address is known) and
 * resolves `report` with what the page posts to /done.
 */
function pageServer(): { url: string; origin: string; html: { text: string }; report: Promise<Record<string, unknown>>; stop: () => void } {
  let deliver: (value: Record<string, unknown>) => void = () => {};
  const report = new Promise<Record<string, unknown>>((resolve) => (deliver = resolve));
  const html = { text: "" };
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(request) {
      if (new URL(request.url).pathname === "/done") {
        deliver((await request.json()) as Record<string, unknown>);
        return new Response("ok");
      }
      return new Response(html.text, { headers: { "content-type": "text/html; charset=utf-8" } });
    },
  });
  const origin = `http://127.0.0.1:${server.port}`;
  return { url: `${origin}/`, origin, html, report, stop: () => server.stop(true) };
}

const why = chromiumPath() ? "" : " [skipped: chromium is not installed; .ci/run installs Debian's chromium]";

describe.skipIf(!chromiumPath())(`a page on another origin cannot drive the proxy, in headless Chromium${why}`, () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await launchChromium();
  });
  afterAll(() => browser?.close());

  async function start(config: Parameters<typeof startTestProxy>[0]["config"]): Promise<{ proxy: TestProxy; relay: Relay }> {
    const proxy = await startTestProxy({ upstream: fake.url, config });
    cleanups.push(() => proxy.close());
    const relay = await startRelay(Number(proxy.server.port));
    cleanups.push(async () => relay.stop());
    return { proxy, relay };
  }

  test("fetch with mode no-cors, a text/plain form POST, navigator.sendBeacon, a no-cors GET and an image from another origin: the upstream receives zero requests", async () => {
    const page = pageServer();
    cleanups.push(async () => page.stop());
    const { relay } = await start({});
    page.html.text = attackPage(`http://127.0.0.1:${relay.port}`);
    await browser.navigate(page.url);
    // The page saw its fetch and its form answered (opaquely, as a page does)...
    expect(await page.report).toEqual({ fetch: "opaque", beacon: true, form: "answered", getFetch: "opaque", image: "answered" });
    // ...and the proxy answered all five, the beacon too, each with 403 origin_not_allowed (the
    // GETs carry no Origin: they are refused by their Sec-Fetch-Site).
    await relay.answered(5);
    expect(relay.requestLines.toSorted()).toEqual([
      "GET /api/v1/models?as=image HTTP/1.1",
      "GET /v1/models HTTP/1.1",
      "POST /api/v1/chat/completions HTTP/1.1",
      "POST /v1/chat/completions HTTP/1.1",
      "POST /v1/chat/completions HTTP/1.1",
    ]);
    expect(relay.statuses).toEqual([403, 403, 403, 403, 403]);
    expect(fake.requests).toHaveLength(0);
  });

  test("with the page's origin in CORS_ORIGINS, its CORS request (preflight, then POST) is served and the page reads the answer", async () => {
    const page = pageServer();
    cleanups.push(async () => page.stop());
    const { relay } = await start({ CORS_ORIGINS: [page.origin] });
    page.html.text = corsPage(`http://127.0.0.1:${relay.port}`);
    await browser.navigate(page.url);
    const seen = await page.report;
    expect(seen).toEqual({ status: 200, content: "served", requestId: expect.any(String) });
    expect(relay.requestLines).toEqual(["OPTIONS /v1/chat/completions HTTP/1.1", "POST /v1/chat/completions HTTP/1.1"]);
    // The preflight was answered by the proxy; only the POST reached the upstream.
    expect(fake.requests.map((request) => `${request.method} ${request.path}`)).toEqual(["POST /chat/completions"]);
  });
});

