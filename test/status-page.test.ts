/**
 * The status page at /admin/: plain HTTP checks (one self-contained document, off without
 * ADMIN_TOKEN), then the page itself in a real headless Chromium against the real proxy wiring and
 * the fake upstream: the token form, the keys with a live cooldown caused by a 429, the accounts
 * with today's free-model requests and a live rest caused by a free-models-per-day 429, the last
 * requests, and no key in full anywhere in the DOM.
 *
 * Set STATUS_PAGE_SCREENSHOT=/some/file.png to keep the 1280x900 screenshot the last test takes.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { keyIdOf, maskKey } from "../src/domain/key-identity.ts";
import { statusPageHtml } from "../src/http/status-page.ts";
import { chromiumPath, launchChromium, type Browser } from "./helpers/chromium.ts";
import { errorReply, startFakeOpenRouter, type FakeOpenRouter, type FakeRequest } from "./helpers/fake-openrouter.ts";
import { startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const adminToken = "status-page-admin-token-0123";
const keys = [...testKeys, "sk-or-v1-test-dddddddddddddddddddddddddddddddddddddd", "sk-or-v1-test-eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"];
const labels = ["team-a", "personal", "batch jobs", "backup", "ci runner"];
/** Two keys on each of two accounts (learned earlier, as the proxy writes them), one not known yet. */
const accounts = ["user_a", "user_b", "user_a", "user_b", undefined];
const keysFileText = JSON.stringify({ keys: keys.map((key, index) => ({ key, label: labels[index], ...(accounts[index] ? { account: accounts[index] } : {}) })) });
const idOf = new Map(keys.map((key) => [key, keyIdOf(key)]));
const accountOf = new Map(keys.map((key, index) => [key, accounts[index]]));
const freeModel = "meta-llama/llama-3.3-70b-instruct:free";

let fake: FakeOpenRouter;
beforeAll(() => {
  fake = startFakeOpenRouter();
  fake.reply(answer);
});
afterAll(() => fake.stop());

/** OpenRouter's answer once an account has sent its 50 free-model requests of the UTC day. */
function freeModelsPerDay(userId: string): Response {
  const reset = String((Math.floor(Date.now() / 86_400_000) + 1) * 86_400_000);
  const headers = { "X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset };
  return Response.json({ error: { code: 429, message: "Rate limit exceeded: free-models-per-day", metadata: { headers } }, user_id: userId }, { status: 429 });
}

/**
 * A served chat completion whose usage grows with the prompt, for figures that look real; free
 * models cost nothing, and account user_a has used up its free-model requests for today.
 */
function answer(request: FakeRequest): Response {
  const { model, messages } = JSON.parse(request.body) as { model: string; messages: Array<{ content: string }> };
  const free = model.endsWith(":free");
  if (free && accountOf.get(request.key) === "user_a") return freeModelsPerDay("user_a");
  const prompt = 40 + messages.map((message) => message.content).join(" ").length * 3;
  const completion = 120 + (prompt % 97) * 4;
  return Response.json({
    id: "gen-status-1",
    object: "chat.completion",
    created: 1_780_000_000,
    model,
    choices: [{ index: 0, message: { role: "assistant", content: "ok" }, finish_reason: "stop" }],
    usage: { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion, cost: free ? 0 : (prompt + completion) * 0.0000012 },
  });
}

async function chat(proxy: TestProxy, model: string, content: string): Promise<{ status: number; requestId: string }> {
  const response = await fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content }] }),
  });
  await response.text();
  return { status: response.status, requestId: response.headers.get("x-request-id") ?? "" };
}

