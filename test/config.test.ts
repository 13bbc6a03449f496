/** Settings from the environment: the defaults, one readable line per bad value, and `.env` parsing. */
import { describe, expect, test } from "bun:test";
import { defaultConfig, loadConfig, parseDotenv, type Config, type ConfigName } from "../src/config.ts";

describe("defaults", () => {
  const defaults: Array<[ConfigName, Config[ConfigName]]> = [
    ["PORT", 3000],
    ["HOST", "127.0.0.1"],
    ["OPENROUTER_BASE_URL", "https://openrouter.ai/api/v1"],
    ["KEYS_FILE", "keys.json"],
    ["MAX_ATTEMPTS", 3],
    ["FAILURE_THRESHOLD", 5],
    ["COOLDOWN_SECONDS", 60],
    ["ROTATION", "sticky"],
    ["UPSTREAM_TIMEOUT_SECONDS", 600],
    ["RETRY_BACKOFF_MS", 200],
    ["SHUTDOWN_GRACE_SECONDS", 30],
    ["STREAM_COMMIT_SECONDS", 15],
    ["MAX_BODY_BYTES", 10 * 1024 * 1024],
    ["BODY_TIMEOUT_SECONDS", 30],
    ["ADMIN_TOKEN", undefined],
    ["PROXY_API_KEYS", undefined],
    ["ALLOW_OPEN_PROXY", false],
    ["CORS_ORIGINS", undefined],
    ["ALLOWED_HOSTS", undefined],
    ["LOG_DIR", "logs"],
    ["LOG_RETENTION_DAYS", 14],
    ["LOG_LEVEL", "info"],
    ["LOG_BODIES", false],
    ["REDIS_URL", undefined],
    ["REDIS_PREFIX", "orp:"],
    ["REDIS_DISCOVERY_LEASE_SECONDS", 60],
    ["KEYS_ENCRYPTION_KEY", undefined],
    ["SESSION_AFFINITY", true],
  ];

  test.each(defaults)("%s defaults to %p", (name, value) => {
    const result = loadConfig({});
    if (!result.ok) throw new Error(result.message);
    expect(result.config[name]).toBe(value);
  });

  test("the defaults table covers every setting", () => {
    expect(Object.keys(defaultConfig()).sort()).toEqual(defaults.map(([name]) => name).sort());
  });

  test("no timeout of the proxy's own on an answer (waiting for or streaming it) is shorter than 10 minutes by default", () => {
    const config = defaultConfig();
    // BODY_TIMEOUT_SECONDS bounds the client's own upload (slow-loris defence), not an answer.
    const timeouts = (Object.keys(config) as ConfigName[]).filter((name) => /TIMEOUT/.test(name) && name !== "BODY_TIMEOUT_SECONDS");
    expect(timeouts).toEqual(["UPSTREAM_TIMEOUT_SECONDS"]);
    for (const name of timeouts) expect(config[name] as number).toBeGreaterThanOrEqual(600);
  });

  test("an empty variable counts as not set", () => {
    const result = loadConfig({ PORT: "", ROTATION: "  ", KEYS_FILE: "" });
    expect(result).toEqual({ ok: true, config: defaultConfig() });
  });
});

