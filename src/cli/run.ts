/**
 * The command line: argv and the environment become a command and a config. With main.ts, the
 * only place that reads `process.env` or parses argv.
 */
import { existsSync, readFileSync } from "node:fs";
import { processIO, type CommandContext } from "./io.ts";
import { clientCommands } from "./client-commands.ts";
import { addKeyCommand, checkKeysCommand, enableKeyCommand, listKeysCommand, removeKeyCommand } from "./key-commands.ts";
import { serve } from "./serve.ts";
import { exportKeysCommand, importKeysCommand } from "./key-transfer-commands.ts";
import { redisCliStore, redisClientCliStore } from "../store/redis/cli-store.ts";
import { commandHelp, usage, version } from "./usage.ts";
import { loadConfig, parseDotenv, type Config, type EnvInput } from "../config.ts";
// Errors below echo what was typed through echoInput: a key pasted as a command or an argument
// must not come back in full (stderr ends up in terminals' scrollback and CI logs).
import { echoInput } from "../keys/key-view.ts";
import { maskKey } from "../domain/key-identity.ts";
import { describeFileProblem } from "../store/file/file-problem.ts";

const io = processIO();

type FlagKind = "value" | "switch";

interface Parsed {
  positional: string[];
  flags: Map<string, string | true>;
}

interface CommandSpec {
  flags: Record<string, FlagKind>;
  /** How many positional arguments: [least, most]. */
  positional: [number, number];
  run: (config: Config, args: Parsed) => Promise<number>;
}

// With REDIS_URL every key and client subcommand works on Redis (store/redis/cli-store.ts).
const keyContext = (config: Config): CommandContext => ({ config, io, store: config.REDIS_URL === undefined ? undefined : redisCliStore(config, config.REDIS_URL) });
const clientContext = (config: Config): CommandContext => ({ config, io, store: config.REDIS_URL === undefined ? undefined : redisClientCliStore(config, config.REDIS_URL) });
const flagValue = (args: Parsed, name: string) => {
  const value = args.flags.get(name);
  return typeof value === "string" ? value : undefined;
};

const commands: Record<string, CommandSpec> = {
  serve: { flags: { "--port": "value", "--host": "value" }, positional: [0, 0], run: (config) => serve(config, io) },
  "add-key": {
    flags: { "--label": "value", "--no-verify": "switch" },
    positional: [0, 1],
    run: (config, args) => {
      const label = flagValue(args, "--label");
      return addKeyCommand(keyContext(config), {
        ...(args.positional[0] === undefined ? {} : { key: args.positional[0] }),
        ...(label === undefined ? {} : { label }),
        verify: !args.flags.has("--no-verify"),
      });
    },
  },
  "list-keys": { flags: { "--json": "switch" }, positional: [0, 0], run: (config, args) => listKeysCommand(keyContext(config), { json: args.flags.has("--json") }) },
  "remove-key": { flags: {}, positional: [1, 1], run: (config, args) => removeKeyCommand(keyContext(config), args.positional[0] as string) },
  "enable-key": { flags: {}, positional: [1, 1], run: (config, args) => enableKeyCommand(keyContext(config), args.positional[0] as string) },
  "import-keys": { flags: {}, positional: [1, 1], run: (config, args) => importKeysCommand(keyContext(config), args.positional[0] as string) },
  "export-keys": { flags: {}, positional: [1, 1], run: (config, args) => exportKeysCommand(keyContext(config), args.positional[0] as string) },
  "check-keys": { flags: { "--json": "switch" }, positional: [0, 0], run: (config, args) => checkKeysCommand(keyContext(config), { json: args.flags.has("--json") }) },
  // add-client, list-clients, set-client, remove-client, rotate-client (client-commands.ts)
  ...Object.fromEntries(
    Object.entries(clientCommands).map(([name, { flags, run }]): [string, CommandSpec] => [
      name,
      { flags, positional: name === "list-clients" ? [0, 0] : [1, 1], run: (config, args) => run(clientContext(config), args.positional[0] ?? "", args.flags) },
    ]),
  ),
};

const globalFlags: Record<string, FlagKind> = { "--help": "switch", "-h": "switch", "--version": "switch", "-v": "switch" };

