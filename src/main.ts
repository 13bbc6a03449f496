#!/usr/bin/env bun
/**
 * Entry point. Kept tiny on purpose: before anything else is loaded, `serve` may re-execute
 * itself (see below), and the first process should not pay for loading the whole program.
 * The command line itself is in cli/run.ts; this is the only place that exits.
 */

/**
 * Bun's fetch sends at most 256 requests at once (BUN_CONFIG_MAX_HTTP_REQUESTS), read only when
 * the process starts: the 257th concurrent stream would wait in a queue. So `serve` re-executes
 * itself once, in place (same pid, same signals), with the limit raised, unless the user set it.
 */
function raiseUpstreamConcurrency(argv: string[]): void {
  if (process.env.BUN_CONFIG_MAX_HTTP_REQUESTS || typeof process.execve !== "function") return;
  if (!isServe(argv)) return;
  const compiled = Bun.main.startsWith("/$bunfs/");
  const args = compiled ? [process.execPath, ...argv] : [process.execPath, ...process.execArgv, Bun.main, ...argv];
  process.execve(process.execPath, args, { ...process.env, BUN_CONFIG_MAX_HTTP_REQUESTS: "4096" });
}

/** Whether argv asks for the server: no command word (or `serve`), and no --help or --version. */
function isServe(argv: string[]): boolean {
  const words: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (["--help", "-h", "--version", "-v"].includes(arg)) return false;
    if (arg === "--port" || arg === "--host") i++; // their values are not command words
    else if (!arg.startsWith("-")) words.push(arg);
  }
  return words.length === 0 || words[0] === "serve";
}

const argv = process.argv.slice(2);
raiseUpstreamConcurrency(argv);
const { run } = await import("./cli/run.ts");
process.exitCode = await run(argv);
// Servers and timers are closed by then; exit explicitly so a stray handle cannot keep us alive.
process.exit();
