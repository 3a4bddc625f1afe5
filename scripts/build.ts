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
import { CHUNK_DIR } from "../lib/cni/paths.ts";
import { assertNoCycle, chunkToScript, LOAD, loaderSource } from "./chunk_scripts.ts";

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

/**
 * The launcher's own code: find the folder of chunks beside the real file
 * (a symlink to the launcher may live in another folder) and run main from
 * there through the chunk loader (scripts/chunk_scripts.ts says why not as
 * modules). Deno's caches are off for the launcher (see the #! line); the
 * user's DENO_DIR is put back here, so plugins started from cnikit see it.
 */
const STUB = `const e=Deno.env,d=e.get("CNIKIT_DENO_DIR");e.delete("CNIKIT_DENO_DIR");` +
  `d?e.set("DENO_DIR",d):e.delete("DENO_DIR");` +
  `const r=Deno.realPathSync(decodeURIComponent(new URL(import.meta.url).pathname)),` +
  `D=r.slice(0,r.lastIndexOf("/")+1)+"${CHUNK_DIR}/";` + loaderSource("D") +
  `await ${LOAD}("./main.js");\n`;

/**
 * Rewrites every chunk in `dir` into the launcher's script form, after
 * checking that the chunks import each other without a cycle.
 */
async function chunksToScripts(dir: string): Promise<void> {
  const chunks = new Map<string, string>();
  for await (const entry of Deno.readDir(dir)) {
    chunks.set(entry.name, await Deno.readTextFile(join(dir, entry.name)));
  }
  assertNoCycle(chunks);
  for (const [name, code] of chunks) {
    await Deno.writeTextFile(join(dir, name), chunkToScript(name, code));
  }
}

/** Linux reads at most this much of a `#!` line (BINPRM_BUF_SIZE), and cuts the rest silently. */
const SHEBANG_MAX = 255;

/**
 * The launcher: a small file that runs this machine's deno on the chunks of
 * `deno bundle --code-splitting`, so a plugin parses only its own code and
 * the parts it shares, never the other applets' (a daemon, an etcd client).
 */
async function buildLauncher(out: string): Promise<void> {
  await deno([
    "bundle",
    "--quiet",
    "--minify",
    "--platform",
    "deno",
    "--code-splitting",
    "--outdir",
    join(dirname(out), CHUNK_DIR),
    "main.ts",
  ]);
  await chunksToScripts(join(dirname(out), CHUNK_DIR));
  // `env -S` splits the flags; the absolute deno path matters because
  // runtimes exec plugins with a minimal PATH, or none. DENO_DIR=/dev/null
  // keeps every plugin process off Deno's shared SQLite caches (mmap'd
  // -shm files that 50 parallel plugin starts would share, and a SIGBUS
  // when one is truncated or the disk is full): nothing is downloaded or
  // type-checked at run time, and the code cache did not speed start-up.
  // MALLOC_ARENA_MAX=1: Deno's few helper threads (async file I/O, child
  // processes) share the main malloc arena instead of each touching one of
  // its own, 1.2-1.5 MiB of a bridge ADD's peak RSS (tests/bench/memory.ts);
  // the children inherit it, and ip/iptables/nft are single-threaded.
  const shebang =
    `#!/usr/bin/env -S CNIKIT_DENO_DIR=\${DENO_DIR} DENO_DIR=/dev/null MALLOC_ARENA_MAX=1 ${Deno.execPath()} ` +
    `run -A --no-config --no-lock --no-prompt --quiet --no-code-cache ${V8_FLAGS} --ext=js\n`;
  if (shebang.length > SHEBANG_MAX) {
    throw new Error(`the launcher's #! line is longer than Linux reads (${shebang.length} bytes)`);
  }
  await Deno.writeTextFile(out, shebang + STUB);
  await Deno.chmod(out, 0o755);
}

async function main(): Promise<void> {
  // Build beside dist/bin and swap it in, so tests running from dist/bin
  // meanwhile never see a half-written tree.
  const staging = `${bin}.new-${Deno.pid}`;
  await Deno.mkdir(staging, { recursive: true });
  const out = join(staging, "cnikit");
  const kind = await buildCompiled(out) ? "compiled" : "launcher";
  if (kind === "launcher") await buildLauncher(out);
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
      kind === "compiled" ? "deno compile binary" : `launcher with its chunks in ${CHUNK_DIR}/`
    })`,
  );
}

await main();