/** Every flag any command takes, so flags may stand before or after the command word. */
const allFlags: Record<string, FlagKind> = Object.assign({}, globalFlags, ...Object.values(commands).map((spec) => spec.flags));

function parseArgs(argv: string[]): { command: string; args: Parsed } | { error: string } {
  const words: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg.startsWith("-") && arg.length > 1) {
      const [name = "", inline] = arg.split(/=(.*)/s, 2) as [string, string | undefined];
      const kind = allFlags[name];
      if (!kind) return { error: `unknown option ${echoInput(name)}` };
      if (kind === "value") {
        const value = inline ?? argv[++i];
        if (value === undefined) return { error: `${name} needs a value` };
        flags.set(name, value);
      } else {
        flags.set(name, true);
      }
    } else {
      words.push(arg);
    }
  }
  const [command = "serve", ...positional] = words;
  const spec = commands[command];
  for (const name of flags.keys()) {
    if (spec && !(name in globalFlags) && !(name in spec.flags)) return { error: `${command} does not take ${name}` };
  }
  return { command, args: { positional, flags } };
}

/** `.env` in the working directory; variables already in the environment win. */
function environment(): { ok: true; env: EnvInput } | { ok: false; message: string } {
  let fromFile: EnvInput = {};
  try {
    if (existsSync(".env")) fromFile = parseDotenv(readFileSync(".env", "utf8"));
  } catch (error) {
    return { ok: false, message: describeFileProblem("read", ".env", error) }; // a folder named .env, no permission
  }
  return { ok: true, env: { ...fromFile, ...process.env } };
}

async function main(argv: string[]): Promise<number> {
  const parsed = parseArgs(argv);
  if ("error" in parsed) {
    io.err(`openrouter-proxy: ${parsed.error}\n\n${usage()}`);
    return 2;
  }
  const { command, args } = parsed;
  if (args.flags.has("--version") || args.flags.has("-v")) {
    io.out(`openrouter-proxy ${version} (${process.platform}-${process.arch}, bun ${Bun.version})`);
    return 0;
  }
  if (command === "help" || args.flags.has("--help") || args.flags.has("-h")) {
    const topic = command === "help" ? args.positional[0] : command === "serve" && !argv.includes("serve") ? undefined : command;
    if (topic !== undefined && !commandHelp[topic]) {
      io.err(`openrouter-proxy: unknown command ${echoInput(topic)}\n\n${usage()}`);
      return 2;
    }
    io.out(topic ? (commandHelp[topic] as string) : usage());
    return 0;
  }
  const spec = commands[command];
  if (!spec) {
    io.err(`openrouter-proxy: unknown command ${echoInput(command)}\n\n${usage()}`);
    return 2;
  }
  const [least, most] = spec.positional;
  if (args.positional.length < least || args.positional.length > most) {
    const got = args.positional.length === 0 ? "none" : args.positional.map(echoInput).join(" ");
    const takes = most === 0 ? "no arguments" : least === most ? `${least} argument${least === 1 ? "" : "s"}` : `${least} to ${most} arguments`;
    io.err(`openrouter-proxy: ${command} takes ${takes} (got ${got})\n\n${commandHelp[command] ?? usage()}`);
    return 2;
  }

  const loaded = environment();
  if (!loaded.ok) {
    io.err(`openrouter-proxy: ${loaded.message}`);
    return 2;
  }
  const { env } = loaded;
  const port = flagValue(args, "--port");
  const host = flagValue(args, "--host");
  const config = loadConfig({ ...env, ...(port === undefined ? {} : { PORT: port }), ...(host === undefined ? {} : { HOST: host }) });
  if (!config.ok) {
    io.err(`openrouter-proxy: ${config.message}`);
    return 2;
  }
  return spec.run(config.config, args);
}

/**
 * Runs a command line to its end and returns the exit status. Commands report what a user can
 * cause (a bad file, a read-only folder) as one line of their own; anything that still escapes is
 * one line too, exit 1: a stack trace in a terminal tells a user nothing they can act on.
 */
export async function run(argv: string[]): Promise<number> {
  try {
    return await main(argv);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    // Whatever looks like a key is masked: the message may quote input.
    io.err(`openrouter-proxy: ${(message.split("\n", 1)[0] ?? "").replace(/sk-[\w-]+/gi, maskKey)}`);
    return 1;
  }
}
