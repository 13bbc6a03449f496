/** `serve`: start the proxy and run until SIGINT/SIGTERM. */
import type { Config } from "../config.ts";
import { startProxy } from "../compose.ts";
import { displayUrl } from "../domain/redact.ts";
import { isLoopbackHost } from "../http/loopback.ts";
import type { CommandIO } from "./io.ts";
import { version } from "./usage.ts";

/** Resolves with the exit code when the server has stopped. */
export async function serve(config: Config, io: CommandIO): Promise<number> {
  // Store problems (and their end) reach stderr through the loggers, once: not here as well.
  const started = await startProxy(config);
  if (!started.ok) {
    io.err(`openrouter-proxy: ${started.message}`);
    return 2;
  }
  const { proxy } = started;

  // The signal handlers go in before the "listening" line is printed: a supervisor (or a test)
  // may send SIGTERM the moment it reads that line, and with no handler yet the default action
  // kills the process without saving key state (seen in test/cli.test.ts about half the time).
  const stopped = new Promise<number>((resolve) => {
    let stopping = false;
    const onSignal = (signal: NodeJS.Signals) => {
      if (stopping) {
        io.err(`${signal} again: exiting now`);
        process.exit(130);
      }
      stopping = true;
      io.out(`${signal}: finishing requests in flight (up to ${config.SHUTDOWN_GRACE_SECONDS} s), then saving key state`);
      proxy.stop().then(
        () => resolve(0),
        (error: unknown) => {
          io.err(`error while stopping: ${error instanceof Error ? error.message : String(error)}`);
          resolve(1);
        },
      );
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
  });

  io.out(`openrouter-proxy ${version} listening on ${proxy.url}/v1 (upstream ${displayUrl(config.OPENROUTER_BASE_URL)})`);
  io.out(
    proxy.keyCount === 0
      ? `no keys in ${config.KEYS_FILE} yet: run \`openrouter-proxy add-key\` (or put one in the file, see keys.json.example); it is picked up without a restart`
      : `${proxy.keyCount} key${proxy.keyCount === 1 ? "" : "s"} from ${config.KEYS_FILE}, rotation ${config.ROTATION}`,
  );
  const clients = proxy.clients.directory.size;
  if (clients > 0) io.out(`${clients} client key${clients === 1 ? "" : "s"} from ${config.KEYS_FILE}: /v1 needs one${config.PROXY_API_KEYS ? " (or one of PROXY_API_KEYS)" : ""}`);
  // An open proxy on a shared address answers only to the names it knows (http/front-door.ts):
  // say which, or the first client that uses the machine's LAN name gets a 421 out of the blue.
  if (!config.PROXY_API_KEYS && !isLoopbackHost(config.HOST) && !proxy.clients.gate.inUse()) {
    const names = ["localhost", "127.0.0.0/8", "[::1]", config.HOST, ...(config.ALLOWED_HOSTS ?? [])];
    io.out(`open proxy (no PROXY_API_KEYS): it answers only to the Host names ${names.join(", ")}; add the names your clients use to ALLOWED_HOSTS`);
  }
  return stopped;
}
