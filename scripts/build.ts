/**
 * Builds dist/bin/cnikit and one symlink per applet.
 *
 * Where Deno's `denort` runtime can be had (DENORT_BIN, Deno's cache, or a
 * download on an online machine) the result is a real `deno compile` binary.
 * Otherwise it is the minified bundle behind a shebang that runs it with this
 * machine's deno: the same multicall behaviour, one file, no network or cache
 * needed at run time. dist/build-info.json says which one was built.
 * @module
 */

import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { APPLET_NAMES } from "../applets.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
const bin = join(dist, "bin");
const target = `${Deno.build.arch}-unknown-linux-gnu`;

function denoDir(): string {
  return Deno.env.get("DENO_DIR") ?? join(Deno.env.get("HOME") ?? "/root", ".cache", "deno");
}

/** True when denort is here already; otherwise compiling has to download it. */
function denortAtHand(): boolean {
  if (Deno.env.get("DENORT_BIN")) return true;
  const zip = join(denoDir(), "dl", "release", `v${Deno.version.deno}`, `denort-${target}.zip`);
  try {
    return Deno.statSync(zip).isFile;
  } catch {
    return false;
  }
}

async function deno(args: string[]): Promise<void> {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: root,
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  if (code !== 0) {
    throw new Error(`deno ${args[0]} failed: ${new TextDecoder().decode(stderr).trim()}`);
  }
}

/**
 * V8 flags for a short-lived process: without the JIT and V8's helper
 * threads a plugin call starts ~3 ms sooner and burns less CPU, which is
 * what 50 parallel ADDs on a small node are short of.
 */
const V8_FLAGS = "--v8-flags=--jitless,--single-threaded";

/**
 * Compiles; returns false when denort could not be downloaded (an offline
 * machine), so the launcher is built instead.
 */
async function buildCompiled(out: string): Promise<boolean> {
  try {
    await deno(["compile", "-A", "--quiet", V8_FLAGS, "--output", out, "main.ts"]);
    return true;
  } catch (e) {
    if (denortAtHand()) throw e;
    // The innermost of deno's numbered causes says why (e.g. no DNS).
    const causes = (e as Error).message.split("\n").filter((l) => /^\s*\d+: [a-z]/i.test(l));
    const why = causes.at(-1)?.replace(/^\s*\d+: /, "") ?? "unknown error";
    console.error(`cnikit: deno compile cannot get denort here (${why}); building the launcher`);
    return false;
  }
}

async function buildLauncher(out: string, workDir: string): Promise<void> {
  const bundle = join(workDir, "cnikit.js");
  await deno(["bundle", "--quiet", "--minify", "--platform", "deno", "-o", bundle, "main.ts"]);
  // `env -S` splits the flags; the absolute deno path matters because
  // runtimes exec plugins with a minimal PATH, or none.
  const shebang =
    `#!/usr/bin/env -S ${Deno.execPath()} run -A --no-config --no-lock --no-prompt --quiet ${V8_FLAGS} --ext=js\n`;
  await Deno.writeTextFile(out, shebang + await Deno.readTextFile(bundle));
  await Deno.chmod(out, 0o755);
  await Deno.remove(bundle);
}

async function main(): Promise<void> {
  // Build beside dist/bin and swap it in, so tests running from dist/bin
  // meanwhile never see a half-written tree.
  const staging = `${bin}.new-${Deno.pid}`;
  await Deno.mkdir(staging, { recursive: true });
  const out = join(staging, "cnikit");
  const kind = await buildCompiled(out) ? "compiled" : "launcher";
  if (kind === "launcher") await buildLauncher(out, staging);
  for (const name of APPLET_NAMES) await Deno.symlink("cnikit", join(staging, name));
  const old = `${bin}.old-${Deno.pid}`;
  await Deno.rename(bin, old).catch(() => {});
  await Deno.rename(staging, bin);
  await Deno.remove(old, { recursive: true }).catch(() => {});
  const info = {
    kind,
    deno: Deno.version.deno,
    applets: APPLET_NAMES,
    builtAt: new Date().toISOString(),
  };
  await Deno.writeTextFile(join(dist, "build-info.json"), JSON.stringify(info, null, 2) + "\n");
  console.error(
    `cnikit: built dist/bin/cnikit (${
      kind === "compiled" ? "deno compile binary" : "bundle launcher"
    })`,
  );
}

await main();
