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
import {
  type CmdArgs,
  delegate,
  goStruct,
  invalidConfig,
  NETCONF_FIELDS,
  parseConf,
  type Plugin,
  pluginMain,
  type Result,
} from "../../mod.ts";

/** The plugin's keys, decoded as every cnikit plugin decodes its own (Go's rules). */
const SampleConf = goStruct({
  ...NETCONF_FIELDS,
  anotherAwesomeArg: z.optional(z.string()),
  myAwesomeFlag: z.optional(z.boolean()),
  runtimeConfig: z.optional(goStruct({
    sample: z.optional(z.record(z.string(), z.unknown())),
  })),
});
type SampleConf = z.infer<typeof SampleConf>;

function parseConfig(args: CmdArgs): SampleConf {
  const conf = parseConf(SampleConf, args.config);
  if (!conf.anotherAwesomeArg) throw invalidConfig("anotherAwesomeArg must be specified");
  return conf;
}

/** The sample plugin. */
export const sample: Plugin = {
  name: "sample",

  add(args: CmdArgs): Promise<Result> {
    parseConfig(args);
    if (!args.prevResult) throw invalidConfig("must be called as chained plugin");
    if (!args.prevResult.ips?.length) {
      throw invalidConfig("got no container IPs");
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