describe("GET /admin/ over HTTP", () => {
  let proxy: TestProxy;
  beforeAll(async () => {
    proxy = await startTestProxy({ upstream: fake.url, config: { ADMIN_TOKEN: adminToken } });
  });
  afterAll(() => proxy.close());

  test.each(["/admin/", "/admin"])("%s serves one HTML document without the token, with no external scripts, styles or images", async (path) => {
    const response = await fetch(`${proxy.url}${path}`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toContain("text/html");
    const html = await response.text();
    expect(html).toBe(statusPageHtml);
    expect(html).toContain("<script>");
    expect(html).not.toMatch(/(?:src|href|action)\s*=\s*["']?\s*(?:https?:)?\/\//i);
    expect(html).not.toMatch(/@import|url\(/i);
  });

  test("the page's script is valid JavaScript (the TypeScript template literal left it intact)", () => {
    const scripts = [...statusPageHtml.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((match) => match[1] ?? "");
    expect(scripts).toHaveLength(1);
    expect(() => new Function(scripts[0] ?? "")).not.toThrow();
  });

  test("answers 404 when ADMIN_TOKEN is unset: the admin API and its page are off", async () => {
    const off = await startTestProxy({ upstream: fake.url });
    try {
      for (const path of ["/admin/", "/admin"]) {
        const response = await fetch(`${off.url}${path}`);
        expect(response.status).toBe(404);
        expect(await response.text()).toContain("ADMIN_TOKEN");
      }
    } finally {
      await off.close();
    }
  });
});

/** Chromium answers in milliseconds; the bound only stops a hung browser from hanging CI. */
const BROWSER_TEST_MS = 15_000;
const why = chromiumPath() ? "" : " [skipped: chromium is not installed; .ci/run installs Debian's chromium]";

describe.skipIf(!chromiumPath())(`the status page in headless Chromium${why}`, () => {
  let browser: Browser;
  let proxy: TestProxy;
  let cooled: string;
  let disabled: string;
  let servedRequestId: string;

  beforeAll(async () => {
    proxy = await startTestProxy({ upstream: fake.url, keysFileText, config: { ADMIN_TOKEN: adminToken, FAILURE_THRESHOLD: 1 } });
    browser = await launchChromium();
    await browser.setViewport(1280, 900);

    // A 429 cools the first key for 90 s; the request is served by the next one.
    fake.replyOnce(() => errorReply(429, "Rate limit exceeded", { headers: { "X-RateLimit-Reset": String(Date.now() + 90_000) } }));
    const first = await chat(proxy, "openai/gpt-4o-mini", "Summarise the release notes in three bullet points.");
    expect(first.status).toBe(200);
    servedRequestId = first.requestId;
    cooled = idOf.get(fake.requests.at(-2)?.key ?? "") ?? "";
    // A 401 disables the key that carried it (FAILURE_THRESHOLD 1); the next key serves.
    fake.replyOnce(() => errorReply(401, "User not found."));
    expect((await chat(proxy, "anthropic/claude-sonnet-4", "Review this diff for off-by-one errors.")).status).toBe(200);
    disabled = idOf.get(fake.requests.at(-2)?.key ?? "") ?? "";
    fake.replyOnce(() => errorReply(400, "openai/gpt-4o-mnii is not a valid model ID"));
    expect((await chat(proxy, "openai/gpt-4o-mnii", "hello")).status).toBe(400);
    for (const [model, content] of [
      ["google/gemini-2.5-flash", "Translate the onboarding email into German."],
      ["openai/gpt-4o-mini", "Write a haiku about rate limits."],
      ["anthropic/claude-sonnet-4", "Explain this stack trace and suggest a fix for the null check."],
    ] as const) {
      expect((await chat(proxy, model, content)).status).toBe(200);
    }
    // Free-model requests: on a key of user_a the fake answers free-models-per-day, so that account
    // rests for free models until 00:00 UTC and another account serves them. Rotation is sticky
    // and the 401 moved it to the third key (user_a): the first free request meets user_a.
    for (const content of ["Classify these support tickets by urgency.", "Suggest five names for a CLI tool.", "Fix the grammar: their going too the store."]) {
      expect((await chat(proxy, freeModel, content)).status).toBe(200);
    }
    expect(fake.requests.some((request) => request.body.includes(freeModel) && accountOf.get(request.key) === "user_a")).toBe(true);
    expect(cooled).toStartWith("k_");
    expect(disabled).toStartWith("k_");
  }, BROWSER_TEST_MS);

  afterAll(async () => {
    await browser?.close();
    await proxy?.close();
  });

  test("without a token the page shows the token form, and a wrong token keeps asking", async () => {
    await browser.navigate(`${proxy.url}/admin/`);
    await browser.evaluate("localStorage.clear()");
    await browser.navigate(`${proxy.url}/admin/`);
    await browser.waitFor("!document.getElementById('login').hidden");
    expect(await browser.evaluate<boolean>("document.getElementById('dash').hidden")).toBe(true);

    await browser.evaluate(`(() => {
      document.getElementById('token-input').value = 'not-the-admin-token';
      document.getElementById('login-form').requestSubmit();
    })()`);
    const message = await browser.waitFor<string>("(t => t.includes('refused') && t)(document.getElementById('login-msg').textContent)", 4000);
    expect(message).toContain("401");
    expect(await browser.evaluate<boolean>("!document.getElementById('login').hidden && document.getElementById('dash').hidden")).toBe(true);
    expect(await browser.evaluate<number>("localStorage.length")).toBe(0);
  }, BROWSER_TEST_MS);

  test("with #token=… it lists every key masked, a live cooldown from the 429, and the last requests", async () => {
    await browser.navigate(`${proxy.url}/admin/#token=${adminToken}`);
    const ids = [...idOf.values()];
    await browser.waitFor(`(t => ${JSON.stringify(ids)}.every(id => t.includes(id)))(document.querySelector('#keys tbody').textContent)`, 4000);
    expect(await browser.evaluate<string>("location.href")).toBe(`${proxy.url}/admin/`);

    const rowText = (id: string) => `[...document.querySelectorAll('#keys tbody tr')].find(r => r.cells[0].textContent === ${JSON.stringify(id)})?.textContent ?? ''`;
    const countdown = await browser.evaluate<string>(rowText(cooled));
    expect(countdown).toMatch(/cooling down · 1m \d+s/);
    const later = await browser.waitFor<string>(`(t => t !== ${JSON.stringify(countdown)} && t)(${rowText(cooled)})`, 2500);
    expect(later).toMatch(/cooling down · (1m \d+s|\d+s)/);
    expect(await browser.evaluate<string>(rowText(disabled))).toContain("disabled");

    const keysText = await browser.evaluate<string>("document.querySelector('#keys tbody').textContent");
    for (const key of keys) expect(keysText).toContain(maskKey(key));
    for (const label of labels) expect(keysText).toContain(label);
    const html = await browser.evaluate<string>("document.documentElement.outerHTML");
    for (const secret of [...keys, adminToken]) expect(html).not.toContain(secret);

    const requestsText = await browser.evaluate<string>("document.querySelector('#requests tbody').textContent");
    expect(requestsText).toContain(servedRequestId);
    expect(requestsText).toContain("not a valid model ID");
    const modelsText = await browser.evaluate<string>("document.querySelector('#models tbody').textContent");
    for (const model of ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4", "google/gemini-2.5-flash"]) expect(modelsText).toContain(model);
  }, BROWSER_TEST_MS);

  test("lists each account with its keys, today's free requests against the limit, and a live free-model rest", async () => {
    const idsOn = (account: string | undefined) => keys.filter((key) => accountOf.get(key) === account).map((key) => idOf.get(key));
    // Free requests each account served: the fake served every free one that did not reach user_a.
    const servedFree = (account: string | undefined) => fake.requests.filter((r) => r.body.includes(freeModel) && accountOf.get(r.key) === account).length;
    const rowOf = (name: string) => `[...document.querySelectorAll('#accounts tbody tr')].find(r => r.cells[0].textContent === ${JSON.stringify(name)})`;
    const cells = (name: string) => `[...(${rowOf(name)}?.cells ?? [])].map(c => c.textContent)`;
    try {
      await browser.navigate(`${proxy.url}/admin/#token=${adminToken}`);
      await browser.waitFor(`document.querySelectorAll('#accounts tbody tr').length === 3`, 4000);
      expect(await browser.evaluate<string[]>("[...document.querySelectorAll('#accounts tbody tr')].map(r => r.cells[0].textContent)")).toEqual(["user_a", "user_b", "unknown (own)"]);

      const [, aKeys, aFree, aRest] = await browser.evaluate<string[]>(cells("user_a"));
      expect(aKeys).toBe(idsOn("user_a").join(", "));
      expect(aFree).toBe("50 of 50");
      const rest = /^free models · until 00:00 UTC · (?:(\d+)h (\d+)m|(\d+)m (\d+)s|(\d+)s) left — free-per-day: Rate limit exceeded: free-models-per-day$/;
      expect(aRest).toMatch(rest);
      expect(await browser.evaluate<string[]>(cells("user_b"))).toEqual(["user_b", idsOn("user_b").join(", "), `${servedFree("user_b")} (limit unknown)`, "none"]);
      expect(servedFree("user_b") + servedFree(undefined)).toBe(3);
      expect(await browser.evaluate<string[]>(cells("unknown (own)"))).toEqual(["unknown (own)", idsOn(undefined).join(", "), `${servedFree(undefined)} (limit unknown)`, "none"]);

      // The Account column of the keys table.
      const accountColumn = await browser.evaluate<Record<string, string>>(
        "Object.fromEntries([...document.querySelectorAll('#keys tbody tr')].map(r => [r.cells[0].textContent, r.cells[2].textContent]))",
      );
      expect(accountColumn).toEqual(Object.fromEntries(keys.map((key) => [idOf.get(key), accountOf.get(key) ?? "unknown"])));

      // The Status column asks key-status.ts too: a key of user_a that neither cools nor is disabled
      // is limited (free models rest on its account), and says until when.
      const statusColumn = await browser.evaluate<Record<string, string>>(
        "Object.fromEntries([...document.querySelectorAll('#keys tbody tr')].map(r => [r.cells[0].textContent, r.cells[4].textContent]))",
      );
      const limitedOnA = idsOn("user_a").filter((id) => id !== cooled && id !== disabled);
      expect(limitedOnA.length).toBeGreaterThan(0);
      for (const id of limitedOnA) expect(statusColumn[id as string]).toMatch(/^limitedfree models until \S+T00:00:00\.000Z \(free-per-day, daily free limit used up\)$/);

      // The countdown is live: with polling stalled (no fresh data) and the page's clock moved
      // 2 minutes on, the next tick shows about 2 minutes less left.
      await browser.evaluate("window.fetch = () => { window.__polled = true; return new Promise(() => {}); }");
      await browser.waitFor("window.__polled === true", 4000);
      const restText = `${rowOf("user_a")}.cells[3].textContent`;
      // Seconds left as the text says them. Within the last hour before 00:00 UTC the text shows
      // seconds and changes every second by itself: wait for the 2 minutes, not for any change.
      const secondsLeft = `(t => { const m = ${rest.toString()}.exec(t) || []; return Number(m[1] || 0) * 3600 + Number(m[2] || m[3] || 0) * 60 + Number(m[4] || m[5] || 0); })`;
      const left = (text: string) => {
        const [, h, m, m2, s, s2] = rest.exec(text) ?? [];
        return Number(h ?? 0) * 3600 + Number(m ?? m2 ?? 0) * 60 + Number(s ?? s2 ?? 0);
      };
      const before = await browser.evaluate<string>(restText);
      await browser.evaluate("(real => { Date.now = () => real() + 120000; })(Date.now.bind(Date))");
      const later = await browser.waitFor<string>(`(t => ${secondsLeft}(t) <= ${left(before) - 60} && t)(${restText})`, 2500);
      expect(later).toMatch(rest);
      expect(left(before) - left(later)).toBeGreaterThanOrEqual(60);
      expect(left(before) - left(later)).toBeLessThanOrEqual(180);
    } finally {
      // Leave no stubbed fetch or clock behind for the next test (a fragment change keeps the document).
      await browser.navigate("about:blank");
    }
  }, BROWSER_TEST_MS);

  test("a label with markup is shown as text and never runs", async () => {
    const label = `<img src=x onerror="window.__injected=1">`;
    const other = await startTestProxy({ upstream: fake.url, keysFileText: JSON.stringify({ keys: [{ key: keys[0], label }] }), config: { ADMIN_TOKEN: adminToken } });
    try {
      await browser.navigate(`${other.url}/admin/#token=${adminToken}`);
      await browser.waitFor(`document.querySelector('#keys tbody').textContent.includes(${JSON.stringify(label)})`, 4000);
      expect(await browser.evaluate<number>("document.querySelectorAll('#keys img').length")).toBe(0);
      expect(await browser.evaluate<unknown>("window.__injected ?? null")).toBeNull();
    } finally {
      await other.close();
    }
  }, BROWSER_TEST_MS);

  test("when the proxy stops answering, the page says it is unreachable", async () => {
    const other = await startTestProxy({ upstream: fake.url, config: { ADMIN_TOKEN: adminToken } });
    let stopped = false;
    try {
      await browser.navigate(`${other.url}/admin/#token=${adminToken}`);
      await browser.waitFor("document.querySelectorAll('#keys tbody tr').length === 3", 4000);
      // Forced first: after a graceful stop, Bun (1.3.14) keeps answering requests on idle
      // keep-alive connections, and a later stop(true) does not close them.
      await other.server.stop(true);
      await other.close();
      stopped = true;
      const banner = await browser.waitFor<string>("(b => !b.hidden && b.textContent)(document.getElementById('banner'))", 4000);
      expect(banner).toContain("unreachable");
    } finally {
      if (!stopped) await other.close();
    }
  }, BROWSER_TEST_MS);

  test("renders the realistic state at 1280x900 for the README screenshot", async () => {
    await browser.navigate(`${proxy.url}/admin/#token=${adminToken}`);
    await browser.waitFor("document.getElementById('state').textContent.startsWith('live')", 4000);
    const path = process.env.STATUS_PAGE_SCREENSHOT || join(proxy.dir, "status-page.png");
    await browser.screenshot(path);
    const png = await readFile(path);
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(png.readUInt32BE(16)).toBe(1280);
    expect(png.readUInt32BE(20)).toBe(900);
  }, BROWSER_TEST_MS);
});