describe("good values", () => {
  test("values are read, numbers as numbers and surrounding spaces trimmed", () => {
    const result = loadConfig({
      PORT: " 0 ",
      HOST: "0.0.0.0",
      OPENROUTER_BASE_URL: "http://localhost:8080/api/v1",
      KEYS_FILE: "/etc/openrouter-proxy/keys.json",
      MAX_ATTEMPTS: "20",
      FAILURE_THRESHOLD: "1",
      COOLDOWN_SECONDS: "0.5",
      ROTATION: "least-recently-used",
      UPSTREAM_TIMEOUT_SECONDS: "0",
      RETRY_BACKOFF_MS: "0",
      SHUTDOWN_GRACE_SECONDS: "3600",
    });
    expect(result).toEqual({
      ok: true,
      config: {
        PORT: 0,
        HOST: "0.0.0.0",
        OPENROUTER_BASE_URL: "http://localhost:8080/api/v1",
        KEYS_FILE: "/etc/openrouter-proxy/keys.json",
        MAX_ATTEMPTS: 20,
        FAILURE_THRESHOLD: 1,
        COOLDOWN_SECONDS: 0.5,
        ROTATION: "least-recently-used",
        UPSTREAM_TIMEOUT_SECONDS: 0,
        RETRY_BACKOFF_MS: 0,
        SHUTDOWN_GRACE_SECONDS: 3600,
        STREAM_COMMIT_SECONDS: 15,
        MAX_BODY_BYTES: 10 * 1024 * 1024,
        BODY_TIMEOUT_SECONDS: 30,
        ALLOW_OPEN_PROXY: false,
        LOG_DIR: "logs",
        LOG_RETENTION_DAYS: 14,
        LOG_LEVEL: "info",
        LOG_BODIES: false,
        REDIS_PREFIX: "orp:",
        REDIS_DISCOVERY_LEASE_SECONDS: 60,
        SESSION_AFFINITY: true,
      },
    });
  });

  test("a trailing slash on OPENROUTER_BASE_URL is dropped, so paths join cleanly", () => {
    const result = loadConfig({ OPENROUTER_BASE_URL: "https://openrouter.ai/api/v1/" });
    expect(result.ok && result.config.OPENROUTER_BASE_URL).toBe("https://openrouter.ai/api/v1");
  });

  test.each(["redis://127.0.0.1:6379", "rediss://user:pass@redis.internal:6380/2", "redis+unix:///run/redis/redis.sock"])("REDIS_URL=%s is accepted", (url) => {
    const result = loadConfig({ REDIS_URL: url });
    expect(result.ok && result.config.REDIS_URL).toBe(url);
  });

  test("REDIS_PREFIX defaults to orp: and KEYS_ENCRYPTION_KEY takes 32 bytes in base64", () => {
    const key = Buffer.alloc(32, 3).toString("base64");
    const result = loadConfig({ REDIS_PREFIX: "team-a:", KEYS_ENCRYPTION_KEY: key });
    expect(result.ok && [result.config.REDIS_PREFIX, result.config.KEYS_ENCRYPTION_KEY]).toEqual(["team-a:", key]);
    expect(defaultConfig().REDIS_PREFIX).toBe("orp:");
    expect(defaultConfig().REDIS_URL).toBeUndefined();
  });

  test.each(["sticky", "round-robin", "least-recently-used"])("ROTATION=%s is accepted", (rotation) => {
    const result = loadConfig({ ROTATION: rotation });
    expect(result.ok && result.config.ROTATION).toBe(rotation);
  });
});

describe("bad values", () => {
  const port = "an integer from 0 to 65535 (0 picks a free port)";
  const url = "an http(s) URL such as https://openrouter.ai/api/v1";
  const attempts = "an integer from 1 to 20";
  const threshold = "an integer from 1 to 1000";
  const cooldown = "a number of seconds above 0, at most 172800 (48 h)";
  const rotation = "one of sticky, round-robin, least-recently-used";
  const timeout = "a number of seconds from 0 (no limit) to 86400";
  const cases: Array<[ConfigName, string, string]> = [
    ["PORT", "abc", port],
    ["PORT", "70000", port],
    ["PORT", "-1", port],
    ["PORT", "80.5", port],
    ["PORT", "3000abc", port],
    ["OPENROUTER_BASE_URL", "openrouter.ai/api/v1", url],
    ["OPENROUTER_BASE_URL", "ftp://openrouter.ai/api/v1", url],
    ["MAX_ATTEMPTS", "0", attempts],
    ["MAX_ATTEMPTS", "21", attempts],
    ["MAX_ATTEMPTS", "two", attempts],
    ["FAILURE_THRESHOLD", "0", threshold],
    ["FAILURE_THRESHOLD", "2.5", threshold],
    ["COOLDOWN_SECONDS", "0", cooldown],
    ["COOLDOWN_SECONDS", "-60", cooldown],
    ["COOLDOWN_SECONDS", "1m", cooldown],
    ["COOLDOWN_SECONDS", "172801", cooldown],
    ["ROTATION", "bogus", rotation],
    ["ROTATION", "Sticky", rotation],
    ["UPSTREAM_TIMEOUT_SECONDS", "-1", timeout],
    ["UPSTREAM_TIMEOUT_SECONDS", "10m", timeout],
    ["UPSTREAM_TIMEOUT_SECONDS", "Infinity", timeout],
    ["RETRY_BACKOFF_MS", "60001", "an integer number of milliseconds from 0 to 60000"],
    ["SHUTDOWN_GRACE_SECONDS", "3601", "a number of seconds from 0 to 3600"],
    ["ALLOW_OPEN_PROXY", "maybe", "true or false"],
    ["LOG_RETENTION_DAYS", "0", "an integer number of days from 1 to 3650"],
    ["LOG_LEVEL", "verbose", "one of debug, info, warn, error"],
    ["LOG_BODIES", "sometimes", "true or false"],
    ["REDIS_URL", "http://127.0.0.1:6379", "a redis://host:port, rediss://host:port or redis+unix:///path/to/socket URL (unset: no Redis)"],
    ["REDIS_URL", "redis://", "a redis://host:port, rediss://host:port or redis+unix:///path/to/socket URL (unset: no Redis)"],
    ["REDIS_PREFIX", "has space", "1 to 64 characters without spaces, e.g. orp:"],
  ];

  test.each(cases)("%s=%p is refused in one line naming the variable, the value and what is allowed", (name, value, allowed) => {
    const result = loadConfig({ [name]: value });
    if (result.ok) throw new Error(`${name}=${value} was accepted as ${String(result.config[name])}`);
    expect(result.message).toBe(`invalid ${name}=${JSON.stringify(value)}: expected ${allowed}`);
  });

  test.each([
    ["ADMIN_TOKEN", "short", "a token of at least 8 characters without spaces (unset: the admin API is off)"],
    ["ADMIN_TOKEN", "has a space in it", "a token of at least 8 characters without spaces (unset: the admin API is off)"],
    ["PROXY_API_KEYS", " , ,", "a comma-separated list of keys without spaces"],
    ["PROXY_API_KEYS", "good-key,bad key", "a comma-separated list of keys without spaces"],
    ["KEYS_ENCRYPTION_KEY", Buffer.alloc(16, 5).toString("base64"), "32 bytes in base64 (make one with: openssl rand -base64 32)"],
    ["KEYS_ENCRYPTION_KEY", "not-base64-but-long-enough-to-look-like-a-key!!", "32 bytes in base64 (make one with: openssl rand -base64 32)"],
  ])("a bad secret %s is refused without echoing its value", (name, value, allowed) => {
    const result = loadConfig({ [name]: value });
    if (result.ok) throw new Error(`${name} was accepted`);
    expect(result.message).toBe(`invalid ${name}=(hidden): expected ${allowed}`);
  });

  test("a REDIS_URL refused for its form never shows its password", () => {
    const result = loadConfig({ REDIS_URL: "http://admin:hunter2-redis-password@10.0.0.5:6379" });
    expect(result).toEqual({ ok: false, message: expect.stringContaining('REDIS_URL="http://***@10.0.0.5:6379"') });
    expect(JSON.stringify(result)).not.toContain("hunter2");
  });

  test("PROXY_API_KEYS is a comma-separated list, spaces around the commas ignored", () => {
    const result = loadConfig({ PROXY_API_KEYS: " client-one , client-two,," });
    expect(result.ok && result.config.PROXY_API_KEYS).toEqual(["client-one", "client-two"]);
  });

  test("a value with a line break still gives one line", () => {
    const result = loadConfig({ ROTATION: "sticky\nround-robin" });
    expect(result.ok).toBe(false);
    if (!result.ok) {
      expect(result.message).not.toContain("\n");
      expect(result.message).toContain("ROTATION=");
    }
  });

  test("of several bad values, the message names one of them, not a list", () => {
    const result = loadConfig({ PORT: "x", ROTATION: "y" });
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.message).toMatch(/^invalid (PORT="x"|ROTATION="y"): expected [^\n]+$/);
  });
});

