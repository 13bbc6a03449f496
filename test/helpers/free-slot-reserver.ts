/**
 * A separate process reserving free-model slots (test/redis-scripts.test.ts): connects, prints
 * "ready", waits for a line on stdin (so every process starts at once), makes `count` concurrent
 * reservations and prints how many were granted as JSON.
 *   bun test/helpers/free-slot-reserver.ts <redis url> <prefix> <account> <day> <count>
 */
import { createRedisConnection } from "../../src/store/redis/connection.ts";
import { redisKeys } from "../../src/store/redis/redis-keys.ts";
import { sharedStateScripts } from "../../src/store/redis/scripts.ts";

const [url = "", prefix = "", account = "", day = "", count = "0"] = process.argv.slice(2);
const connection = createRedisConnection({ url, timeoutMs: 2_000 });
await connection.ready;
const scripts = sharedStateScripts(connection, redisKeys(prefix));
process.stdout.write("ready\n");
for await (const _line of console) break;
const results = await Promise.all(Array.from({ length: Number(count) }, () => scripts.reserveFreeSlot({ account, day })));
const granted = results.filter((result) => result.ok && result.value.granted).length;
const failed = results.filter((result) => !result.ok).length;
process.stdout.write(`${JSON.stringify({ granted, failed })}\n`);
await connection.close();
process.exit(0);
