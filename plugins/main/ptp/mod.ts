/**
 * ptp: a veth pair per container, routed (not bridged) through the host.
 * Every container sees the same gateway address on its host-side veth and
 * reaches everything, its own subnet included, through it.
 * @module
 */

import * as z from "zod/mini";
import { checkContainerLink, containerInterface } from "../../../lib/net/check.ts";
import {
  dnsIsSet,
  GoInt,
  goStruct,
  NETCONF_FIELDS,
  parseConf,
  toDns,
} from "../../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig, settleAll } from "../../../lib/cni/errors.ts";
import { configureInterface } from "../../../lib/net/iface.ts";
import { delegate } from "../../../lib/cni/invoke.ts";
import type { IpCommand } from "../../../lib/net/ip.ts";
import {
  formatCIDR,
  formatIP,
  hostPrefix,
  type IPNet,
  networkOf,
  parseCIDR,
  parseIP,
} from "../../../lib/cni/ipnet.ts";
import { createVeth, deleteLink, deleteVethPair } from "../../../lib/net/link.ts";
import {
  checkMasq,
  gcMasq,
  parseMasqBackend,
  setupMasq,
  teardownMasq,
} from "../../../lib/netfilter/masq/mod.ts";
import { requireNetns } from "../../../lib/net/netns.ts";
import { withRollback } from "../../../lib/cni/rollback.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";
import { enableForwarding } from "../../../lib/net/sysctl.ts";

const PtpConf = goStruct({
  ...NETCONF_FIELDS,
  ipMasq: z.optional(z.boolean()),
  ipMasqBackend: z.optional(z.string()),
  mtu: z.optional(GoInt.check(z.nonnegative())),
});
type PtpConf = z.infer<typeof PtpConf>;

function loadConf(args: CmdArgs): PtpConf & { ipamType: string } {
  const conf = parseConf(PtpConf, args.config);
  if (!conf.ipam?.type) throw invalidConfig("ptp: an ipam section with a type is required");
  return { ...conf, ipamType: conf.ipam.type };
}

/** An IP of the IPAM result as address+prefix and gateway; ptp needs both. */
function addressOf(ip: NonNullable<Result["ips"]>[number]): { net: IPNet; gw: string } {
  const net = parseCIDR(ip.address)!;
  const gw = ip.gateway ? parseIP(ip.gateway) : null;
  if (!gw) {
    throw invalidConfig(`ptp: IPAM returned ${ip.address} without a gateway`);
  }
  return { net, gw: formatIP(gw) };
}

async function add(args: CmdArgs): Promise<Result> {
  const conf = loadConf(args);
  // Checked on ADD only: DEL removes the rules of both backends anyway, and
  // a DEL that can never succeed would wedge the runtime.
  const backend = parseMasqBackend(conf.ipMasqBackend);
  requireNetns(args.netns);
  return await withRollback(async (rollback) => {
    const ipam = (await delegate(conf.ipamType, "ADD", args))!;
    rollback.defer("IPAM reservation", () => delegate(conf.ipamType, "DEL", args));
    if (!ipam.ips?.length) {
      throw new CniError(ErrorCode.internal, "IPAM plugin returned missing IP config");
    }
    const addresses = ipam.ips.map(addressOf);
    enableForwarding(new Set(addresses.map((a) => a.net.ip.family)));

    const hostRoutes = (hostVeth: string): IpCommand[] =>
      addresses.flatMap(({ net, gw }) => [
        ["addr", "add", `${gw}/${net.ip.family === 4 ? 32 : 128}`, "dev", hostVeth],
        // replace: a route left by a crashed earlier ADD must not fail this one.
        ["route", "replace", formatCIDR(hostPrefix(net.ip)), "dev", hostVeth, "scope", "host"],
      ]);
    const veth = await createVeth({
      netns: args.netns,
      ifname: args.ifname,
      ...(conf.mtu ? { mtu: conf.mtu } : {}),
      after: hostRoutes,
    });
    rollback.defer("veth pair", () => deleteLink(veth.host.name));

    const result: Result = {
      cniVersion: "1.1.0",
      interfaces: [veth.host, { ...veth.container, sandbox: args.netns }],
      ips: ipam.ips.map((ip) => ({ ...ip, interface: 1 })),
      routes: ipam.routes ?? [],
      dns: dnsIsSet(conf.dns) ? toDns(conf.dns) : ipam.dns ?? {},
    };
    // Everything goes through the gateway, the container's own subnet too.
    const ptpRoutes = addresses.flatMap(({ net, gw }): IpCommand[] => {
      const subnet = formatCIDR(networkOf(net));
      const src = formatIP(net.ip);
      return [
        ["route", "del", subnet, "dev", args.ifname],
        ["route", "add", gw, "dev", args.ifname, "scope", "link", "src", src],
        ["route", "add", subnet, "via", gw, "dev", args.ifname, "src", src],
      ];
    });
    await configureInterface(args.netns, args.ifname, result, { extra: ptpRoutes });

    if (conf.ipMasq) {
      const owner = { network: conf.name, containerId: args.containerId, ifname: args.ifname };
      rollback.defer("masquerade rules", () => teardownMasq(owner));
      await setupMasq(owner, addresses.map((a) => a.net), backend);
    }
    return result;
  });
}

async function del(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  const owner = { network: conf.name, containerId: args.containerId, ifname: args.ifname };
  await settleAll([
    delegate(conf.ipamType, "DEL", args),
    deleteVethPair(args.netns, args.ifname, args.prevResult),
    // The rules are found by name, so they go even when the netns is gone
    // (the reference needs the link's addresses and leaks them then).
    conf.ipMasq ? teardownMasq(owner) : undefined,
  ]);
}

async function check(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  requireNetns(args.netns);
  await delegate(conf.ipamType, "CHECK", args);
  const prev = args.prevResult;
  if (!prev) throw invalidConfig("ptp: Required prevResult missing");
  const iface = containerInterface(prev, args.ifname, args.netns, "ptp");
  await checkContainerLink(args.netns, args.ifname, prev, {
    kind: "veth",
    plugin: "ptp",
    ...(iface.mac ? { mac: iface.mac } : {}),
  });
  if (conf.ipMasq) {
    const owner = { network: conf.name, containerId: args.containerId, ifname: args.ifname };
    const nets = (prev.ips ?? []).map((ip) => parseCIDR(ip.address)!);
    await checkMasq(owner, nets, parseMasqBackend(conf.ipMasqBackend));
  }
}

async function status(args: CmdArgs): Promise<void> {
  await delegate(loadConf(args).ipamType, "STATUS", args);
}

async function gc(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  await settleAll([
    delegate(conf.ipamType, "GC", args),
    conf.ipMasq ? gcMasq(conf.name, args.validAttachments ?? []) : undefined,
  ]);
}

/** The ptp plugin. */
export const ptp: Plugin = { name: "ptp", add, del, check, status, gc };
