/**
 * Running built applets (dist/bin/<name>) as processes, the way a runtime
 * does: CNI_* environment, config on stdin, optionally inside a namespace
 * that plays the host.
 * @module
 */

import { parseResult, toCurrentResult } from "../../lib/cni/spec/convert.ts";
import type { Result } from "../../lib/cni/spec/schemas.ts";
import { assertEquals } from "./assert.ts";
import { type ProcessOutput, spawnOutput, type TestNetns } from "./netns.ts";

/** Where `deno task build` puts the applet symlinks. */
export const DIST_BIN = new URL("../../dist/bin/", import.meta.url).pathname.replace(/\/$/, "");
/** Debian's reference plugins, the oracle for differential tests. */
export const REFERENCE_BIN = "/usr/lib/cni";

/** True when the reference plugins are installed. */
export const haveReference = (() => {
  try {
    return Deno.statSync(`${REFERENCE_BIN}/host-local`).isFile;
  } catch {
    return false;
  }
})();

/** What one plugin run printed and how it ended. */
export interface PluginRun extends ProcessOutput {
  /** stdout parsed as JSON, when it is JSON. */
  json: Record<string, unknown> | undefined;
}

/** Options for {@link runApplet}. */
export interface RunAppletOptions {
  env: Record<string, string>;
  stdin?: string | object;
  /** Run inside this namespace (the fake host). */
  host?: TestNetns;
  /** Directory holding the plugin; dist/bin by default. */
  bin?: string;
  /** Extra arguments (cnitool). */
  args?: string[];
}

/** Runs plugin `name` and returns its output; never throws on a non-zero exit. */
export async function runApplet(name: string, options: RunAppletOptions): Promise<PluginRun> {
  const program = `${options.bin ?? DIST_BIN}/${name}`;
  const argv = options.host
    ? ["ip", "netns", "exec", options.host.name, program, ...(options.args ?? [])]
    : [program, ...(options.args ?? [])];
  const stdin = typeof options.stdin === "object" ? JSON.stringify(options.stdin) : options.stdin;
  const out = await spawnOutput(argv[0]!, argv.slice(1), { env: options.env, stdin });
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(out.stdout);
  } catch {
    json = undefined;
  }
  return { ...out, json };
}

/** The CNI_* environment for one attachment. */
export function cniEnv(
  command: string,
  attachment: {
    containerId?: string;
    netns?: string;
    ifname?: string;
    args?: string;
    path?: string;
  },
): Record<string, string> {
  return {
    CNI_COMMAND: command,
    CNI_CONTAINERID: attachment.containerId ?? "ctr1",
    CNI_NETNS: attachment.netns ?? "",
    CNI_IFNAME: attachment.ifname ?? "eth0",
    CNI_ARGS: attachment.args ?? "",
    CNI_PATH: attachment.path ?? DIST_BIN,
  };
}

/** One attachment as a runtime names it. */
export interface Attachment {
  containerId?: string;
  netns: string;
  ifname?: string;
  args?: string;
}

/** Runs one command of a plugin for attachment `at` inside the fake host `host`. */
export type HostRunner = (
  command: string,
  host: TestNetns,
  at: Attachment,
  conf: Record<string, unknown> | string,
  bin?: string,
) => Promise<PluginRun>;

/**
 * The {@link HostRunner} of plugin `name`: cnikit's, finding its delegates
 * in dist/bin and then among the reference plugins, or (`bin` =
 * {@link REFERENCE_BIN}) the reference's with only reference delegates.
 */
export function hostRunner(name: string): HostRunner {
  return (command, host, at, conf, bin) =>
    runApplet(name, {
      env: cniEnv(command, {
        ...at,
        path: bin === REFERENCE_BIN ? REFERENCE_BIN : `${DIST_BIN}:${REFERENCE_BIN}`,
      }),
      stdin: conf,
      host,
      ...(bin ? { bin } : {}),
    });
}

/** Asserts that `run` exited 0 (showing what it printed when not) and returns it. */
export function assertSuccess<T extends ProcessOutput>(run: T): T {
  assertEquals(run.code, 0, run.stdout + run.stderr);
  return run;
}

/** `conf` with the result of `add` as `prevResult`, for CHECK. */
export function withPrev(conf: Record<string, unknown>, add: PluginRun): Record<string, unknown> {
  return { ...conf, prevResult: add.json };
}

/** A result of any version in the 1.x shape (0.1.0/0.2.0 lose the interfaces). */
export function currentResult(run: PluginRun, version: string): Result {
  return toCurrentResult(parseResult(run.json, version));
}

/** The spec versions every conformance loop covers. */
export const ALL_TEST_VERSIONS = [
  "0.1.0",
  "0.2.0",
  "0.3.0",
  "0.3.1",
  "0.4.0",
  "1.0.0",
  "1.1.0",
] as const;
