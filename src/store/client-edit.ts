/**
 * One person's change to the clients, applied to the store under its lock: what the CLI and the
 * admin API both run. The change sees the clients as stored now (it may run twice, when the file
 * is edited while it is written), and the outcome says which of three things happened.
 */
import type { KeyStore, StoreFailure, StoreLoad } from "./ports.ts";
import type { ClientEdit, ClientMap } from "../clients/client-admin.ts";
import { clientsFromDocument, documentWithClients } from "../clients/client-schema.ts";

export type ClientEditOutcome =
  /** The keys file could not be read or written (its own message names the file and the cause). */
  | { kind: "store"; failure: StoreFailure }
  /** The file's clients section does not parse: nothing was written over it. */
  | { kind: "invalid"; message: string }
  /** The change ran: done (and stored) or refused (nothing stored), as `edit` says. */
  | { kind: "edited"; edit: ClientEdit; stored: Extract<StoreLoad, { ok: true }> };

export async function editClients(store: KeyStore, now: () => number, change: (clients: ClientMap) => ClientEdit): Promise<ClientEditOutcome> {
  let edit: ClientEdit | undefined;
  let invalid: string | undefined;
  const result = await store.update((doc) => {
    const loaded = clientsFromDocument(doc, now());
    if (!loaded.ok) {
      invalid = loaded.message;
      return doc;
    }
    edit = change(loaded.clients);
    return edit.ok ? documentWithClients(doc, edit.clients) : doc;
  });
  if (!result.ok) return { kind: "store", failure: result };
  if (invalid !== undefined || edit === undefined) return { kind: "invalid", message: `${store.name}: ${invalid ?? "the clients section could not be read"}` };
  return { kind: "edited", edit, stored: result };
}
