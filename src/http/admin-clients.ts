/**
 * The admin API for client keys, under `/admin`, behind ADMIN_TOKEN: `GET/POST /admin/clients`,
 * `PATCH/DELETE /admin/clients/:name`, `POST /admin/clients/:name/rotate`. Changes go through the
 * store (the keys file, so the CLI and other instances see them) and are in force in this server
 * as soon as the answer is sent. A new key is in the answer to the request that made it, and
 * nowhere else, ever.
 */
import { Hono, type Context } from "hono";
import { addClient, removeClient, rotateClient, setClient, type ClientEdit, type ClientMap } from "../clients/client-admin.ts";
import { newClientKey } from "../clients/client-key.ts";
import { editClients } from "../store/client-edit.ts";
import { parseClientSettings } from "../clients/client-settings.ts";
import { viewClient } from "../clients/client-view.ts";
import type { Clients } from "../clients/clients.ts";
import type { KeyStore } from "../store/ports.ts";
import { ProxyError } from "../domain/errors.ts";
import { requireAdminToken } from "./admin-auth.ts";
import type { AppEnv } from "./app-env.ts";

export interface AdminClientDeps {
  adminToken: string | undefined;
  clients: Clients;
  /** Where the clients are stored: the keys file, or Redis's client records. */
  store: KeyStore;
  now?: () => number;
}

const editErrors = {
  client_exists: [409, "invalid_request_error"],
  client_not_found: [404, "not_found_error"],
  invalid_client_name: [400, "invalid_request_error"],
} as const;

export function adminClientRoutes({ adminToken, clients, store, now = Date.now }: AdminClientDeps): Hono<AppEnv> {
  const routes = new Hono<AppEnv>();
  routes.use("/clients", requireAdminToken(adminToken));
  routes.use("/clients/*", requireAdminToken(adminToken));

  /** Runs `change` under the store's lock and puts the outcome in force here at once. */
  const edit = async (change: (clients: ClientMap) => ClientEdit) => {
    const outcome = await editClients(store, now, change);
    if (outcome.kind === "store" && outcome.failure.kind === "io") {
      // The disk refused (a read-only or missing folder, a full disk): the server's fault, not the client's.
      throw new ProxyError(500, `cannot change clients: ${outcome.failure.message}; nothing was changed`, { type: "internal_error", code: "keys_file_unwritable" });
    }
    if (outcome.kind !== "edited") {
      const message = outcome.kind === "store" ? outcome.failure.message : outcome.message;
      throw new ProxyError(409, `cannot change clients: ${message}`, { type: "invalid_request_error", code: "keys_file_invalid" });
    }
    clients.adopt(outcome.stored.doc, store.name);
    const done = outcome.edit;
    if (!done.ok) {
      const [status, type] = editErrors[done.code];
      throw new ProxyError(status, done.message, { type, code: done.code });
    }
    // The live record: counters as this server holds them.
    return viewClient(clients.directory.byName(done.client.name)?.record ?? done.client, now());
  };


  routes.get("/clients", (c) => c.json({ clients: clients.directory.records().map((record) => viewClient(record, now())) }));

  routes.post("/clients", async (c) => {
    const body = await readObject(c);
    const { name, ...rest } = body;
    if (typeof name !== "string") throw invalidBody("name", 'name must be a string, like {"name":"alice","rpm":20}');
    const settings = settingsOf(rest);
    const key = newClientKey();
    const client = await edit((current) => addClient(current, name, settings, key, now()));
    return c.json({ client, key }, 201);
  });

  routes.patch("/clients/:name", async (c) => {
    const settings = settingsOf(await readObject(c));
    const name = c.req.param("name");
    return c.json({ client: await edit((current) => setClient(current, name, settings)) });
  });

  routes.delete("/clients/:name", async (c) => {
    const name = c.req.param("name");
    await edit((current) => removeClient(current, name));
    return c.body(null, 204);
  });

  routes.post("/clients/:name/rotate", async (c) => {
    const name = c.req.param("name");
    const key = newClientKey();
    const client = await edit((current) => rotateClient(current, name, key));
    return c.json({ client, key });
  });

  return routes;
}

function settingsOf(input: Record<string, unknown>) {
  const parsed = parseClientSettings(input);
  if (!parsed.ok) throw invalidBody(parsed.field, parsed.message);
  return parsed.settings;
}

function invalidBody(field: string, message: string): ProxyError {
  return new ProxyError(400, message.startsWith(field) ? message : `${field}: ${message}`, { type: "invalid_request_error", code: "invalid_body" });
}

async function readObject(c: Context<AppEnv>): Promise<Record<string, unknown>> {
  let body: unknown;
  try {
    body = JSON.parse(await c.req.text());
  } catch {
    throw invalidBody("body", 'not JSON; send {"name":"alice","models":["*:free"],"rpm":20}');
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) throw invalidBody("body", "must be a JSON object");
  return body as Record<string, unknown>;
}
