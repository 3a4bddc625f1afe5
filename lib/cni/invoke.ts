/**
 * Finding and running plugins: lookup in CNI_PATH, exec with the CNI
 * environment and a deadline, decoding of their errors and results, and
 * delegation (IPAM) from one plugin to another. When the delegate is another
 * cnikit applet it runs in this process: the same code, one process start
 * less.
 * @module
 */

import { CniError, ErrorCode } from "./errors.ts";
import { baseName } from "./paths.ts";
import { traced } from "./trace.ts";
import { type CmdArgs, type Command, type Plugin, runPlugin } from "./skel.ts";
import { parseResult, toCurrentResult } from "./spec/convert.ts";
import type { Result } from "./spec/schemas.ts";

/** A plugin by name, its code loaded on first use. */
export interface PluginLoader {
  readonly name: string;
  load(): Promise<Plugin>;
}

const inProcess = new Map<string, PluginLoader>();
let selfPath: string | undefined;

/**
 * Registers the applets that can run in this process when a lookup finds a
 * file that is this very executable under another name.
 */
export function registerInProcess(executable: string, plugins: Iterable<PluginLoader>): void {
  selfPath = realPathOrUndefined(executable);
  for (const plugin of plugins) inProcess.set(plugin.name, plugin);
}

function realPathOrUndefined(path: string): string | undefined {
  try {
    return Deno.realPathSync(path);
  } catch {
    return undefined;
  }
}

function isRegularFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/**
 * Finds `name` in the directories of `paths`: the first regular file wins
 * (`isFile` decides what one is). A name with a path separator or `..` is
 * refused.
 */
export function findPlugin(
  name: string,
  paths: readonly string[],
  isFile: (path: string) => boolean = isRegularFile,
): string {
  if (name === "") throw new CniError(ErrorCode.invalidNetworkConfig, "no plugin name provided");
  if (name.includes("/") || name === ".." || name === ".") {
    throw new CniError(ErrorCode.invalidNetworkConfig, `invalid plugin name: ${name}`);
  }
  if (paths.length === 0) throw new CniError(ErrorCode.invalidEnvironment, "no paths provided");
  for (const dir of paths) {
    const candidate = `${dir}/${name}`;
    if (isFile(candidate)) return candidate;
  }
  throw new CniError(
    ErrorCode.invalidNetworkConfig,
    `failed to find plugin "${name}" in path [${paths.join(" ")}]`,
  );
}

/** Options for {@link execPlugin}. */
export interface ExecOptions {
  /** Kill the plugin after this many milliseconds. */
  timeoutMs?: number;
}

/** The per-call CNI_* values a runtime sets (libcni's `invoke.Args`). */
export interface CniVars {
  command: Command | "VERSION";
  containerId?: string;
  netns?: string;
  ifname?: string;
  /** CNI_ARGS pairs, joined as `k=v;k=v`. */
  args?: readonly (readonly [string, string])[];
  path?: readonly string[];
}

/**
 * The environment a runtime gives a plugin: its own environment with all six
 * CNI_* variables set on top, even the empty ones, so inherited values never
 * leak through.
 */
export function cniEnvironment(
  vars: CniVars,
  base: Record<string, string> = Deno.env.toObject(),
): Record<string, string> {
  return {
    ...base,
    CNI_COMMAND: vars.command,
    CNI_CONTAINERID: vars.containerId ?? "",
    CNI_NETNS: vars.netns ?? "",
    CNI_ARGS: (vars.args ?? []).map(([k, v]) => `${k}=${v}`).join(";"),
    CNI_IFNAME: vars.ifname ?? "",
    CNI_PATH: (vars.path ?? []).join(":"),
  };
}

const NO_MESSAGE = "netplugin failed with no error message";

