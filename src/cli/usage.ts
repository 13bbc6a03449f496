/** The usage text, one place for `--help`, `help <command>` and unknown-command errors. */
import packageJson from "../../package.json" with { type: "json" };

export const version = packageJson.version;

export const commandHelp: Record<string, string> = {
  serve: `Usage: openrouter-proxy serve [--port N] [--host ADDRESS]

Starts the proxy (the default when no command is given). Settings come from environment
variables and from a .env file in the working directory; --port and --host override PORT and HOST.
Point any OpenAI client at http://HOST:PORT/v1 with any API key (or one of PROXY_API_KEYS).`,
  "add-key": `Usage: openrouter-proxy add-key [KEY] [--label NAME] [--no-verify]

Adds an OpenRouter key to KEYS_FILE. Without KEY it asks for it with hidden input on a terminal,
or reads one key per line from a pipe ("KEY" or "KEY LABEL"):  openrouter-proxy add-key < keys.txt
The key is first checked with the upstream (GET /key): a key it rejects is not added (exit 1);
if the upstream cannot be reached the key is added with a warning. --no-verify skips the check.
A key already present is left as it is, except that a disabled one is re-enabled.`,
  "list-keys": `Usage: openrouter-proxy list-keys [--json]

Lists the keys in KEYS_FILE: id, label, masked key, status (active, cooling down until when,
disabled and why), consecutive failures, last used, requests served.`,
  "remove-key": `Usage: openrouter-proxy remove-key ID

Removes the key with that id (see list-keys) from KEYS_FILE.`,
  "enable-key": `Usage: openrouter-proxy enable-key ID

Re-enables the key with that id: clears its disabled mark, failure count and cooldown.`,
  "import-keys": `Usage: openrouter-proxy import-keys FILE

With REDIS_URL: adds the keys in FILE (a keys file) that Redis does not hold yet; keys already in
Redis are left as they are (merged by key id). Every running instance has them within a second.`,
  "export-keys": `Usage: openrouter-proxy export-keys FILE

With REDIS_URL: writes the key list held in Redis into FILE in the keys-file format (mode 0600),
keeping the file's other sections. Use it to move back to a keys file, or as a backup.`,
  "check-keys": `Usage: openrouter-proxy check-keys [--json]

Asks the upstream (GET /key) about every key: limit left, usage, free tier, rate limit. Keys the
upstream rejects are disabled (exit status 1 when there were any).`,
  "add-client": `Usage: openrouter-proxy add-client NAME [--models PATTERNS] [--rpm N] [--rpd N] [--tpm N]
                                    [--usd-per-day X] [--usd-per-month X] [--expires ISO-DATE]

Adds a client and prints its new key (sk-orp-…) once, alone on standard output; only its SHA-256
is stored in KEYS_FILE. Once any client exists, /v1 and /api/v1 need a client key (or one of
PROXY_API_KEYS, which stays unlimited).
  --models PATTERNS    comma-separated globs the client may use, e.g. openai/*,*:free (403 model_not_allowed otherwise)
  --rpm N, --rpd N     requests per minute (fixed UTC clock minutes) and per UTC day (429 client_rate_limited)
  --tpm N              tokens per minute, from the answers' usage (429 client_rate_limited)
  --usd-per-day X, --usd-per-month X
                       spend from the answers' usage.cost per UTC day / month (429 client_budget_exceeded)
  --expires ISO-DATE   the key stops working then (a bare date: 00:00 UTC that day)`,
  "set-client": `Usage: openrouter-proxy set-client NAME [--models PATTERNS] [--rpm N] … [--no-models] [--no-rpm] …

Changes a client's settings; the flags are add-client's. --no-models, --no-rpm, --no-rpd, --no-tpm,
--no-usd-per-day, --no-usd-per-month and --no-expires lift one. Its key and counters stay.`,
  "list-clients": `Usage: openrouter-proxy list-clients [--json]

Lists the clients: key hint, models, and requests, tokens and cost this minute, today and this
month (UTC) against each limit, as the server last saved them; a limited client shows when it comes back.`,
  "remove-client": `Usage: openrouter-proxy remove-client NAME

Removes the client: its key stops working (401 invalid_api_key).`,
  "rotate-client": `Usage: openrouter-proxy rotate-client NAME

Gives the client a new key, printed once; the old key stops working. Limits and counters stay.`,
};

export function usage(): string {
  return `openrouter-proxy ${version}: an OpenAI-compatible proxy that spreads requests over a pool of OpenRouter keys

Usage:
  openrouter-proxy [serve] [--port N] [--host ADDRESS]   start the proxy (default)
  openrouter-proxy add-key [KEY] [--label NAME] [--no-verify]
  openrouter-proxy list-keys [--json]
  openrouter-proxy remove-key ID
  openrouter-proxy import-keys FILE     (with REDIS_URL: a keys file into Redis)
  openrouter-proxy export-keys FILE     (with REDIS_URL: Redis into a keys file, 0600)
  openrouter-proxy enable-key ID
  openrouter-proxy check-keys [--json]
  openrouter-proxy add-client NAME [--models PATTERNS] [--rpm N] [--rpd N] [--tpm N]
                   [--usd-per-day X] [--usd-per-month X] [--expires ISO-DATE]
  openrouter-proxy list-clients [--json]
  openrouter-proxy set-client NAME [same flags as add-client] [--no-rpm …]
  openrouter-proxy remove-client NAME
  openrouter-proxy rotate-client NAME
  openrouter-proxy help [command]                        show help for a command
  openrouter-proxy --version                             print the version

Environment: PORT, HOST, OPENROUTER_BASE_URL, KEYS_FILE, MAX_ATTEMPTS, FAILURE_THRESHOLD,
COOLDOWN_SECONDS, ROTATION, UPSTREAM_TIMEOUT_SECONDS, RETRY_BACKOFF_MS, SHUTDOWN_GRACE_SECONDS,
ADMIN_TOKEN, PROXY_API_KEYS, ALLOW_OPEN_PROXY (see the README). A .env file in the working
directory is read too.`;
}
