/**
 * ipvlan: the container gets an ipvlan link on a master (a host link, or
 * one inside the container with `linkInContainer`), sharing the master's
 * MAC. The master may also come from the previous plugin of a chain (the
 * one interface its result names), and the addresses from its result when
 * there is no `ipam`.
 *
 * The link is made and configured as macvlan's (lib/net/container_link):
 * one `ip` process where the master is, one inside the container.
 * @module
 */

import * as z from "zod/mini";
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
import { defaultRouteInterface, getLink } from "../../../lib/net/link.ts";
import { requireNetns } from "../../../lib/net/netns.ts";

const MODES = ["l2", "l3", "l3s"] as const;

const IpvlanConf = goStruct({
  ...NETCONF_FIELDS,
  master: z.optional(z.string()),
  mode: z.optional(z.string()),
  mtu: z.optional(GoInt),
  linkInContainer: z.optional(z.boolean()),
});
type IpvlanConf = z.infer<typeof IpvlanConf>;

function loadConf(args: CmdArgs): IpvlanConf {
  return parseConf(IpvlanConf, args.config);
}

/** The kernel's name of the configured mode ("" is l2), or code 7. */
function modeOf(conf: IpvlanConf): string {
  return linkMode("ipvlan", MODES, conf.mode);
}

/**
 * The master: configured; else, chained, the one named interface of the
 * previous result; else the link of the default route where the master
 * must be.
 */
async function masterOf(conf: IpvlanConf, args: CmdArgs): Promise<string> {
  if (conf.master) return conf.master;
  const prev = args.prevResult;
  if (prev) {
    const only = prev.interfaces?.length === 1 ? prev.interfaces[0]!.name : "";
    if (!only) {
      throw invalidConfig("chained master failure. PrevResult lacks a single named interface");
    }
    return only;
  }
  return await defaultRouteInterface(conf.linkInContainer ? args.netns : undefined);
}

async function add(args: CmdArgs): Promise<Result> {
  const conf = loadConf(args);
  const mode = modeOf(conf);
  const inContainer = conf.linkInContainer ?? false;
  const ipamType = conf.ipam?.type ?? "";
  // Chained without IPAM: the previous plugin's addresses, when it has some.
  const given = !ipamType && args.prevResult?.ips?.length ? args.prevResult : undefined;
  if (!ipamType && !given) {
    throw invalidConfig(
      "ipvlan: an ipam section with a type is required without a prevResult's IPs",
    );
  }
  requireNetns(args.netns);
  // Found first, so that the link's batch is spawned before IPAM starts its work.
  const master = await masterOf(conf, args);
  return await attachContainerLink(args, {
    make: () =>
      createContainerLink(args.netns, args.ifname, {
        what: "ipvlan",
        inContainer,
        master,
        commands: (name, netns) => [
          linkAddCommand({
            name,
            kind: "ipvlan",
            master,
            ...(conf.mtu ? { mtu: conf.mtu } : {}),
            ...(inContainer ? {} : { netns }),
            typeArgs: ["mode", mode],
          }),
        ],
      }),
    ipamType,
    ...(given ? { given } : {}),
    ...(conf.dns ? { dns: conf.dns } : {}),
    setup: ANNOUNCE_ADDRESSES,
  });
}

async function del(args: CmdArgs): Promise<void> {
  // The master is not needed (the reference looks for it, and fails without a default route).
  await detachContainerLink(args, loadConf(args).ipam?.type ?? "");
}

async function check(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  const mode = modeOf(conf);
  await checkAttachedLink(args, {
    plugin: "ipvlan",
    kind: "ipvlan",
    ipamType: conf.ipam?.type ?? "",
    // Unset, the master came from the default route or a chain that CHECK cannot see again.
    ...(conf.master ? { master: conf.master } : {}),
    masterInContainer: conf.linkInContainer ?? false,
    verify: expectMode("Container IPVlan mode", mode),
  });
}

/** STATUS: the IPAM plugin's, and a configured master must exist here. */
async function status(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  if (conf.ipam?.type) await delegate(conf.ipam.type, "STATUS", args);
  if (conf.master && !conf.linkInContainer && !await getLink(conf.master)) {
    throw new CniError(ErrorCode.pluginNotAvailable, `master "${conf.master}" not found`);
  }
}

async function gc(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  if (conf.ipam?.type) await delegate(conf.ipam.type, "GC", args);
}

/** The ipvlan plugin. */
export const ipvlan: Plugin = { name: "ipvlan", add, del, check, status, gc };
