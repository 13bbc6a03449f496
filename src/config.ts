/**
 * Configuration: environment variables (and `.env`), overridden by `--port` / `--host`.
 *
 * Each setting is one row of a table: its variable, its zod schema and, for error messages,
 * the words that say what is allowed. `loadConfig` returns errors as values so that `main.ts`,
 * the only place that exits, can print one line naming the variable, the value and the rule.
 */
import { z } from "zod";
import { displayUrl } from "./domain/redact.ts";

const seconds = (min: number, max: number) => z.coerce.number().min(min).max(max);
const integer = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const boolean = z.enum(["true", "false", "1", "0", "yes", "no"]).transform((value) => ["true", "1", "yes"].includes(value));

/** `a, b,c` → ["a", "b", "c"], each entry then checked by `entry`; at least one. */
const commaList = <T extends z.ZodType<string, string>>(entry: T) =>
  z
    .string()
    .transform((list) => list.split(",").map((item) => item.trim()).filter((item) => item !== ""))
    .pipe(z.array(entry).min(1));

/** A DNS name (a trailing dot allowed), an IPv4 address, or an IPv6 literal in brackets. */
const hostName = /^(?:[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?(?:\.[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?)*\.?|\[[0-9a-f:.]+\])$/i;

/** `https://App.Example.com:443/` → `https://app.example.com`, as browsers send it; undefined if it is not an origin. */
function canonicalOrigin(text: string): string | undefined {
  if (!URL.canParse(text)) return undefined;
  const url = new URL(text);
  if (url.protocol !== "http:" && url.protocol !== "https:") return undefined;
  if (url.username !== "" || url.password !== "" || url.search !== "" || url.hash !== "" || url.pathname !== "/") return undefined;
  return url.origin;
}

export const Rotation = z.enum(["sticky", "round-robin", "least-recently-used"]);
export type Rotation = z.infer<typeof Rotation>;

const settings = {
  PORT: { schema: integer(0, 65535).default(3000), allowed: "an integer from 0 to 65535 (0 picks a free port)" },
  HOST: { schema: z.string().min(1).default("127.0.0.1"), allowed: "a host name or IP address to listen on" },
  OPENROUTER_BASE_URL: {
    schema: z
      .url({ protocol: /^https?$/ })
      .default("https://openrouter.ai/api/v1")
      .transform((url) => url.replace(/\/+$/, "")),
    allowed: "an http(s) URL such as https://openrouter.ai/api/v1",
  },
  KEYS_FILE: { schema: z.string().min(1).default("keys.json"), allowed: "a file path" },
  MAX_ATTEMPTS: { schema: integer(1, 20).default(3), allowed: "an integer from 1 to 20" },
  FAILURE_THRESHOLD: { schema: integer(1, 1000).default(5), allowed: "an integer from 1 to 1000" },
  COOLDOWN_SECONDS: { schema: seconds(0.001, 172_800).default(60), allowed: "a number of seconds above 0, at most 172800 (48 h)" },
  ROTATION: { schema: Rotation.default("sticky"), allowed: "one of sticky, round-robin, least-recently-used" },
  UPSTREAM_TIMEOUT_SECONDS: {
    schema: seconds(0, 86_400).default(600),
    allowed: "a number of seconds from 0 (no limit) to 86400",
  },
  RETRY_BACKOFF_MS: { schema: integer(0, 60_000).default(200), allowed: "an integer number of milliseconds from 0 to 60000" },
  SHUTDOWN_GRACE_SECONDS: { schema: seconds(0, 3600).default(30), allowed: "a number of seconds from 0 to 3600" },
  MAX_BODY_BYTES: { schema: integer(1024, 1024 ** 3).default(10 * 1024 * 1024), allowed: "a number of bytes from 1024 to 1073741824" },
  BODY_TIMEOUT_SECONDS: { schema: seconds(0.1, 3600).default(30), allowed: "a number of seconds from 0.1 to 3600" },
  STREAM_COMMIT_SECONDS: { schema: seconds(0, 600).default(15), allowed: "a number of seconds from 0 to 600" },
  ADMIN_TOKEN: {
    schema: z.string().min(8).regex(/^\S+$/).optional(),
    allowed: "a token of at least 8 characters without spaces (unset: the admin API is off)",
    secret: true,
  },
  PROXY_API_KEYS: {
    schema: z
      .string()
      .transform((list) => list.split(",").map((key) => key.trim()).filter((key) => key !== ""))
      .pipe(z.array(z.string().regex(/^\S+$/)).min(1))
      .optional(),
    allowed: "a comma-separated list of keys without spaces",
    secret: true,
  },
  ALLOW_OPEN_PROXY: { schema: boolean.default(false), allowed: "true or false" },
  // The front door (http/front-door.ts): which web pages may call the proxy, and which Host names it answers to.
  CORS_ORIGINS: {
    schema: commaList(z.string().refine((entry) => entry === "*" || canonicalOrigin(entry) !== undefined).transform((entry) => (entry === "*" ? entry : (canonicalOrigin(entry) as string)))).optional(),
    allowed: "a comma-separated list of exact origins (scheme://host[:port], no path) such as https://app.example.com,http://localhost:5173, or * (only with PROXY_API_KEYS)",
  },
  ALLOWED_HOSTS: {
    schema: commaList(z.string().regex(hostName).transform((name) => name.toLowerCase().replace(/\.$/, ""))).optional(),
    allowed: "a comma-separated list of host names without ports, such as proxy.internal,gateway.example.com",
  },
  LOG_DIR: { schema: z.string().min(1).default("logs"), allowed: "a folder path" },
  LOG_RETENTION_DAYS: { schema: integer(1, 3650).default(14), allowed: "an integer number of days from 1 to 3650" },
  LOG_LEVEL: { schema: z.enum(["debug", "info", "warn", "error"]).default("info"), allowed: "one of debug, info, warn, error" },
  LOG_BODIES: { schema: boolean.default(false), allowed: "true or false" },
  // Several instances. The URL may carry a password: messages show it as displayUrl does.
  REDIS_URL: {
    schema: z
      .url({ protocol: /^(rediss?|redis\+unix)$/ })
      .refine((raw) => (raw.startsWith("redis+unix:") ? new URL(raw).pathname.length > 1 : new URL(raw).hostname !== ""), "a host (or a socket path)")
      .optional(),
    allowed: "a redis://host:port, rediss://host:port or redis+unix:///path/to/socket URL (unset: no Redis)",
  },
  REDIS_PREFIX: { schema: z.string().regex(/^[^\s]{1,64}$/).default("orp:"), allowed: "1 to 64 characters without spaces, e.g. orp:" },
  // How long the instance doing account discovery for all keeps it after its last renewal (store/redis/redis-backend.ts).
  REDIS_DISCOVERY_LEASE_SECONDS: { schema: seconds(0.3, 3600).default(60), allowed: "a number of seconds from 0.3 to 3600" },
  KEYS_ENCRYPTION_KEY: {
    schema: z
      .string()
      .refine((raw) => /^[A-Za-z0-9+/_-]{42,43}={0,2}$/.test(raw) && Buffer.from(raw, "base64").byteLength === 32)
      .optional(),
    allowed: "32 bytes in base64 (make one with: openssl rand -base64 32)",
    secret: true,
  },
  SESSION_AFFINITY: { schema: boolean.default(true), allowed: "true or false" },
} as const;

type Settings = typeof settings;
export type ConfigName = keyof Settings;

export const ConfigSchema = z.object(
  Object.fromEntries(Object.entries(settings).map(([name, { schema }]) => [name, schema])) as {
    [K in ConfigName]: Settings[K]["schema"];
  },
);
export type Config = z.infer<typeof ConfigSchema>;

export type ConfigResult = { ok: true; config: Config } | { ok: false; message: string };

/** Environment-like input: `process.env`, `.env` contents and flag overrides merged by the caller. */
export type EnvInput = Record<string, string | undefined>;

export function loadConfig(env: EnvInput): ConfigResult {
  const input: Record<string, string | undefined> = {};
  for (const name of Object.keys(settings) as ConfigName[]) {
    const raw = env[name];
    // An empty variable (`PORT=`) means "not set", as in most shells' .env conventions.
    input[name] = raw === undefined || raw.trim() === "" ? undefined : raw.trim();
  }
  const parsed = ConfigSchema.safeParse(input);
  if (parsed.success) {
    // "*" lets every page on the web send requests: only when each one must carry a client key.
    if (parsed.data.CORS_ORIGINS?.includes("*") && !parsed.data.PROXY_API_KEYS) {
      return { ok: false, message: `invalid CORS_ORIGINS=${JSON.stringify(input.CORS_ORIGINS)}: "*" lets any web page use the proxy, so it needs PROXY_API_KEYS set; or list the origins, such as CORS_ORIGINS=https://app.example.com` };
    }
    return { ok: true, config: parsed.data };
  }
  const issue = parsed.error.issues[0];
  const name = String(issue?.path[0] ?? "configuration") as ConfigName;
  const setting: { allowed: string; secret?: boolean } | undefined = settings[name];
  const allowed = setting?.allowed ?? issue?.message ?? "a valid value";
  // A secret's value is never echoed, not even a wrong one: it may be a real token.
  const shown = setting?.secret ? "(hidden)" : JSON.stringify(name === "OPENROUTER_BASE_URL" || name === "REDIS_URL" ? displayUrl(input[name] ?? "") : (input[name] ?? ""));
  return { ok: false, message: `invalid ${name}=${shown}: expected ${allowed}` };
}

/** The defaults, for tests and for subcommands that need only a few settings. */
export function defaultConfig(overrides: Partial<Config> = {}): Config {
  const result = loadConfig({});
  if (!result.ok) throw new Error(result.message);
  return { ...result.config, ...overrides };
}

/**
 * Parses a `.env` file's text: `KEY=value` lines, `#` comments, optional `export `, single or
 * double quotes. Values already present in the real environment win (as with Bun's own loader).
 */
export function parseDotenv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.trim();
    if (line === "" || line.startsWith("#")) continue;
    const match = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!match) continue;
    const [, key = "", rest = ""] = match;
    let value = rest;
    const quote = value[0];
    if ((quote === '"' || quote === "'") && value.indexOf(quote, 1) > 0) {
      value = value.slice(1, value.indexOf(quote, 1));
      if (quote === '"') value = value.replace(/\\n/g, "\n");
    } else {
      value = value.replace(/\s+#.*$/, "").trim();
    }
    out[key] = value;
  }
  return out;
}
