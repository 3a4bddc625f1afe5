#!/usr/bin/env -S deno run -A
/**
 * hello: the smallest plugin built on cnikit's skeleton. ADD prints the
 * result it was handed as prevResult, or, first in a chain, a minimal result
 * naming the interface; every call is logged to stderr, which a runtime
 * passes on to its own stderr.
 *
 * Run it by hand:
 * ```sh
 * echo '{"cniVersion":"1.1.0","name":"demo","type":"hello"}' |
 *   CNI_COMMAND=ADD CNI_CONTAINERID=c1 CNI_NETNS=/run/netns/x CNI_IFNAME=eth0 \
 *   examples/hello/hello.ts
 * ```
 * @module
 */

import { type CmdArgs, type Plugin, pluginMain, type Result } from "../../mod.ts";

function log(args: CmdArgs, note: string): void {
  console.error(
    `hello: ${args.command} network=${args.config.name} container=${args.containerId} ` +
      `ifname=${args.ifname} netns=${args.netns || "-"}: ${note}`,
  );
}

/** The hello plugin. */
export const hello: Plugin = {
  name: "hello",
  // The minimal result has no IP, which 0.1.0/0.2.0 results cannot express;
  // the skel refuses those versions with code 1 before `add` runs.
  versions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],

  add(args: CmdArgs): Promise<Result> {
    if (args.prevResult) {
      log(args, "passing prevResult on");
      return Promise.resolve(args.prevResult);
    }
    log(args, "first in the chain, minimal result");
    // Results are written in the newest shape; the skel converts them to the
    // config's version.
    return Promise.resolve({
      cniVersion: "1.1.0",
      interfaces: [{ name: args.ifname, sandbox: args.netns }],
    });
  },

  del(args: CmdArgs): Promise<void> {
    log(args, "nothing to remove");
    return Promise.resolve();
  },

  check(args: CmdArgs): Promise<void> {
    log(args, args.prevResult ? "prevResult present" : "no prevResult");
    return Promise.resolve();
  },
};

if (import.meta.main) await pluginMain(hello);