async function readStream(
  stream: ReadableStream<Uint8Array>,
  abandon: Promise<void>,
): Promise<Uint8Array> {
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  // A killed plugin's own children can hold the pipe open; stop waiting then.
  abandon.then(() => reader.cancel().catch(() => {}));
  for (;;) {
    const { done, value } = await reader.read().catch(() => ({ done: true, value: undefined }));
    if (done || !value) break;
    chunks.push(value);
  }
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** The error a failed plugin reported, decoded as libcni decodes it. */
export function pluginFailure(
  code: number | null,
  signal: string | null,
  stdout: string,
  stderr: string,
): CniError {
  const status = signal
    ? `signal: ${signal === "SIGKILL" ? "killed" : signal}`
    : `exit status ${code}`;
  if (stdout.trim() !== "") {
    try {
      const e = JSON.parse(stdout) as { code?: unknown; msg?: unknown; details?: unknown };
      return new CniError(
        typeof e.code === "number" ? e.code : ErrorCode.unknown,
        typeof e.msg === "string" ? e.msg : "",
        typeof e.details === "string" ? e.details : "",
      );
    } catch (err) {
      return new CniError(
        ErrorCode.unknown,
        `netplugin failed but error parsing its diagnostic message ${JSON.stringify(stdout)}: ${
          (err as Error).message
        }`,
      );
    }
  }
  if (stderr !== "") {
    return new CniError(
      ErrorCode.unknown,
      `netplugin failed: ${JSON.stringify(stderr)}: ${status}`,
    );
  }
  return new CniError(ErrorCode.unknown, `${NO_MESSAGE}: ${status}`);
}

/**
 * Runs the plugin at `path` with `env` (the complete environment) and
 * `stdin`; returns its stdout, or throws the error it reported. A plugin
 * that is this executable runs in-process.
 */
export async function execPlugin(
  path: string,
  env: Record<string, string>,
  stdin: Uint8Array,
  options: ExecOptions = {},
): Promise<string> {
  const loader = selfPath && inProcess.get(baseName(path));
  if (loader && realPathOrUndefined(path) === selfPath) {
    const local = await loader.load();
    const run = traced(
      `in-process ${local.name} ${env.CNI_COMMAND}`,
      () => runPlugin(local, { env, readStdin: () => Promise.resolve(stdin) }),
    );
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      if (options.timeoutMs === undefined) return;
      // An in-process applet cannot be killed; the caller stops waiting for it.
      timer = setTimeout(
        () => reject(new CniError(ErrorCode.unknown, `${NO_MESSAGE}: context deadline exceeded`)),
        options.timeoutMs,
      );
    });
    try {
      const output = await Promise.race([run, deadline]);
      if (output.code !== 0) throw pluginFailure(output.code, null, output.stdout, "");
      return output.stdout;
    } finally {
      // Touching the timer globals loads Deno's Node timers (~4 ms a start).
      if (timer !== undefined) clearTimeout(timer);
    }
  }
  for (let attempt = 0;; attempt++) {
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(path, {
        env,
        clearEnv: true,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
    } catch (e) {
      // libcni retries "text file busy": a plugin binary still being written.
      if (attempt < 5 && /text file busy/i.test(String(e))) {
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      throw new CniError(ErrorCode.ioFailure, `failed to exec ${path}: ${(e as Error).message}`);
    }
    let abandon = () => {};
    const abandoned = new Promise<void>((resolve) => abandon = resolve);
    let killed = false;
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => {
      killed = true;
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      abandon();
    }, options.timeoutMs);
    try {
      const outputs = Promise.all([
        readStream(child.stdout, abandoned),
        readStream(child.stderr, abandoned),
      ]);
      const writer = child.stdin.getWriter();
      await writer.write(stdin).catch(() => {});
      await writer.close().catch(() => {});
      const [status, [out, err]] = await Promise.all([child.status, outputs]);
      if (killed) throw new CniError(ErrorCode.unknown, `${NO_MESSAGE}: signal: killed`);
      const stdout = new TextDecoder().decode(out);
      const stderr = new TextDecoder().decode(err);
      if (!status.success) throw pluginFailure(status.code, status.signal, stdout, stderr);
      if (err.length) await Deno.stderr.write(err);
      return stdout;
    } finally {
      if (timer !== undefined) clearTimeout(timer);
      abandon();
    }
  }
}

/**
 * How a runtime finds and runs plugins (libcni's `invoke.Exec`): the seam
 * where tests put an in-memory fake instead of executables.
 */
export interface PluginExec {
  findPlugin(name: string, paths: readonly string[]): string;
  execPlugin(
    path: string,
    env: Record<string, string>,
    stdin: Uint8Array,
    options?: ExecOptions,
  ): Promise<string>;
}

/** The real thing: files in CNI_PATH run as processes (or in-process when they are cnikit). */
export const processExec: PluginExec = { findPlugin, execPlugin };

/** Decodes the stdout of a successful ADD: `{}` or a missing cniVersion take the config's version. */
export function decodeAddOutput(stdout: string, configVersion: string): Result {
  let value: unknown;
  try {
    value = JSON.parse(stdout);
  } catch (e) {
    throw new CniError(
      ErrorCode.decodingFailure,
      `failed to unmarshal raw result: ${(e as Error).message}`,
    );
  }
  return toCurrentResult(parseResult(value, configVersion));
}

/**
 * Runs a delegate plugin (usually IPAM) with the caller's environment and
 * config, changing only CNI_COMMAND. Returns the result for ADD.
 */
export async function delegate(
  type: string,
  command: Command,
  args: CmdArgs,
): Promise<Result | undefined> {
  if (args.path.length === 0) {
    throw new CniError(ErrorCode.invalidEnvironment, "required env variables [CNI_PATH] missing");
  }
  const path = findPlugin(type, args.path);
  const stdout = await execPlugin(path, { ...args.env, CNI_COMMAND: command }, args.stdin);
  return command === "ADD" ? decodeAddOutput(stdout, args.cniVersion) : undefined;
}
