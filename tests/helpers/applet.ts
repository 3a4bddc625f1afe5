/**
 * Running built applets (dist/bin/<name>) as processes, the way a runtime
 * does: CNI_* environment, config on stdin, optionally inside a namespace
 * that plays the host.
 * @module
 */

import type { TestNetns } from "./netns.ts";

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
export interface PluginRun {
  code: number;
  stdout: string;
  stderr: string;
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
  const child = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    env: options.env,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const stdout = new TextDecoder().decode(out.stdout);
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(stdout);
  } catch {
    json = undefined;
  }
  return { code: out.code, stdout, stderr: new TextDecoder().decode(out.stderr), json };
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