describe("parseDotenv", () => {
  test("reads KEY=value lines and skips blank lines and # comments", () => {
    expect(parseDotenv("# settings\n\nPORT=8080\n   # indented comment\nHOST=0.0.0.0\n")).toEqual({ PORT: "8080", HOST: "0.0.0.0" });
  });

  test("an `export ` prefix is allowed, as in files meant to be sourced by a shell", () => {
    expect(parseDotenv("export PORT=8080\nexport  ROTATION=round-robin")).toEqual({ PORT: "8080", ROTATION: "round-robin" });
  });

  test("double and single quotes are removed, keeping what is inside as written", () => {
    expect(parseDotenv(`A="has # hash and spaces "\nB='single # quoted'\nC=""`)).toEqual({ A: "has # hash and spaces ", B: "single # quoted", C: "" });
  });

  test("\\n inside double quotes is a line break; inside single quotes it stays as written", () => {
    expect(parseDotenv(`A="one\\ntwo"\nB='one\\ntwo'`)).toEqual({ A: "one\ntwo", B: "one\\ntwo" });
  });

  test("a # after a space ends an unquoted value; one inside a word does not", () => {
    expect(parseDotenv("PORT=8080 # the usual\nKEYS_FILE=keys#1.json\nQUOTED=\"x\" # note")).toEqual({ PORT: "8080", KEYS_FILE: "keys#1.json", QUOTED: "x" });
  });

  test("spaces around = are allowed, = inside the value is kept, and CRLF line ends are handled", () => {
    expect(parseDotenv("PORT = 8080\r\nOPENROUTER_BASE_URL=http://h/api?x=1\r\n")).toEqual({ PORT: "8080", OPENROUTER_BASE_URL: "http://h/api?x=1" });
  });

  test("an empty value is kept as empty, and lines that are not assignments are ignored", () => {
    expect(parseDotenv("PORT=\nnot an assignment\n1BAD=x\n=nothing")).toEqual({ PORT: "" });
  });

  test("a later line wins over an earlier one for the same name", () => {
    expect(parseDotenv("PORT=1\nPORT=2")).toEqual({ PORT: "2" });
  });

  test("what it reads feeds loadConfig", () => {
    const result = loadConfig(parseDotenv('export ROTATION="round-robin" # spread the load\nPORT=0'));
    expect(result.ok && [result.config.ROTATION, result.config.PORT]).toEqual(["round-robin", 0]);
  });
});
