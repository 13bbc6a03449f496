/**
 * The admin API under `/admin`, on only when ADMIN_TOKEN is set. It changes keys through the
 * store (so the file and other instances see the change) and hands the result to the pool.
 */
import { Hono, type Context } from "hono";
import { z } from "zod";
import type { AppEnv } from "./app-env.ts";
import { ProxyError } from "../domain/errors.ts";
import { factsOf } from "../keys/account-discovery.ts";
import { addKey, enableKey, removeKey, type AddOutcome } from "../keys/key-admin.ts";
import { keyIdOf } from "../domain/key-identity.ts";
import type { KeyFacts, KeyPool } from "../keys/key-pool.ts";
import type { KeyStore, StoreLoad } from "../store/ports.ts";
import { echoInput } from "../keys/key-view.ts";
import type { KeyFileDocument } from "../keys/schema.ts";
import type { KeyCheck } from "../domain/key-check.ts";
import { requireAdminToken } from "./admin-auth.ts";

export interface AdminDeps {
  adminToken: string | undefined;
  pool: KeyPool;
  store: KeyStore;
  /** Asks the upstream whether a key is valid (GET /key). */
  checkKey: (secret: string) => Promise<KeyCheck>;
  now?: () => number;
}

const AddKeyBody = z.strictObject({
  key: z.string({ error: "key must be a string" }).trim().min(1, "key must not be empty").regex(/^\S+$/, "key must not contain spaces"),
  label: z.string({ error: "label must be a string" }).max(200, "label must be at most 200 characters").optional(),
  verify: z.boolean({ error: "verify must be true or false" }).optional(),
});

export function adminRoutes({ adminToken, pool, store, checkKey, now = Date.now }: AdminDeps): Hono<AppEnv> {
  const admin = new Hono<AppEnv>();

  admin.use(requireAdminToken(adminToken));

  const update = async (change: (doc: KeyFileDocument) => KeyFileDocument) => {
    const result = await store.update(change);
    return adopt(result);
  };
  const adopt = (result: StoreLoad) => {
    if (!result.ok && result.kind === "io") {
      // The disk refused (a read-only or missing folder, a full disk): the server's fault, not the client's.
      throw new ProxyError(500, `cannot change keys: ${result.message}; nothing was changed`, { type: "internal_error", code: "keys_file_unwritable" });
    }
    if (!result.ok) {
      throw new ProxyError(409, `cannot change keys: ${result.message}`, { type: "invalid_request_error", code: "keys_file_invalid" });
    }
    pool.replaceKeys(result.doc.records);
    return result.doc;
  };
  const viewOf = (id: string) => {
    const view = pool.keyViews().find((candidate) => candidate.id === id);
    if (!view) throw new ProxyError(500, `key ${id} vanished during the change`, { type: "internal_error", code: "internal_error" });
    return view;
  };

  admin.get("/keys", (c) => c.json({ keys: pool.keyViews(), accounts: pool.accountViews() }));

  admin.post("/keys", async (c) => {
    const body = await readJson(c);
    const parsed = AddKeyBody.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = issue?.path.join(".") || "body";
      const message =
        issue?.code === "unrecognized_keys" ? `unknown field ${issue.keys.join(", ")}: the body takes key, label and verify` : (issue?.message ?? "invalid body");
      throw new ProxyError(400, `${field}: ${message}`, { type: "invalid_request_error", code: "invalid_body" });
    }
    const { key: secret, label, verify = true } = parsed.data;
    const id = keyIdOf(secret);
    let warning: string | undefined;
    let facts: KeyFacts = {};
    if (verify) {
      const check = await checkKey(secret);
      if (check.kind === "rejected") {
        throw new ProxyError(422, `the upstream rejected this key (${check.status}: ${check.message}); it was not added`, {
          type: "invalid_request_error",
          code: "key_rejected",
        });
      }
      if (check.kind === "unknown") warning = `could not verify the key: ${check.reason}; added anyway`;
      if (check.kind === "valid") facts = factsOf(check.info, now());
    }
    // The pool knows the freshest state: a key it holds disabled is re-enabled even if the file lags.
    const heldDisabled = pool.records().find((record) => record.id === id)?.disabled !== undefined;
    let outcome: AddOutcome = "added";
    await update((doc) => {
      if (heldDisabled && doc.records.some((record) => record.id === id)) {
        outcome = "re-enabled";
        return enableKey(doc, id, now()).doc;
      }
      const added = addKey(doc, secret, now(), label, facts);
      outcome = added.outcome;
      return added.doc;
    });
    return c.json({ outcome, key: viewOf(id), ...(warning ? { warning } : {}) }, outcome === "added" ? 201 : 200);
  });

  admin.delete("/keys/:id", async (c) => {
    const id = c.req.param("id");
    let found = false;
    await update((doc) => {
      const result = removeKey(doc, id);
      found = result.removed !== undefined;
      return result.doc;
    });
    if (!found) throw unknownKey(id);
    return c.body(null, 204);
  });

  admin.post("/keys/:id/enable", async (c) => {
    const id = c.req.param("id");
    let found = false;
    // The server's memory holds the live rests; the file may hold ones not yet swapped in.
    const cleared = new Set(pool.clearRests(id));
    await update((doc) => {
      const result = enableKey(doc, id, now());
      found = result.record !== undefined;
      for (const each of result.cleared) cleared.add(each);
      return result.doc;
    });
    if (!found) throw unknownKey(id);
    return c.json({ key: viewOf(id), cleared: [...cleared] });
  });

  return admin;
}

function unknownKey(id: string): ProxyError {
  // echoInput: a client may send the key itself where its id belongs; it must not come back.
  return new ProxyError(404, `no key with id ${echoInput(id)}: GET /admin/keys lists the ids`, { type: "not_found_error", code: "key_not_found" });
}

async function readJson(c: Context<AppEnv>): Promise<unknown> {
  const text = await c.req.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new ProxyError(400, 'body: not JSON; send {"key":"sk-or-v1-…","label":"…"}', { type: "invalid_request_error", code: "invalid_body" });
  }
}
