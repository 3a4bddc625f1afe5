/**
 * The test suite on two kernels. The host run is `deno test --parallel` on every test file
 * except the kernel-feature files (those calling `requireKernel(...)`, see
 * tests/helpers/kernel_features.ts) whose features this machine's kernel lacks; the
 * second-kernel run is `deno test` on every kernel-feature file inside user-mode-linux
 * (scripts/uml_run.ts). A kernel-feature file thus always runs in the second kernel, and on the
 * host as well where the host has its features.
 *
 * ```sh
 * deno run -A scripts/test.ts [--host | --kernel] [--timeout S] [--jobs N] [PATH...] \
 *   [-- DENO_TEST_ARG...]
 * ```
 *
 * `--host` or `--kernel` does that run only. PATHs (files or directories) narrow the files;
 * with `--kernel`, files named one by one run in the second kernel whether or not they declare
 * a feature. The kernel files are split among N guests at once, balanced by file size (a guest
 * uses one CPU; default: the CPUs, at most 4), each stopped after `--timeout` seconds (40 min).
 * Arguments after `--` go to every `deno test` (`--filter`, ...). The exit status is 0 when
 * every run passed. Each run ends with Deno's summary line; `.ci/run` adds them up.
 * @module
 */

import { join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import {
  KERNEL_FEATURES,
  type KernelFeature,
  probeKernel,
} from "../tests/helpers/kernel_features.ts";
import { abortOnSignals, runInUml, secs, type UmlRunResult } from "./uml_run.ts";

const root = resolve(fileURLToPath(new URL("..", import.meta.url)));
/** The second-kernel run's limit: far above its few minutes, far below CI's 90. */
const DEFAULT_TIMEOUT_S = 40 * 60;
/** Guests at once at most: each takes one CPU and 1.5 GB. */
const MAX_GUESTS = 4;

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
  let isDirectory: boolean;
  try {
    isDirectory = Deno.statSync(dir).isDirectory;
  } catch {
    throw new Error(`no test file or directory ${relative(root, dir)}`);
  }
  if (isDirectory) walk(dir);
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

/** What one invocation runs. */
interface Plan {
  only?: "host" | "kernel";
  /** Files without a kernel-feature declaration. */
  host: string[];
  /** Kernel-feature files and the features each declares. */
  kernel: Map<string, KernelFeature[]>;
  /** What the second kernel runs. */
  kernelFiles: string[];
  denoArgs: string[];
  timeout: number;
  /** How many guests share the kernel files. */
  jobs: number;
}

async function main(argv: string[]): Promise<number> {
  const dash = argv.indexOf("--");
  const own = dash < 0 ? argv : argv.slice(0, dash);
  let only: Plan["only"];
  let timeout = DEFAULT_TIMEOUT_S;
  let jobs = Math.min(MAX_GUESTS, navigator.hardwareConcurrency || 1);
  const paths: string[] = [];
  for (let i = 0; i < own.length; i++) {
    const a = own[i]!;
    if (a === "--host") only = "host";
    else if (a === "--kernel") only = "kernel";
    else if (a === "--timeout") timeout = Number(own[++i]);
    else if (a === "--jobs") jobs = Number(own[++i]);
    else if (a.startsWith("-")) throw new Error(`unknown option ${a}`);
    else paths.push(a);
  }
  if (!(timeout > 0) || !(jobs >= 1)) throw new Error("--timeout and --jobs take positive numbers");
  const { host, kernel } = classify(paths.length ? paths : ["tests"]);
  // Files named one by one go to the second kernel on request, features or not.
  const named = paths.filter((p) => p.endsWith(".ts")).map((p) => relative(root, resolve(root, p)));
  const kernelFiles = only === "kernel" && named.length ? named : [...kernel.keys()];
  const plan: Plan = {
    ...(only ? { only } : {}),
    host,
    kernel,
    kernelFiles,
    denoArgs: dash < 0 ? [] : argv.slice(dash + 1),
    timeout,
    jobs,
  };

  const signals = abortOnSignals();
  try {
    const codes = [];
    if (plan.only !== "kernel") codes.push(await hostRun(plan));
    if (plan.only !== "host" && !signals.signal.aborted) {
      codes.push(await kernelRun(plan, signals.signal));
    }
    return signals.exitCode() ?? codes.find((c) => c !== 0) ?? 0;
  } finally {
    signals.dispose();
  }
}

/** Host files, and kernel-feature files whose features this kernel has, in one `deno test`. */
async function hostRun(plan: Plan): Promise<number> {
  const features = [...new Set([...plan.kernel.values()].flat())];
  const have = await probeKernel(features);
  const files = [
    ...plan.host,
    ...[...plan.kernel].filter(([, fs]) => fs.every((f) => have[f])).map(([f]) => f),
  ].sort();
  const lacking = features.filter((f) => !have[f]);
  if (lacking.length) {
    console.log(`host run: this kernel lacks ${lacking.join(", ")}; those files run in UML`);
  }
  if (!files.length) return 0;
  const started = performance.now();
  const code = await denoTest(["-P", "--parallel", ...plan.denoArgs, ...files]);
  console.log(`host run: exit ${code} in ${secs(performance.now() - started)}`);
  return code;
}

/**
 * `files` in `n` shards of about equal weight, a file's size standing for its cost (in the
 * second kernel the time goes to plugin calls, and a file's size grows with the calls it makes):
 * the heaviest first, each to the lightest shard so far.
 */
function balance(files: string[], n: number): string[][] {
  const shards = Array.from({ length: n }, () => ({ files: [] as string[], weight: 0 }));
  const weighed = files.map((f) => ({ f, weight: Deno.statSync(join(root, f)).size }));
  for (const { f, weight } of weighed.sort((a, b) => b.weight - a.weight)) {
    const lightest = shards.reduce((a, b) => (b.weight < a.weight ? b : a));
    lightest.files.push(f);
    lightest.weight += weight;
  }
  return shards.map((s) => s.files.sort());
}

/**
 * The kernel files in the second kernel: split among up to `jobs` guests, since a guest uses one
 * CPU. The first guest's output streams; the others' follows when they are done.
 */
async function kernelRun(plan: Plan, signal: AbortSignal): Promise<number> {
  if (!plan.kernelFiles.length) return 0;
  // Type errors show here, fast; the guests then skip the check, which is slow there.
  const check = await new Deno.Command(Deno.execPath(), {
    args: ["check", ...plan.kernelFiles],
    cwd: root,
  }).spawn().status;
  if (!check.success) {
    console.log("second kernel: not started, the files do not type-check");
    return 1;
  }
  const shards = balance(plan.kernelFiles, Math.min(plan.jobs, plan.kernelFiles.length));
  const count = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;
  console.log(
    `second kernel: ${count(plan.kernelFiles.length, "file")} in ` +
      `${count(shards.length, "user-mode-linux guest")}`,
  );
  const results = await Promise.all(shards.map((files, i) =>
    runInUml({
      cmd: [Deno.execPath(), "test", "-P", "--no-check", ...plan.denoArgs, ...files],
      cwd: root,
      timeoutSeconds: plan.timeout,
      signal,
      output: i === 0 ? "inherit" : "capture",
    }).then((result) => {
      if (i === 0) report(i, result);
      return result;
    })
  ));
  for (const [i, result] of results.entries()) {
    if (i === 0) continue;
    Deno.stdout.writeSync(new TextEncoder().encode(result.stdout ?? ""));
    Deno.stderr.writeSync(new TextEncoder().encode(result.stderr ?? ""));
    report(i, result);
  }
  return results.map((r) => r.code).find((c) => c !== 0) ?? 0;
}

function report(guest: number, result: UmlRunResult): void {
  if (result.failure) console.log(`second kernel #${guest + 1}: ${result.failure}`);
  console.log(
    `second kernel #${guest + 1}: exit ${result.code}, boot ${secs(result.bootMs)}, ` +
      `tests ${secs(result.commandMs)}`,
  );
}

if (import.meta.main) {
  Deno.exit(
    await main(Deno.args).catch((e) => {
      console.error(`scripts/test.ts: ${e instanceof Error ? e.message : e}`);
      return 2;
    }),
  );
}
