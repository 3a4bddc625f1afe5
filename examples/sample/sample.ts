#!/usr/bin/env -S deno run -A
/**
 * sample: a chained plugin in the manner of the reference "sample" plugin.
 * It needs a previous plugin's result with at least one IP, passes that
 * result through unchanged, and requires the config key `anotherAwesomeArg`.
 * Its own keys are validated with zod, as every cnikit plugin does.
 *
 * ```json
 * { "cniVersion": "1.1.0", "name": "mynet", "plugins": [
 *   { "type": "ptp", "ipam": { "type": "host-local", "subnet": "10.1.0.0/24" } },
 *   { "type": "sample", "anotherAwesomeArg": "yes" } ] }
 * ```
 * @module
 */

import * as z from "zod/mini";
import { CniError, ErrorCode, invalidConfig } from "../../lib/cni/errors.ts";
import { delegate } from "../../lib/cni/invoke.ts";
import { type CmdArgs, type Plugin, pluginMain } from "../../lib/cni/skel.ts";
import { describeIssues, type Result } from "../../lib/cni/spec/schemas.ts";

/** The plugin's own configuration keys; the common ones are the skel's business. */
const SampleConf = z.looseObject({
  anotherAwesomeArg: z.optional(z.string()),
  myAwesomeFlag: z.optional(z.boolean()),
  ipam: z.optional(z.looseObject({ type: z.optional(z.string()) })),
  runtimeConfig: z.optional(z.looseObject({
    sample: z.optional(z.record(z.string(), z.unknown())),
  })),
});
type SampleConf = z.infer<typeof SampleConf>;

function parseConfig(args: CmdArgs): SampleConf {
  const parsed = SampleConf.safeParse(args.config);
  if (!parsed.success) {
    throw invalidConfig(
      `failed to parse network configuration: ${describeIssues(parsed.error)}`,
    );
  }
  if (!parsed.data.anotherAwesomeArg) throw invalidConfig("anotherAwesomeArg must be specified");
  return parsed.data;
}

/** The sample plugin. */
export const sample: Plugin = {
  name: "sample",

  add(args: CmdArgs): Promise<Result> {
    parseConfig(args);
    if (!args.prevResult) throw invalidConfig("must be called as chained plugin");
    if (!args.prevResult.ips?.length) {
      throw new CniError(ErrorCode.invalidNetworkConfig, "got no container IPs");
    }
    // A real chained plugin would configure something here, e.g. on the
    // interface prevResult names.
    return Promise.resolve(args.prevResult);
  },

  del(args: CmdArgs): Promise<void> {
    parseConfig(args);
    return Promise.resolve();
  },

  check(args: CmdArgs): Promise<void> {
    parseConfig(args);
    if (!args.prevResult) throw invalidConfig("CHECK needs the result of ADD as prevResult");
    return Promise.resolve();
  },

  async status(args: CmdArgs): Promise<void> {
    const conf = parseConfig(args);
    // A plugin that delegates IPAM is only ready when its IPAM plugin is.
    if (conf.ipam?.type) await delegate(conf.ipam.type, "STATUS", args);
  },
};

if (import.meta.main) await pluginMain(sample);
