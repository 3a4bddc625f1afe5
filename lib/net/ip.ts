/**
 * The iproute2 tools `ip`, `tc` and `bridge`: many commands in one `-batch -` process,
 * optionally inside a netns, with JSON output of the `show` commands parsed.
 * One spawn for a whole step is what keeps a plugin call fast.
 * @module
 */

import { CniError, ErrorCode } from "../cni/errors.ts";
import type { Rollback } from "../cni/rollback.ts";
import { run } from "./exec.ts";

/** One `ip` (or `tc`) command as an argument array, e.g. `["link", "set", "lo", "up"]`. */
export type IpCommand = string[];

/** Options for {@link ipBatch} and {@link iprouteBatch}. */
export interface IpOptions {
  /** Run inside this netns. */
  netns?: string;
  /** Keep going after a failing command (`ip -force`). */
  force?: boolean;
  /** Global flags for every command, e.g. `["-d"]` or `["-6"]`. */
  flags?: string[];
}

function quote(arg: string): string {
  return /^[^\s"'\\]+$/.test(arg) ? arg : `"${arg.replace(/["\\]/g, "\\$&")}"`;
}

/**
 * Runs `commands` in one `ip -json -batch -` and returns the parsed output
 * of each command that printed JSON, in order.
 */
export function ipBatch(commands: IpCommand[], options: IpOptions = {}): Promise<unknown[]> {
  return iprouteBatch("ip", commands, options);
}

/**
 * Runs `commands` in one `<tool> -json -batch -` (`ip`, `tc` or `bridge`,
 * which read batches the same way and name the failing line the same way) and returns
 * the parsed output of each command that printed JSON, in order.
 */
export async function iprouteBatch(
  tool: "ip" | "tc" | "bridge",
  commands: IpCommand[],
  options: IpOptions = {},
): Promise<unknown[]> {
  if (commands.length === 0) return [];
  const flags = [
    "-json",
    ...(options.flags ?? []),
    ...(options.force ? ["-force"] : []),
    "-batch",
    "-",
  ];
  const stdin = commands.map((c) => c.map(quote).join(" ")).join("\n") + "\n";
  const { code, stdout, stderr } = await run(tool, flags, {
    stdin,
    allowFailure: true,
    ...(options.netns ? { netns: options.netns } : {}),
  });
  const outputs = stdout.split("\n").filter((line) => line.startsWith("[") || line.startsWith("{"))
    .map((line) => JSON.parse(line));
  if (code !== 0) {
    const failed = stderr.match(/Command failed -:(\d+)/);
    throw new IpBatchError(
      `${tool} failed: ${stderr.trim() || `exit status ${code}`}`,
      `${tool} ${flags.join(" ")}\n${stdin}`,
      failed ? Number(failed[1]) : undefined,
      outputs,
    );
  }
  return outputs;
}

/**
 * A failed {@link iprouteBatch}: a code-5 CniError that also says which
 * command failed, so a caller can tell an expected failure (a link that
 * already exists) from a real one, and keeps the output of the commands
 * before it.
 */
export class IpBatchError extends CniError {
  /** The 1-based index of the first failing command, when `ip` named it. */
  readonly line: number | undefined;
  /** The parsed JSON output of the `show` commands that ran before it. */
  readonly outputs: unknown[];

  constructor(msg: string, details: string, line: number | undefined, outputs: unknown[]) {
    super(ErrorCode.ioFailure, msg, details);
    this.line = line;
    this.outputs = outputs;
  }

  /** What `ip` said, without the batch bookkeeping (`Command failed -:N`). */
  get said(): string {
    return this.message.replace(/^(ip|tc) failed: /, "").split("\n")
      .filter((line) => !line.startsWith("Command failed")).join("; ");
  }
}

/** One line of an undoable batch: the command, and the one that takes it back. */
export interface IpStep {
  run: IpCommand;
  undo?: IpCommand;
}

/**
 * Runs `steps` in one {@link ipBatch} and registers on `rollback` how to
 * take back the lines that took effect: all of them on success, those
 * before the failing line on failure (`ip` stops there). The undo runs
 * newest first in one `ip -force` batch, so one undo failing does not stop
 * the others.
 */
export async function ipSteps(
  steps: IpStep[],
  rollback: Rollback,
  options: IpOptions = {},
): Promise<unknown[]> {
  const undoFirst = (done: number) => {
    const undo = steps.slice(0, done).reverse().flatMap((s) => (s.undo ? [s.undo] : []));
    if (undo.length) {
      rollback.defer("ip commands", () => ipBatch(undo, { ...options, force: true }));
    }
  };
  try {
    const outputs = await ipBatch(steps.map((s) => s.run), options);
    undoFirst(steps.length);
    return outputs;
  } catch (e) {
    if (e instanceof IpBatchError) undoFirst((e.line ?? 1) - 1);
    throw e;
  }
}

/** An address as `ip -j addr` reports it. */
export interface AddrInfo {
  family: "inet" | "inet6";
  local: string;
  prefixlen: number;
  scope: string;
}

/** A link as `ip -j addr show` / `ip -j link show` reports it. */
export interface LinkInfo {
  ifindex: number;
  ifname: string;
  flags: string[];
  mtu: number;
  txqlen?: number;
  operstate?: string;
  address?: string;
  master?: string;
  link_type?: string;
  addr_info?: AddrInfo[];
  linkinfo?: { info_kind?: string; info_data?: Record<string, unknown> };
}
