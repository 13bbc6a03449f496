/**
 * `bun run release [TARGET…]`: cross-compiles the binary for every platform users download
 * (or only the named ones, e.g. `bun run release linux-x64`) into dist/release/, with a
 * SHA256SUMS file in `sha256sum -c` format. Bun fetches each target's runtime from the npm
 * registry the first time.
 */
import { mkdir, readdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

const targets = {
  "linux-x64": "bun-linux-x64",
  "linux-arm64": "bun-linux-arm64",
  "darwin-x64": "bun-darwin-x64",
  "darwin-arm64": "bun-darwin-arm64",
  "windows-x64": "bun-windows-x64",
} as const;
type TargetName = keyof typeof targets;

const outDir = "dist/release";
const requested = process.argv.slice(2);
const unknown = requested.filter((name) => !(name in targets));
if (unknown.length > 0) {
  console.error(`release: unknown target ${unknown.join(", ")}; known: ${Object.keys(targets).join(", ")}`);
  process.exit(2);
}
const chosen = (requested.length > 0 ? requested : Object.keys(targets)) as TargetName[];

await rm(outDir, { recursive: true, force: true });
await mkdir(outDir, { recursive: true });
for (const name of chosen) {
  const file = `openrouter-proxy-${name}${name.startsWith("windows") ? ".exe" : ""}`;
  const started = performance.now();
  // --bytecode: the program ships precompiled for JavaScriptCore, so a start skips parsing it
  // (ready in about half the time; it needs --format=esm for a program with top-level await).
  const build = Bun.spawnSync(["bun", "build", "--compile", "--bytecode", "--format=esm", "--minify", `--target=${targets[name]}`, "src/main.ts", "--outfile", join(outDir, file)], {
    stdout: "ignore",
    stderr: "pipe",
  });
  if (build.exitCode !== 0) {
    console.error(`release: building ${name} failed:\n${build.stderr.toString()}`);
    process.exit(1);
  }
  console.log(`built ${join(outDir, file)} in ${Math.round(performance.now() - started)} ms`);
}

const files = (await readdir(outDir)).filter((file) => file.startsWith("openrouter-proxy-")).sort();
const sums = await Promise.all(
  files.map(async (file) => {
    const hasher = new Bun.CryptoHasher("sha256");
    hasher.update(await Bun.file(join(outDir, file)).arrayBuffer());
    return `${hasher.digest("hex")}  ${file}\n`;
  }),
);
await writeFile(join(outDir, "SHA256SUMS"), sums.join(""));
console.log(`wrote ${join(outDir, "SHA256SUMS")} (${files.length} files)`);
