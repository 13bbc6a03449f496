/**
 * Usage by client: every request record names its client (by name, never the key) in the logs;
 * /metrics has a `client` label on the request, token and cost counters; GET /admin/usage?by=client;
 * list-clients shows what the server saved; and the status page's Clients section in headless
 * Chromium (requests, tokens and cost today and this month against each limit, and when a limited
 * client comes back). Every output is scanned for the pool's keys and the client keys.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { runCli } from "./helpers/cli.ts";
import { chromiumPath, launchChromium, type Browser } from "./helpers/chromium.ts";
import { adminClient, adminToken, answerCosting, streamCosting } from "./helpers/clients.ts";
import { allLogText, readLog } from "./helpers/log-files.ts";
import { useSuite } from "./helpers/suite.ts";
import { requestsDone, startTestProxy, testKeys, type TestProxy } from "./helpers/test-proxy.ts";

const secrets: string[] = [...testKeys, adminToken];
const { fake, log, cleanups } = useSuite({ secrets, reply: () => answerCosting(0.002, 100) });

async function start(): Promise<{ proxy: TestProxy; admin: ReturnType<typeof adminClient> }> {
  const proxy = await startTestProxy({ upstream: fake.url, config: { ADMIN_TOKEN: adminToken, LOG_LEVEL: "info" } });
  cleanups.push(async () => {
    log.record(proxy.output.out, proxy.output.err);
    await proxy.close();
  });
  return { proxy, admin: adminClient(proxy.url, log, secrets) };
}

async function chat(proxy: TestProxy, key: string, body: Record<string, unknown> = {}): Promise<number> {
  const response = await fetch(`${proxy.url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
    body: JSON.stringify({ model: "openai/gpt-4o-mini", messages: [{ role: "user", content: "hi" }], ...body }),
  });
  log.record(await response.text());
  return response.status;
}


const today = () => new Date().toISOString().slice(0, 10);

test("every request record names its client, by name and never by key, in the requests log and the human line", async () => {
  const { proxy, admin } = await start();
  const alice = await admin.add("alice");
  const done = requestsDone(proxy, 2);
  expect(await chat(proxy, alice)).toBe(200);
  fake.reply(() => streamCosting(0.001, 40));
  expect(await chat(proxy, alice, { stream: true })).toBe(200);
  await done;
  await proxy.logging.flush();
  const lines = await readLog(proxy.logDir, "requests", today());
  expect(lines.map((line) => line.client)).toEqual(["alice", "alice"]);
  expect(proxy.output.out).toContain("client alice");
  const everything = `${await allLogText(proxy.logDir)}\n${proxy.output.out}\n${proxy.output.err}`;
  expect(everything.includes(alice)).toBe(false);
  expect(everything.includes(alice.slice(7))).toBe(false);
});

test("/metrics has a client label on the request, token and cost counters", async () => {
  const { proxy, admin } = await start();
  const alice = await admin.add("alice");
  const bob = await admin.add("bob");
  expect(await chat(proxy, alice)).toBe(200);
  expect(await chat(proxy, alice)).toBe(200);
  expect(await chat(proxy, bob)).toBe(200);
  const metrics = await (await fetch(`${proxy.url}/metrics`, { headers: { authorization: `Bearer ${adminToken}` } })).text();
  log.record(metrics);
  expect(metrics).toContain('openrouter_proxy_requests_total{route="/chat/completions",status="200",client="alice"} 2');
  expect(metrics).toContain('openrouter_proxy_requests_total{route="/chat/completions",status="200",client="bob"} 1');
  expect(metrics).toMatch(/openrouter_proxy_tokens_total\{model="openai\/gpt-4o-mini",key_id="k_\w+",type="completion",client="alice"\} 2/);
  expect(metrics).toMatch(/openrouter_proxy_cost_usd_total\{model="openai\/gpt-4o-mini",key_id="k_\w+",client="bob"\} 0\.002/);
});

test("/metrics counts each client's refused requests by code", async () => {
  const { proxy, admin } = await start();
  const carol = await admin.add("carol", { models: ["openai/*"], rpm: 1 });
  expect(await chat(proxy, carol, { model: "anthropic/claude-3.5-sonnet" })).toBe(403);
  expect(await chat(proxy, carol)).toBe(200);
  expect(await chat(proxy, carol)).toBe(429);
  expect(await chat(proxy, carol)).toBe(429);
  expect(await chat(proxy, "sk-orp-unknown")).toBe(401); // not a client: not counted under any name
  const metrics = await (await fetch(`${proxy.url}/metrics`, { headers: { authorization: `Bearer ${adminToken}` } })).text();
  log.record(metrics);
  expect(metrics).toContain('openrouter_proxy_client_refusals_total{client="carol",code="model_not_allowed"} 1');
  expect(metrics).toContain('openrouter_proxy_client_refusals_total{client="carol",code="client_rate_limited"} 2');
  expect(metrics.match(/openrouter_proxy_client_refusals_total\{/g)).toHaveLength(2);
});

test("GET /admin/usage?by=client gives requests, tokens and cost per client", async () => {
  const { proxy, admin } = await start();
  const alice = await admin.add("alice");
  const bob = await admin.add("bob");
  for (let i = 0; i < 3; i++) expect(await chat(proxy, alice)).toBe(200);
  expect(await chat(proxy, bob)).toBe(200);
  const usage = await admin.call("GET", "/usage?by=client");
  expect(usage.status).toBe(200);
  expect(usage.json.by).toBe("client");
  const byClient = usage.json.client as Record<string, { requests: number; totalTokens: number; cost: number }>;
  expect(byClient.alice).toMatchObject({ requests: 3, totalTokens: 300 });
  expect(byClient.alice?.cost).toBeCloseTo(0.006, 9);
  expect(byClient.bob).toMatchObject({ requests: 1, totalTokens: 100 });
  expect((await admin.call("GET", "/usage")).json.byClient).toEqual(byClient);
  const bad = await admin.call("GET", "/usage?by=colour");
  expect(bad.status).toBe(400);
  expect(bad.json.error).toMatchObject({ code: "invalid_by" });
});

test("list-clients shows what the server counted, once saved (requests, tokens, cost against each limit)", async () => {
  const { proxy, admin } = await start();
  const alice = await admin.add("alice", { rpd: 10, usdPerMonth: 5 });
  for (let i = 0; i < 2; i++) expect(await chat(proxy, alice)).toBe(200);
  await proxy.sync.flush();
  const listed = await runCli(["list-clients", "--json"], { cwd: proxy.dir, env: { KEYS_FILE: proxy.keysFile }, log });
  const [view] = (JSON.parse(listed.stdout) as { clients: Array<{ usage: { today: Record<string, number>; month: Record<string, number> } }> }).clients;
  expect(view?.usage.today).toEqual({ requests: 2, tokens: 200, cost: 0.004 });
  expect(view?.usage.month).toEqual({ requests: 2, tokens: 200, cost: 0.004 });
  const table = await runCli(["list-clients"], { cwd: proxy.dir, env: { KEYS_FILE: proxy.keysFile }, log });
  expect(table.stdout).toMatch(/alice .*2 of 10 .*200 .*\$0\.004 of \$5/);
});

const why = chromiumPath() ? "" : " [skipped: chromium is not installed; .ci/run installs Debian's chromium]";
const BROWSER_TEST_MS = 15_000;

describe.skipIf(!chromiumPath())(`the status page's Clients section in headless Chromium${why}`, () => {
  let browser: Browser;
  let proxy: TestProxy;
  let stop: () => Promise<void>;

  beforeAll(async () => {
    // A stopped clock, mid-minute: the figures "this minute" must not roll over while the page loads.
    const frozen = Date.parse("2026-12-04T12:00:10Z");
    proxy = await startTestProxy({ upstream: fake.url, config: { ADMIN_TOKEN: adminToken }, overrides: { now: () => frozen } });
    stop = () => proxy.close();
    const admin = adminClient(proxy.url, log, secrets);
    const ana = await admin.add("ana", { models: ["*:free", "openai/*"], rpm: 2, rpd: 500 });
    const bot = await admin.add("support-bot", { usdPerMonth: 0.006, tpm: 10_000 });
    await admin.add("idle");
    fake.reply(() => answerCosting(0.003, 120));
    for (let i = 0; i < 2; i++) expect(await chat(proxy, ana)).toBe(200);
    expect(await chat(proxy, ana)).toBe(429); // rpm 2: back at the next minute
    for (let i = 0; i < 2; i++) expect(await chat(proxy, bot)).toBe(200);
    expect(await chat(proxy, bot)).toBe(429); // $0.006 of $0.006 (the second held the first's $0.003): back next month
    browser = await launchChromium();
    await browser.setViewport(1280, 900);
  }, BROWSER_TEST_MS);

  afterAll(async () => {
    await browser?.close();
    await stop?.();
  });

  /** The row's cells as text; the first is the name alone, the second the key hint under it. */
  const rowCells = (name: string) =>
    `[...document.querySelectorAll('#clients tbody tr')].map(r => [r.cells[0].firstChild.textContent, r.cells[0].lastChild.textContent, ...[...r.cells].slice(1).map(c => c.textContent)]).find(c => c[0] === ${JSON.stringify(name)})`;

  test("shows each client's requests, tokens and cost today and this month against its limits, and when a limited one comes back", async () => {
    await browser.navigate(`${proxy.url}/admin/#token=${adminToken}`);
    await browser.waitFor("document.querySelectorAll('#clients tbody tr').length === 3 && !document.getElementById('clients-section').hidden", 4000);
    const ana = await browser.evaluate<string[]>(rowCells("ana"));
    expect(ana.slice(0, 6)).toEqual(["ana", expect.stringMatching(/^sk-orp-…\S{4}$/), "*:free, openai/*", "2 of 2 req · 240 tok", "2 of 500 req · 240 tok · $0.0060", "2 req · 240 tok · $0.0060"]);
    expect(ana[6]).toMatch(/^limited · back in \d+s2 requests per minute · back at \d\d:\d\d UTC$/);
    const bot = await browser.evaluate<string[]>(rowCells("support-bot"));
    expect(bot.slice(3, 6)).toEqual(["2 req · 240 of 10,000 tok", "2 req · 240 tok · $0.0060", "2 req · 240 tok · $0.0060 of $0.0060"]);
    expect(bot[6]).toContain("$0.006 per month");
    expect(bot[6]).toMatch(/back in 27d 11h/); // 2026-12-04T12:00:10Z to 2027-01-01

    // The last requests name their client too.
    const requestClients = await browser.evaluate<string[]>("[...document.querySelectorAll('#requests tbody tr')].map(r => r.cells[2].textContent)");
    expect(requestClients.slice(0, 4)).toEqual(["support-bot", "support-bot", "ana", "ana"]);
    const idle = await browser.evaluate<string[]>(rowCells("idle"));
    expect(idle[2]).toBe("any");
    expect(idle[6]).toBe("ok");
    // The countdown ticks.
    const before = await browser.evaluate<string>(`${rowCells("ana")}[6]`);
    await browser.waitFor(`${rowCells("ana")}[6] !== ${JSON.stringify(before)}`, 2500);
    const html = await browser.evaluate<string>("document.documentElement.outerHTML");
    for (const secret of secrets) expect(html.includes(secret)).toBe(false);
    if (process.env.STATUS_PAGE_SCREENSHOT) await browser.screenshot(process.env.STATUS_PAGE_SCREENSHOT);
  }, BROWSER_TEST_MS);

  test("without clients the section stays hidden", async () => {
    const plain = await startTestProxy({ upstream: fake.url, config: { ADMIN_TOKEN: adminToken } });
    try {
      await browser.navigate(`${plain.url}/admin/#token=${adminToken}`);
      await browser.waitFor("!document.getElementById('dash').hidden", 4000);
      expect(await browser.evaluate<boolean>("document.getElementById('clients-section').hidden")).toBe(true);
    } finally {
      await plain.close();
    }
  }, BROWSER_TEST_MS);
});
