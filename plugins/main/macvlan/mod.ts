/**
 * macvlan: the container gets a macvlan link on a master (a host link, or
 * one inside the container with `linkInContainer`), with its own MAC on the
 * master's segment. Without an IPAM type the attachment is plain L2.
 *
 * ADD is two `ip` processes: one where the master is, which shows the
 * master and makes the link under a temporary name straight inside the
 * container (while IPAM allocates), one inside the container, which renames
 * and configures it (lib/net/container_link).
 * @module
 */

import * as z from "zod/mini";
import { parseCniArgs } from "../../../lib/cni/args.ts";
import { GoInt, goStruct, NETCONF_FIELDS, parseConf } from "../../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig } from "../../../lib/cni/errors.ts";
import { delegate } from "../../../lib/cni/invoke.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";
import {
  ANNOUNCE_ADDRESSES,
  attachContainerLink,
  checkAttachedLink,
  createContainerLink,
  detachContainerLink,
  expectMode,
  linkAddCommand,
  linkMode,
} from "../../../lib/net/container_link.ts";
import type { LinkInfo } from "../../../lib/net/ip.ts";
import {
  defaultRouteInterface,
  getLink,
  type MacRequest,
  requestedMac,
} from "../../../lib/net/link.ts";
import { requireNetns } from "../../../lib/net/netns.ts";

const MODES = ["bridge", "private", "vepa", "passthru"] as const;

const MacvlanConf = goStruct({
  ...NETCONF_FIELDS,
  master: z.optional(z.string()),
  mode: z.optional(z.string()),
  mtu: z.optional(GoInt),
  mac: z.optional(z.string()),
  linkInContainer: z.optional(z.boolean()),
  bcqueuelen: z.optional(GoInt.check(z.nonnegative(), z.lte(0xffffffff))),
  runtimeConfig: z.optional(goStruct({ mac: z.optional(z.string()) })),
});
type MacvlanConf = z.infer<typeof MacvlanConf>;

function loadConf(args: CmdArgs): MacvlanConf {
  return parseConf(MacvlanConf, args.config);
}

/** The kernel's name of the configured mode ("" is bridge), or code 7. */
function modeOf(conf: MacvlanConf): string {
  return linkMode("macvlan", MODES, conf.mode);
}

/** The MAC asked for, in the reference's order: the config, CNI_ARGS `MAC`, runtimeConfig. */
function macRequest(conf: MacvlanConf, args: CmdArgs): MacRequest | undefined {
  let request: MacRequest | undefined = conf.mac ? { value: conf.mac, from: "config" } : undefined;
  const env = parseCniArgs(args.args, ["MAC"]).MAC;
  if (env) request = { value: env, from: "CNI_ARGS" };
  if (conf.runtimeConfig?.mac) request = { value: conf.runtimeConfig.mac, from: "runtimeConfig" };
  return request;
}

/** The configured master, or the link of the default route where the master must be. */
async function masterOf(conf: MacvlanConf, netns: string): Promise<string> {
  return conf.master || await defaultRouteInterface(conf.linkInContainer ? netns : undefined);
}

/** The reference's bound: 0 (the master's) up to the master's own MTU. */
function checkMtu(mtu: number): (master: LinkInfo) => void {
  return (master) => {
    if (mtu < 0 || mtu > master.mtu) {
      throw invalidConfig(`invalid MTU ${mtu}, must be [0, master MTU(${master.mtu})]`);
    }
  };
}

async function add(args: CmdArgs): Promise<Result> {
  const conf = loadConf(args);
  const mode = modeOf(conf);
  const mac = requestedMac(macRequest(conf, args));
  const inContainer = conf.linkInContainer ?? false;
  const mtu = conf.mtu ?? 0;
  requireNetns(args.netns);
  // Found first, so that the link's batch is spawned before IPAM starts its work.
  const master = await masterOf(conf, args.netns);
  return await attachContainerLink(args, {
    make: () =>
      createContainerLink(args.netns, args.ifname, {
        what: "macvlan",
        inContainer,
        master,
        commands: (name, netns) => [
          linkAddCommand({
            name,
            kind: "macvlan",
            master,
            mtu,
            ...(mac ? { mac } : {}),
            ...(inContainer ? {} : { netns }),
            typeArgs: [
              "mode",
              mode,
              ...(conf.bcqueuelen ? ["bcqueuelen", String(conf.bcqueuelen)] : []),
            ],
          }),
        ],
      }, checkMtu(mtu)),
    ipamType: conf.ipam?.type ?? "",
    ...(conf.dns ? { dns: conf.dns } : {}),
    // With addresses, tell the segment about them at once, as the reference does.
    ...(conf.ipam?.type ? { setup: ANNOUNCE_ADDRESSES } : {}),
  });
}

async function del(args: CmdArgs): Promise<void> {
  // Nothing but the config's shape: the master need not exist any more.
  await detachContainerLink(args, loadConf(args).ipam?.type ?? "");
}

async function check(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  const mode = modeOf(conf);
  const inContainer = conf.linkInContainer ?? false;
  await checkAttachedLink(args, {
    plugin: "macvlan",
    kind: "macvlan",
    ipamType: conf.ipam?.type ?? "",
    master: await masterOf(conf, args.netns),
    masterInContainer: inContainer,
    verify: expectMode("container macvlan mode", mode),
  });
}

/**
 * STATUS: the IPAM plugin's, and the master must exist here (it cannot be
 * looked at inside a container that is not there yet).
 */
async function status(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  if (conf.ipam?.type) await delegate(conf.ipam.type, "STATUS", args);
  if (conf.linkInContainer) return;
  const master = await masterOf(conf, "").catch((e) => {
    throw new CniError(ErrorCode.pluginNotAvailable, (e as Error).message);
  });
  if (!await getLink(master)) {
    throw new CniError(ErrorCode.pluginNotAvailable, `master "${master}" not found`);
  }
}

async function gc(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  if (conf.ipam?.type) await delegate(conf.ipam.type, "GC", args);
}

/** The macvlan plugin. */
export const macvlan: Plugin = { name: "macvlan", add, del, check, status, gc };
