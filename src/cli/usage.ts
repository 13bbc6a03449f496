/** The usage text, one place for `--help`, `help <command>` and unknown-command errors. */
import packageJson from "../../package.json" with { type: "json" };

export const version = packageJson.version;

export const commandHelp: Record<string, string> = {
  serve: `openrouter-proxy serve [--port N] [--host ADDRESS]

Starts the proxy (the default when no command is given). Settings come from environment
variables and from a .env file in the working directory; --port and --host override PORT and HOST.
Point any OpenAI client at http://HOST:PORT/v1 with any API key.`,
};

export function usage(): string {
  return `openrouter-proxy ${version}: an OpenAI-compatible proxy that spreads requests over a pool of OpenRouter keys

Usage:
  openrouter-proxy [serve] [--port N] [--host ADDRESS]   start the proxy (default)
  openrouter-proxy help [command]                        show help for a command
  openrouter-proxy --version                             print the version

Environment: PORT, HOST, OPENROUTER_BASE_URL, KEYS_FILE, MAX_ATTEMPTS, FAILURE_THRESHOLD,
COOLDOWN_SECONDS, ROTATION, UPSTREAM_TIMEOUT_SECONDS, RETRY_BACKOFF_MS, SHUTDOWN_GRACE_SECONDS
(see the README). A .env file in the working directory is read too.`;
}
