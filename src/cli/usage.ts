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
  "check-keys": `Usage: openrouter-proxy check-keys [--json]

Asks the upstream (GET /key) about every key: limit left, usage, free tier, rate limit. Keys the
upstream rejects are disabled (exit status 1 when there were any).`,
};

export function usage(): string {
  return `openrouter-proxy ${version}: an OpenAI-compatible proxy that spreads requests over a pool of OpenRouter keys

Usage:
  openrouter-proxy [serve] [--port N] [--host ADDRESS]   start the proxy (default)
  openrouter-proxy add-key [KEY] [--label NAME] [--no-verify]
  openrouter-proxy list-keys [--json]
  openrouter-proxy remove-key ID
  openrouter-proxy enable-key ID
  openrouter-proxy check-keys [--json]
  openrouter-proxy help [command]                        show help for a command
  openrouter-proxy --version                             print the version

Environment: PORT, HOST, OPENROUTER_BASE_URL, KEYS_FILE, MAX_ATTEMPTS, FAILURE_THRESHOLD,
COOLDOWN_SECONDS, ROTATION, UPSTREAM_TIMEOUT_SECONDS, RETRY_BACKOFF_MS, SHUTDOWN_GRACE_SECONDS,
ADMIN_TOKEN, PROXY_API_KEYS, ALLOW_OPEN_PROXY (see the README). A .env file in the working
directory is read too.`;
}
