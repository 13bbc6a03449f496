/**
 * The pure parts of client keys, as rules: model globs, fixed UTC windows and what they refuse,
 * and the gate's choice between "no client keys in use" and "a client key is required".
 */
import { expect, test } from "bun:test";
import { addClient } from "../src/clients/client-admin.ts";
import { createClientDirectory } from "../src/clients/client-directory.ts";
import { createClientGate } from "../src/clients/client-gate.ts";
import { newClientKey } from "../src/clients/client-key.ts";
import { compileModelPatterns } from "../src/clients/model-globs.ts";
import { countRequest, emptyUsage, refusalFor, windowEnd } from "../src/clients/usage-windows.ts";

test("model globs: * is any run of characters, everything else matches exactly, case included", () => {
  const allows = compileModelPatterns(["openai/*", "*:free", "meta-llama/llama-3.1-8b-instruct"]);
  for (const model of ["openai/gpt-4o", "openai/o1/preview", "google/gemma-2-9b-it:free", "meta-llama/llama-3.1-8b-instruct"]) expect(allows(model)).toBe(true);
  for (const model of ["anthropic/claude-3.5-sonnet", "OpenAI/gpt-4o", "openaix/gpt", "google/gemma:free2", "meta-llama/llama-3.1-8b-instruct:nitro", "openai"]) expect(allows(model)).toBe(false);
  // Regular-expression characters in a pattern are plain characters.
  expect(compileModelPatterns(["a.b(c)+"])("a.b(c)+")).toBe(true);
  expect(compileModelPatterns(["a.b"])("axb")).toBe(false);
});

test("windows are the UTC clock minute, the UTC day and the UTC calendar month", () => {
  const at = Date.parse("2026-02-28T23:59:59.999Z");
  expect(new Date(windowEnd("minute", at)).toISOString()).toBe("2026-03-01T00:00:00.000Z");
  expect(new Date(windowEnd("day", at)).toISOString()).toBe("2026-03-01T00:00:00.000Z");
  expect(new Date(windowEnd("month", at)).toISOString()).toBe("2026-03-01T00:00:00.000Z");
  expect(new Date(windowEnd("month", Date.parse("2026-12-31T10:00:00Z"))).toISOString()).toBe("2027-01-01T00:00:00.000Z");
});

test("a spent budget outranks a rate limit, and the wait is the latest boundary among the limits hit", () => {
  const at = Date.parse("2026-12-04T12:00:40Z");
  const usage = emptyUsage(at);
  countRequest(usage, at);
  usage.day.cost = 2;
  const refusal = refusalFor({ rpm: 1, usdPerDay: 1 }, usage, at);
  expect(refusal?.code).toBe("client_budget_exceeded");
  expect(new Date(refusal?.until ?? 0).toISOString()).toBe("2026-12-05T00:00:00.000Z");
  expect(refusalFor({ rpm: 1 }, usage, at)?.until).toBe(Date.parse("2026-12-04T12:01:00Z"));
  // The next minute starts from zero.
  expect(refusalFor({ rpm: 1 }, usage, Date.parse("2026-12-04T12:01:00Z"))).toBeUndefined();
});

test("without client keys the gate is off; on a public HOST guarded only by client keys, no clients means nobody", () => {
  const directory = createClientDirectory();
  expect(createClientGate({ directory }).identify([])).toBe("off");
  expect(createClientGate({ directory, requireClientKey: true }).identify(["anything"])).toBe("unknown");
  const key = newClientKey();
  const added = addClient(new Map(), "alice", {}, key, Date.now());
  if (!added.ok) throw new Error(added.message);
  directory.adopt(added.clients);
  const gate = createClientGate({ directory });
  expect(gate.identify([key])).toMatchObject({ record: { name: "alice" } });
  expect(gate.identify([`${key}x`])).toBe("unknown");
  expect(gate.identify([])).toBe("unknown");
});

test("counters of a client survive a change of its definition, and start over when it is removed and added again", () => {
  const at = Date.parse("2026-12-04T12:00:00Z");
  const first = addClient(new Map(), "alice", { rpm: 5 }, newClientKey(), at);
  if (!first.ok) throw new Error(first.message);
  const directory = createClientDirectory(first.clients);
  const live = directory.byName("alice");
  if (!live) throw new Error("no alice");
  directory.countRequest(live, at);
  directory.adopt(new Map([["alice", { ...first.client, rpm: 9 }]]));
  expect(directory.byName("alice")?.record.usage.minute.requests).toBe(1);
  expect(directory.byName("alice")?.record.rpm).toBe(9);
  const again = addClient(new Map(), "alice", {}, newClientKey(), at + 1000);
  if (!again.ok) throw new Error(again.message);
  directory.adopt(again.clients);
  expect(directory.byName("alice")?.record.usage.minute.requests).toBe(0);
});
