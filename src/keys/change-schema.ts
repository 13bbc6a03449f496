/**
 * The wire form of a `StateChange` (state-change.ts): what a shared store publishes and another
 * instance reads back. Whatever arrives from outside the process is checked here first, so a
 * malformed or foreign message is dropped instead of corrupting the pool's picture.
 */
import { z } from "zod";
import type { StateChange } from "./state-change.ts";

const instant = z.number().finite().min(0);
const version = z.number().int().min(0);
const text = z.string().max(2_000);
const id = z.string().min(1).max(200);
const cause = { source: text, reason: text };
const restClass = z.enum(["all", "free", "paid"]);
const utcDay = z.string().regex(/^\d{4}-\d{2}-\d{2}$/);

const keyEdit = z.discriminatedUnion("edit", [
  z.object({ edit: z.literal("add"), secret: z.string().min(1), label: text.optional(), addedAt: instant, account: id.optional() }),
  z.object({ edit: z.literal("remove") }),
  z.object({ edit: z.literal("enable") }),
  z.object({ edit: z.literal("disable"), at: instant, reason: text }),
  z.object({ edit: z.literal("label"), label: text.optional() }),
]);

const runtimeChange = z.discriminatedUnion("kind", [
  z.object({ kind: z.literal("key-cooldown"), keyId: id, basis: version, until: instant, ...cause }),
  z.object({ kind: z.literal("key-disabled"), keyId: id, basis: version, since: instant, reason: text }),
  z.object({ kind: z.literal("key-failure"), keyId: id, basis: version, at: instant }),
  z.object({ kind: z.literal("key-success"), keyId: id, basis: version, at: instant }),
  z.object({
    kind: z.literal("key-counters"),
    keyId: id,
    delta: z.object({
      requests: z.number().int().optional(),
      successes: z.number().int().optional(),
      failures: z.number().int().optional(),
      tokens: z.number().int().optional(),
      cost: z.number().finite().optional(),
    }),
    lastUsedAt: instant.optional(),
  }),
  z.object({ kind: z.literal("key-account"), keyId: id, account: id }),
  z.object({ kind: z.literal("account-rest"), account: id, modelClass: restClass, until: instant, ...cause }),
  z.object({ kind: z.literal("model-rest"), account: id, model: id, until: instant, ...cause }),
  z.object({ kind: z.literal("free-requests"), account: id, day: utcDay, delta: z.number().int() }),
  z.object({ kind: z.literal("free-limit"), account: id, day: utcDay, limit: z.number().int().min(0), learnedAt: instant }),
]);

const editChange = z.object({ kind: z.literal("key-edit"), keyId: id, version }).and(keyEdit);

export const StateChangeSchema = z.union([runtimeChange, editChange]);

/** Parses one change from its JSON text; undefined for anything that is not one. */
export function parseStateChange(json: string): StateChange | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    return undefined;
  }
  return stateChangeOf(raw);
}

/** A change from an already parsed value (e.g. inside an envelope); undefined if it is not one. */
export function stateChangeOf(raw: unknown): StateChange | undefined {
  const parsed = StateChangeSchema.safeParse(raw);
  return parsed.success ? parsed.data : undefined;
}
