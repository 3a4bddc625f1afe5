/**
 * The test suite on two kernels. The host run is `deno test --parallel` on every test file
 * except the kernel-feature files (those calling `requireKernel(...)`, see
 * tests/helpers/kernel_features.ts) whose features this machine's kernel lacks; the
 * second-kernel run is `deno test` on every kernel-feature file inside user-mode-linux
 * (scripts/uml_run.ts). A kernel-feature file thus always runs in the second kernel, and on the
 * host as well where the host has its features.
 *
 * ```sh
 * deno run -A scripts/test.ts [--host | --kernel] [--timeout S] [PATH...] [-- DENO_TEST_ARG...]
 * ```
 *
 * `--host` or `--kernel` does that run only. PATHs (files or directories) narrow the files;
 * with `--kernel`, files named one by one run in the second kernel whether or not they declare
 * a feature. Arguments after `--` go to both `deno test`s (`--filter`, ...). The exit status is
 * 0 when both runs passed. Each run ends with Deno's summary line; `.ci/run` adds them up.
 * @module
 */

import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  KERNEL_FEATURES,
  type KernelFeature,
  probeKernel,
} from "../tests/helpers/kernel_features.ts";
import { abortOnSignals, runInUml } from "./uml_run.ts";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
/** The second-kernel run's limit: far above its few minutes, far below CI's 90. */
const DEFAULT_TIMEOUT_S = 40 * 60;

/** Every `*_test.ts` under `dir`, relative to the root, sorted. */
function testFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of Deno.readDirSync(d)) {
      const p = join(d, e.name);
      if (e.isDirectory) walk(p);
      else if (e.isFile && e.name.endsWith("_test.ts")) out.push(relative(root, p));
    }
  };
  if (Deno.statSync(dir).isDirectory) walk(dir);
  else out.push(relative(root, dir));
  return out.sort();
}

/**
 * The features a test file declares with `requireKernel("a", "b")`, or undefined when it
 * declares none. Only string literals are allowed, so the file need not run to be placed.
 */
export function declaredFeatures(file: string, text: string): KernelFeature[] | undefined {
  const calls = [...text.matchAll(/\brequireKernel\(([^)]*)\)/g)];
  if (!calls.length) return undefined;
  if (calls.length > 1) throw new Error(`${file}: call requireKernel() once per file`);
  const args = calls[0]![1]!.split(",").map((a) => a.trim()).filter(Boolean);
  const features = args.map((a) => {
    const name = /^"([a-z0-9-]+)"$/.exec(a)?.[1];
    if (!name || !KERNEL_FEATURES.includes(name as KernelFeature)) {
      throw new Error(
        `${file}: requireKernel() takes string literals among ${KERNEL_FEATURES.join(", ")}; ` +
          `got ${a}`,
      );
    }
    return name as KernelFeature;
  });
  if (!features.length) throw new Error(`${file}: requireKernel() names no feature`);
  return features;
}

/** Host files and kernel-feature files (with their features) among `paths`. */
function classify(paths: string[]): { host: string[]; kernel: Map<string, KernelFeature[]> } {
  const host: string[] = [];
  const kernel = new Map<string, KernelFeature[]>();
  for (const file of [...new Set(paths.flatMap((p) => testFiles(resolve(root, p))))]) {
    const features = declaredFeatures(file, Deno.readTextFileSync(join(root, file)));
    if (features) kernel.set(file, features);
    else host.push(file);
  }
  return { host, kernel };
}

async function denoTest(args: string[]): Promise<number> {
  const { code } = await new Deno.Command(Deno.execPath(), {
    args: ["test", ...args],
    cwd: root,
    stdin: "null",
  }).spawn().status;
  return code;
}

const secs = (ms: number | undefined) => ms === undefined ? "-" : `${(ms / 1000).toFixed(1)} s`;

async function main(argv: string[]): Promise<number> {
  const dash = argv.indexOf("--");
  const denoArgs = dash < 0 ? [] : argv.slice(dash + 1);
  const own = dash < 0 ? argv : argv.slice(0, dash);
  let only: "host" | "kernel" | undefined;
  let timeout = DEFAULT_TIMEOUT_S;
  const paths: string[] = [];
  for (let i = 0; i < own.length; i++) {
    const a = own[i]!;
    if (a === "--host") only = "host";
    else if (a === "--kernel") only = "kernel";
    else if (a === "--timeout") timeout = Number(own[++i]);
    else if (a.startsWith("-")) throw new Error(`unknown option ${a}`);
    else paths.push(a);
  }
  const { host, kernel } = classify(paths.length ? paths : ["tests"]);
  // Files named one by one go to the second kernel on request, features or not.
  const named = paths.filter((p) => p.endsWith(".ts")).map((p) => relative(root, resolve(root, p)));
  const kernelFiles = only === "kernel" && named.length ? named : [...kernel.keys()];

  const signals = abortOnSignals();
  try {
    return await runBoth(only, host, kernel, kernelFiles, denoArgs, timeout, signals.signal);
  } finally {
    signals.dispose();
  }
}

async function runBoth(
  only: "host" | "kernel" | undefined,
  host: string[],
  kernel: Map<string, KernelFeature[]>,
  kernelFiles: string[],
  denoArgs: string[],
  timeout: number,
  signal: AbortSignal,
): Promise<number> {
  const status: number[] = [];
  if (only !== "kernel") {
    const features = [...new Set([...kernel.values()].flat())];
    const have = await probeKernel(features);
    const hostFiles = [
      ...host,
      ...[...kernel].filter(([, fs]) => fs.every((f) => have[f])).map(([f]) => f),
    ].sort();
    const lacking = features.filter((f) => !have[f]);
    if (lacking.length) {
      console.log(`host run: this kernel lacks ${lacking.join(", ")}; those files run in UML`);
    }
    if (hostFiles.length) {
      const started = performance.now();
      const code = await denoTest(["-P", "--parallel", ...denoArgs, ...hostFiles]);
      console.log(`host run: exit ${code} in ${secs(performance.now() - started)}`);
      status.push(code);
    }
  }
  if (signal.aborted) return 130;
  if (only !== "host" && kernelFiles.length) {
    // Type errors show here, fast; the guest then skips the check, which is slow there.
    const check = await new Deno.Command(Deno.execPath(), {
      args: ["check", ...kernelFiles],
      cwd: root,
    }).spawn().status;
    if (!check.success) {
      console.log("second kernel: not started, the files do not type-check");
      return 1;
    }
    const files = kernelFiles.length === 1 ? "1 file" : `${kernelFiles.length} files`;
    console.log(`second kernel: ${files} in user-mode-linux`);
    const result = await runInUml({
      cmd: [Deno.execPath(), "test", "-P", "--no-check", ...denoArgs, ...kernelFiles],
      cwd: root,
      timeoutSeconds: timeout,
      signal,
    });
    if (result.failure) console.log(`second kernel: ${result.failure}`);
    console.log(
      `second kernel: exit ${result.code}, boot ${secs(result.bootMs)}, ` +
        `tests ${secs(result.commandMs)}`,
    );
    status.push(result.code);
  }
  return status.find((c) => c !== 0) ?? 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
