/**
 * `import-keys FILE` and `export-keys FILE`: moving a keys file into Redis and back.
 * Both need REDIS_URL. Importing merges by key id: keys the file has and Redis has not are added
 * (as people's edits, published to every running instance); keys Redis already holds are left as
 * they are. Exporting writes Redis's key list into FILE in the keys-file format (mode 0600, the
 * file's other sections kept); the runtime state stays in Redis.
 */
import { chmod } from "node:fs/promises";
import { createJsonFileStore } from "../store/file/json-file-store.ts";
import type { KeyRecord } from "../keys/schema.ts";
import type { CommandContext, CommandIO } from "./io.ts";

const needsRedis = (io: CommandIO, command: string): number => {
  io.err(`openrouter-proxy: ${command} needs REDIS_URL (the Redis to move keys into or out of), e.g. REDIS_URL=redis://127.0.0.1:6379`);
  return 2;
};

/** `store` is the key list in Redis; undefined without REDIS_URL. */
export async function importKeysCommand({ io, store: redis }: CommandContext, path: string): Promise<number> {
  if (!redis) return needsRedis(io, "import-keys");
  const file = await createJsonFileStore({ path }).load();
  if (!file.ok) {
    io.err(`openrouter-proxy: ${file.message}`);
    return 1;
  }
  if (!file.exists) {
    io.err(`openrouter-proxy: ${path} does not exist: nothing to import`);
    return 1;
  }
  const incoming = file.doc.records;
  let added = 0;
  const result = await redis.update((doc) => {
    const known = new Set(doc.records.map((record) => record.id));
    const fresh = incoming.filter((record) => !known.has(record.id));
    added = fresh.length;
    return { ...doc, records: [...doc.records, ...fresh] };
  });
  if (!result.ok) {
    io.err(`openrouter-proxy: ${result.message}`);
    return 1;
  }
  io.out(`imported ${added} key${added === 1 ? "" : "s"} from ${path} into ${redis.name}; ${incoming.length - added} already there`);
  return 0;
}

export async function exportKeysCommand({ io, store: redis }: CommandContext, path: string): Promise<number> {
  if (!redis) return needsRedis(io, "export-keys");
  const loaded = await redis.load();
  if (!loaded.ok) {
    io.err(`openrouter-proxy: ${loaded.message}`);
    return 1;
  }
  // A record's resetAt in Redis is a version, not a time: the file gets none.
  const records: KeyRecord[] = loaded.doc.records.map(({ resetAt: _version, ...record }) => record);
  const written = await createJsonFileStore({ path }).update((doc) => ({ ...doc, records }));
  if (!written.ok) {
    io.err(`openrouter-proxy: ${written.message}`);
    return 1;
  }
  await chmod(path, 0o600);
  io.out(`exported ${records.length} key${records.length === 1 ? "" : "s"} from ${redis.name} to ${path} (mode 0600)`);
  return 0;
}
