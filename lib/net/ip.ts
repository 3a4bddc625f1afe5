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
  /** The SELinux context `ip` runs in (see `RunOptions.execLabel`). */
  execLabel?: string;
}

const BATCH_SPACE = /[ \t\r\n]/;

/**
 * `arg` as one word of a batch line, or undefined when no line can carry
 * it. `ip`, `tc` and `bridge` read a batch line with no escapes at all: everything
 * from the first `#` is a comment, even inside quotes; a line ending in a
 * backslash continues on the next; words split at blanks, and a word that
 * begins with `'` or `"` runs to the next same quote. A backslash-escaped
 * name is therefore read with its backslashes, and a name with `#` is cut.
 */
function batchWord(arg: string): string | undefined {
  if (/[#\n\0]/.test(arg)) return undefined;
  if (arg !== "" && !BATCH_SPACE.test(arg) && !/^['"]/.test(arg) && !arg.endsWith("\\")) {
    return arg;
  }
  if (!arg.includes('"')) return `"${arg}"`;
  if (!arg.includes("'")) return `'${arg}'`;
  return undefined;
}

/** The text of one batch line, or undefined when an argument cannot be written in one. */
function batchLine(command: IpCommand): string | undefined {
  const words: string[] = [];
  for (const arg of command) {
    const word = batchWord(arg);
    if (word === undefined) return undefined;
    words.push(word);
  }
  return words.join(" ");
}

function parseJsonLines(stdout: string): unknown[] {
  return stdout.split("\n").filter((line) => line.startsWith("[") || line.startsWith("{"))
    .map((line) => JSON.parse(line));
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
 * the parsed output of each command that printed JSON, in order. When an
 * argument (a name with `#`, a path with both quote characters) cannot be
 * written in a batch line, every command runs as its own process with a
 * plain argument vector instead: slower, but each name reaches the kernel
 * exactly as given, with the same order, `force` and error semantics.
 */
export async function iprouteBatch(
  tool: "ip" | "tc" | "bridge",
  commands: IpCommand[],
  options: IpOptions = {},
): Promise<unknown[]> {
  if (commands.length === 0) return [];
  const lines = commands.map(batchLine);
  if (lines.some((line) => line === undefined)) return await oneByOne(tool, commands, options);
  const flags = [
    "-json",
    ...(options.flags ?? []),
    ...(options.force ? ["-force"] : []),
    "-batch",
    "-",
  ];
  const stdin = lines.join("\n") + "\n";
  const { code, stdout, stderr } = await run(tool, flags, {
    stdin,
    allowFailure: true,
    ...(options.netns ? { netns: options.netns } : {}),
    ...(options.execLabel !== undefined ? { execLabel: options.execLabel } : {}),
  });
  const outputs = parseJsonLines(stdout);
  if (code !== 0) {
    const failed = stderr.match(/Command failed -:(\d+)/);
    const line = failed ? Number(failed[1]) : undefined;
    throw new IpBatchError(
      `${tool} failed: ${stderr.trim() || `exit status ${code}`}`,
      `${tool} ${flags.join(" ")}\n${stdin}`,
      line,
      outputs,
      line === undefined ? undefined : commands[line - 1],
    );
  }
  return outputs;
}

/** {@link iprouteBatch} as one process per command, reporting failures as `-batch` does. */
async function oneByOne(
  tool: "ip" | "tc" | "bridge",
  commands: IpCommand[],
  options: IpOptions,
): Promise<unknown[]> {
  const flags = ["-json", ...(options.flags ?? [])];
  const outputs: unknown[] = [];
  const errors: string[] = [];
  let first: number | undefined;
  for (const [i, command] of commands.entries()) {
    const { code, stdout, stderr } = await run(tool, [...flags, ...command], {
      allowFailure: true,
      ...(options.netns ? { netns: options.netns } : {}),
    });
    outputs.push(...parseJsonLines(stdout));
    if (code === 0) continue;
    errors.push(`${stderr.trim() || `exit status ${code}`}\nCommand failed -:${i + 1}`);
    first ??= i + 1;
    if (!options.force) break;
  }
  if (first === undefined) return outputs;
  throw new IpBatchError(
    `${tool} failed: ${errors.join("\n")}`,
    commands.map((c) => `${tool} ${[...flags, ...c].map((a) => JSON.stringify(a)).join(" ")}`)
      .join("\n"),
    first,
    outputs,
  );
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
  /** The failing command, when `ip` named its line. */
  readonly command: IpCommand | undefined;

  constructor(
    msg: string,
    details: string,
    line: number | undefined,
    outputs: unknown[],
    command?: IpCommand,
  ) {
    super(ErrorCode.ioFailure, msg, details);
    this.line = line;
    this.outputs = outputs;
    this.command = command;
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
