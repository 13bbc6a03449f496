#!/usr/bin/env bun
/**
 * Entry point: argv and the environment become a command and a config. The only module that
 * reads `process.env`, parses argv or exits.
 */
import { existsSync, readFileSync } from "node:fs";
import { serve, type CommandIO } from "./cli/serve.ts";
import { commandHelp, usage, version } from "./cli/usage.ts";
import { loadConfig, parseDotenv, type EnvInput } from "./config.ts";

const io: CommandIO = {
  out: (line) => process.stdout.write(`${line}\n`),
  err: (line) => process.stderr.write(`${line}\n`),
};

interface ParsedArgs {
  command: string;
  positional: string[];
  flags: Map<string, string | true>;
}

const flagsWithValue = new Set(["--port", "--host"]);

function parseArgs(argv: string[]): ParsedArgs | { error: string } {
  const positional: string[] = [];
  const flags = new Map<string, string | true>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg.startsWith("--")) {
      const [name = "", inline] = arg.split("=", 2) as [string, string | undefined];
      if (flagsWithValue.has(name)) {
        const value = inline ?? argv[++i];
        if (value === undefined) return { error: `${name} needs a value` };
        flags.set(name, value);
      } else if (["--help", "--version"].includes(name)) {
        flags.set(name, true);
      } else {
        return { error: `unknown option ${arg}` };
      }
    } else if (arg === "-h") {
      flags.set("--help", true);
    } else if (arg === "-v") {
      flags.set("--version", true);
    } else {
      positional.push(arg);
    }
  }
  const [command = "serve", ...rest] = positional;
  return { command, positional: rest, flags };
}

/** `.env` in the working directory; variables already in the environment win. */
function environment(): EnvInput {
  const fromFile = existsSync(".env") ? parseDotenv(readFileSync(".env", "utf8")) : {};
  return { ...fromFile, ...process.env };
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  if ("error" in args) {
    io.err(`openrouter-proxy: ${args.error}\n\n${usage()}`);
    return 2;
  }
  if (args.flags.has("--version")) {
    io.out(`openrouter-proxy ${version} (${process.platform}-${process.arch}, bun ${Bun.version})`);
    return 0;
  }
  if (args.command === "help" || args.flags.has("--help")) {
    const topic = args.command === "help" ? args.positional[0] : args.command === "serve" ? undefined : args.command;
    if (topic && !commandHelp[topic]) {
      io.err(`openrouter-proxy: unknown command ${topic}\n\n${usage()}`);
      return 2;
    }
    io.out(topic ? (commandHelp[topic] as string) : usage());
    return 0;
  }

  const env = environment();
  const port = args.flags.get("--port");
  const host = args.flags.get("--host");
  const config = loadConfig({
    ...env,
    ...(typeof port === "string" ? { PORT: port } : {}),
    ...(typeof host === "string" ? { HOST: host } : {}),
  });
  if (!config.ok) {
    io.err(`openrouter-proxy: ${config.message}`);
    return 2;
  }

  switch (args.command) {
    case "serve":
      if (args.positional.length > 0) {
        io.err(`openrouter-proxy: serve takes no arguments (got ${args.positional.join(" ")})\n\n${usage()}`);
        return 2;
      }
      return serve(config.config, io);
    default:
      io.err(`openrouter-proxy: unknown command ${args.command}\n\n${usage()}`);
      return 2;
  }
}

process.exitCode = await main(process.argv.slice(2));
// Servers and timers are closed by then; exit explicitly so a stray handle cannot keep us alive.
process.exit();
