/**
 * tap: the container gets a persistent tap device (for a VM or a userspace
 * network stack inside it), optionally owned by a user and group, made
 * under an SELinux context, and enslaved to a bridge that already exists
 * inside the container. Without an IPAM type the attachment is plain L2.
 *
 * The tap is made inside the container under a temporary name, renamed and
 * configured there (lib/net/container_link): two `ip` processes.
 * @module
 */

import * as z from "zod/mini";
import { parseCniArgs } from "../../../lib/cni/args.ts";
import { GoInt, goStruct, NETCONF_FIELDS, parseConf } from "../../../lib/cni/conf.ts";
import { delegate } from "../../../lib/cni/invoke.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";
import {
  attachContainerLink,
  checkAttachedLink,
  createContainerLink,
  detachContainerLink,
} from "../../../lib/net/container_link.ts";
import type { IpCommand } from "../../../lib/net/ip.ts";
import { type MacRequest, requestedMac } from "../../../lib/net/link.ts";

const Uint32 = GoInt.check(z.nonnegative(), z.lte(0xffffffff));

const TapConf = goStruct({
  ...NETCONF_FIELDS,
  multiQueue: z.optional(z.boolean()),
  mtu: z.optional(GoInt),
  mac: z.optional(z.string()),
  owner: z.optional(Uint32),
  group: z.optional(Uint32),
  selinuxContext: z.optional(z.string()),
  bridge: z.optional(z.string()),
  runtimeConfig: z.optional(goStruct({ mac: z.optional(z.string()) })),
});
type TapConf = z.infer<typeof TapConf>;

function loadConf(args: CmdArgs): TapConf {
  return parseConf(TapConf, args.config);
}

/** The MAC asked for, in the reference's order: the config, CNI_ARGS `MAC`, runtimeConfig. */
function macRequest(conf: TapConf, args: CmdArgs): MacRequest | undefined {
  let request: MacRequest | undefined = conf.mac ? { value: conf.mac, from: "config" } : undefined;
  const env = parseCniArgs(args.args, ["MAC"]).MAC;
  if (env) request = { value: env, from: "CNI_ARGS" };
  if (conf.runtimeConfig?.mac) request = { value: conf.runtimeConfig.mac, from: "runtimeConfig" };
  return request;
}

/**
 * The commands that make tap `name`. The flags are the ones each of the
 * reference's two ways leaves on the device: with an owner and a group and
 * no SELinux context it uses netlink (vnet_hdr, and packet information
 * unless multi-queue), otherwise `ip tuntap` (neither).
 */
function tapCommands(conf: TapConf, name: string, mac: string | undefined): IpCommand[] {
  const viaNetlink = !conf.selinuxContext && conf.owner !== undefined &&
    conf.group !== undefined;
  const settings = [
    ...(conf.mtu ? ["mtu", String(conf.mtu)] : []),
    ...(mac ? ["address", mac] : []),
  ];
  return [
    [
      "tuntap",
      "add",
      "mode",
      "tap",
      "name",
      name,
      ...(viaNetlink ? ["vnet_hdr", ...(conf.multiQueue ? [] : ["pi"])] : []),
      ...(conf.multiQueue ? ["multi_queue"] : []),
      ...(conf.owner !== undefined ? ["user", String(conf.owner)] : []),
      ...(conf.group !== undefined ? ["group", String(conf.group)] : []),
    ],
    ...(settings.length ? [["link", "set", name, ...settings]] : []),
  ];
}

async function add(args: CmdArgs): Promise<Result> {
  const conf = loadConf(args);
  const mac = requestedMac(macRequest(conf, args));
  return await attachContainerLink(args, {
    make: () =>
      createContainerLink(args.netns, args.ifname, {
        what: "tap",
        inContainer: true,
        // Shown first so a missing bridge fails before the tap is made.
        ...(conf.bridge ? { master: conf.bridge, masterRole: "bridge" } : {}),
        commands: (name) => tapCommands(conf, name, mac),
        ...(conf.selinuxContext ? { execLabel: conf.selinuxContext } : {}),
      }),
    ipamType: conf.ipam?.type ?? "",
    ...(conf.dns ? { dns: conf.dns } : {}),
    setup: {
      ...(conf.bridge ? { before: [["link", "set", args.ifname, "master", conf.bridge]] } : {}),
      // With addresses, tell the segment about them at once, as the reference does.
      ...(conf.ipam?.type
        ? { sysctls: (name: string) => ({ [`net/ipv4/conf/${name}/arp_notify`]: "1" }) }
        : {}),
    },
  });
}

async function del(args: CmdArgs): Promise<void> {
  await detachContainerLink(args, loadConf(args).ipam?.type ?? "");
}

async function check(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  await checkAttachedLink(args, {
    plugin: "tap",
    kind: "tun",
    ipamType: conf.ipam?.type ?? "",
  });
}

async function status(args: CmdArgs): Promise<void> {
  const type = loadConf(args).ipam?.type;
  if (type) await delegate(type, "STATUS", args);
}

async function gc(args: CmdArgs): Promise<void> {
  const type = loadConf(args).ipam?.type;
  if (type) await delegate(type, "GC", args);
}

/** The tap plugin. */
export const tap: Plugin = { name: "tap", add, del, check, status, gc };
