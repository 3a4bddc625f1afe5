/**
 * static: IPAM that hands out the addresses it is given, from the config's
 * `addresses`, CNI_ARGS `IP`/`GATEWAY` (appended), `args.cni.ips` or
 * `runtimeConfig.ips` (each replacing what came before), with the config's
 * routes and DNS. Stateless: DEL has nothing to do.
 * @module
 */

import * as z from "zod/mini";
import { parseCniArgs } from "../../lib/cni/args.ts";
import { DnsConf, goList, goStruct, parseConf, toDns } from "../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig } from "../../lib/cni/errors.ts";
import { AddressList, checkAddressesPerFamily, IpamRoute, toRoutes } from "../config.ts";
import {
  canonicalIP,
  contains,
  formatIP,
  type IP,
  ipEquals,
  parseCIDR,
  parseGoIP,
  parseIP,
} from "../../lib/cni/ipnet.ts";
import type { CmdArgs, Plugin } from "../../lib/cni/skel.ts";
import type { Dns, Result, Route } from "../../lib/cni/spec/schemas.ts";

const StaticNet = goStruct({
  cniVersion: z.optional(z.string()),
  ipam: z.optional(goStruct({
    type: z.optional(z.string()),
    routes: goList(IpamRoute),
    addresses: goList(
      goStruct({ address: z.optional(z.string()), gateway: z.optional(z.string()) }),
    ),
    dns: z.optional(DnsConf),
  })),
  runtimeConfig: z.optional(goStruct({ ips: AddressList })),
  args: z.optional(goStruct({ cni: z.optional(goStruct({ ips: AddressList })) })),
});

/** One address to hand out: the address with its prefix, and maybe a gateway. */
interface StaticAddress {
  ip: IP;
  prefix: number;
  gateway?: IP;
}

interface StaticConfig {
  addresses: StaticAddress[];
  routes: Route[];
  dns: Dns;
}

function cidr(text: string, complaint: string): StaticAddress {
  const net = parseCIDR(text);
  if (!net) throw invalidConfig(`${complaint}, got: '${text}'`);
  return { ip: canonicalIP(net.ip), prefix: net.prefix };
}

function fromCniArgs(raw: string): StaticAddress[] {
  const { IP: ips, GATEWAY: gateways } = parseCniArgs(raw, ["IP", "GATEWAY"]);
  const out: StaticAddress[] = [];
  for (const item of ips ? ips.split(",") : []) {
    const text = item.trim();
    const net = parseCIDR(text);
    if (!net) {
      throw new CniError(
        ErrorCode.invalidEnvironment,
        `the 'ip' field is expected to be in CIDR notation, got: '${text}'`,
      );
    }
    out.push({ ip: canonicalIP(net.ip), prefix: net.prefix });
  }
  for (const item of gateways ? gateways.split(",") : []) {
    const gw = parseIP(item.trim());
    if (!gw) throw new CniError(ErrorCode.invalidEnvironment, `invalid gateway address: ${item}`);
    // Every CNI_ARGS address whose subnet holds the gateway gets it.
    for (const a of out) {
      if (contains({ ip: a.ip, prefix: a.prefix }, canonicalIP(gw))) a.gateway = canonicalIP(gw);
    }
  }
  return out;
}

function loadStaticConfig(args: CmdArgs): StaticConfig {
  const net = parseConf(StaticNet, args.config, "IPAM config");
  const ipam = net.ipam;
  if (!ipam) throw invalidConfig("IPAM config missing 'ipam' key");
  const routes = toRoutes(ipam.routes, "ipam.routes");
  // Config addresses are parsed last, and only if nothing replaced them.
  let pending: { text: string; gateway?: IP }[] = (ipam.addresses ?? []).map((a) => {
    if (!a.gateway) return { text: a.address ?? "" };
    const gateway = parseGoIP(a.gateway);
    if (!gateway) throw invalidConfig(`invalid IP address: ${a.gateway}`);
    return { text: a.address ?? "", gateway };
  });
  let addresses = fromCniArgs(args.args);
  const notCidr = "an entry in the 'ips' field is NOT in CIDR notation";
  for (const list of [net.args?.cni?.ips, net.runtimeConfig?.ips]) {
    if (!list?.length) continue;
    pending = [];
    addresses = list.map((text) => cidr(text, notCidr));
  }
  addresses = [
    ...pending.map(({ text, gateway }) => ({
      ...cidr(text, "the 'address' field is expected to be in CIDR notation"),
      ...(gateway ? { gateway } : {}),
    })),
    ...addresses,
  ];
  checkAddressesPerFamily(addresses.map((a) => a.ip.family), net.cniVersion ?? "");
  return { addresses, routes, dns: toDns(ipam.dns) };
}

function add(args: CmdArgs): Promise<Result> {
  const conf = loadStaticConfig(args);
  const result: Result = {
    cniVersion: "1.1.0",
    ips: conf.addresses.map((a) => ({
      address: `${formatIP(a.ip)}/${a.prefix}`,
      ...(a.gateway ? { gateway: formatIP(a.gateway) } : {}),
    })),
    dns: conf.dns,
  };
  if (conf.routes.length) result.routes = conf.routes;
  return Promise.resolve(result);
}

function del(): Promise<void> {
  return Promise.resolve();
}

function check(args: CmdArgs): Promise<void> {
  const conf = loadStaticConfig(args);
  const prev = args.prevResult;
  if (!prev) throw invalidConfig("Required prevResult missing");
  // As the reference: an address missing from prevResult passes; one that
  // is there must carry the configured gateway, if one is configured.
  for (const a of conf.addresses) {
    for (const ip of prev.ips ?? []) {
      const have = parseCIDR(ip.address);
      if (!have || !ipEquals(canonicalIP(have.ip), a.ip)) continue;
      const gw = ip.gateway ? parseGoIP(ip.gateway) : null;
      if (!a.gateway || (gw && ipEquals(gw, a.gateway))) break;
      throw new CniError(
        ErrorCode.internal,
        `static: Failed to match addr ${formatIP(a.ip)} on interface ${args.ifname}`,
      );
    }
  }
  return Promise.resolve();
}

/** The static IPAM plugin. */
export const staticIpam: Plugin = { name: "static", add, del, check };
