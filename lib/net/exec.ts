/**
 * The one way cnikit runs a program: an argument array (never a shell),
 * optional stdin, optionally inside a network namespace, with failures turned
 * into CNI errors that carry the command line and its stderr.
 * @module
 */

import { CniError, ErrorCode } from "../cni/errors.ts";
import { withNetnsSync } from "./netns.ts";
import { traced } from "../cni/trace.ts";
import { spawn } from "./spawn.ts";

/** What a finished command left behind. */
export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options for {@link run}. */
export interface RunOptions {
  /** Written to the child's stdin, then closed. */
  stdin?: string;
  /** Run the child inside this netns (a path such as /run/netns/x). */
  netns?: string;
  /** Return a non-zero exit instead of throwing. */
  allowFailure?: boolean;
  /**
   * The SELinux context the child runs in (setexeccon): written to the
   * forking thread's `attr/exec` just before the spawn, cleared after.
   */
  execLabel?: string;
}

const EXEC_ATTR = "/proc/thread-self/attr/exec";

/** Runs `start` with the calling thread's exec label set to `label`. */
function labelled<T>(label: string, start: () => T): T {
  try {
    Deno.writeTextFileSync(EXEC_ATTR, label);
  } catch (e) {
    throw new CniError(ErrorCode.ioFailure, `failed set socket label: ${(e as Error).message}`);
  }
  try {
    return start();
  } finally {
    // The label would otherwise stick to every later child of this thread.
    try {
      Deno.writeTextFileSync(EXEC_ATTR, "");
    } catch { /* nothing was set */ }
  }
}

const SEARCH_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];
const resolved = new Map<string, string>();

/**
 * The absolute path of a tool. Runtimes may exec plugins with no PATH at all,
 * so the usual system directories are searched after PATH.
 */
export function toolPath(name: string): string {
  const cached = resolved.get(name);
  if (cached) return cached;
  const dirs = [...(Deno.env.get("PATH") ?? "").split(":").filter(Boolean), ...SEARCH_DIRS];
  for (const dir of dirs) {
    const candidate = `${dir}/${name}`;
    try {
      if (Deno.statSync(candidate).isFile) {
        resolved.set(name, candidate);
        return candidate;
      }
    } catch { /* not here */ }
  }
  throw new CniError(ErrorCode.internal, `cannot find "${name}" in PATH or the system directories`);
}

/**
 * STATUS of a plugin that runs `tools`: fails with code 50 (plugin not
 * available) naming the first one that cannot be found.
 */
export function requireTools(...tools: string[]): Promise<void> {
  try {
    for (const tool of tools) toolPath(tool);
  } catch (e) {
    return Promise.reject(new CniError(ErrorCode.pluginNotAvailable, (e as Error).message));
  }
  return Promise.resolve();
}

/** Runs `cmd args…` and waits for it. Throws a CniError (code 5) on failure unless `allowFailure`. */
export async function run(
  cmd: string,
  args: string[],
  options: RunOptions = {},
): Promise<ExecResult> {
  const path = toolPath(cmd);
  // The child inherits the namespace of the thread that starts it, so only
  // the spawn itself has to happen inside; waiting happens back home.
  const unlabelled = () => spawn(path, args, options.stdin);
  const start = options.execLabel === undefined
    ? unlabelled
    : () => labelled(options.execLabel!, unlabelled);
  const child = options.netns ? withNetnsSync(options.netns, start) : start();
  const output = await traced(`${cmd} ${args.join(" ")}`, () => child.wait());
  const result = {
    code: output.code,
    stdout: new TextDecoder().decode(output.stdout),
    stderr: new TextDecoder().decode(output.stderr),
  };
  if (result.code !== 0 && !options.allowFailure) {
    throw new CniError(
      ErrorCode.ioFailure,
      `${cmd} failed: ${result.stderr.trim() || `exit status ${result.code}`}`,
      [cmd, ...args].join(" ") + (options.stdin ? `\n${options.stdin}` : ""),
    );
  }
  return result;
}
