/**
 * Fixtures for the ptp tests: configs, plugin runs inside a fake host, the
 * routes ptp should make on both ends, and a check of a whole attachment
 * against the kernel of both ends.
 * @module
 */

import { formatCIDR, formatIP, lastAddress, networkOf, parseCIDR } from "../../lib/cni/ipnet.ts";
import type { Result } from "../../lib/cni/spec/schemas.ts";
import { type HostRunner, hostRunner } from "./applet.ts";
import { defaultRoutes, type Families, hostLocal } from "./ipam.ts";
import { addresses, type LinkJ, links, routes, veths } from "./kernel.ts";
import type { TestNetns } from "./netns.ts";

/** A ptp config named `ptpnet`: host-local with a default route per family. */
export function ptpConf(
  version: string,
  families: Families,
  dataDir: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    cniVersion: version,
    name: "ptpnet",
    type: "ptp",
    ipam: hostLocal(families, dataDir, { routes: defaultRoutes(families) }),
    ...extra,
  };
}

/** Runs `ptp` (cnikit's, or the one in `bin`) inside `host`. */
export const ptp: HostRunner = hostRunner("ptp");

/** The IPv4 broadcast of `cidr`, as netlink's AddrAdd computes it. */
export function broadcastOf(cidr: string): string {
  return formatIP(lastAddress(parseCIDR(cidr)!));
}

/** The container routes ptp should make for `ips` and the IPAM `ipamRoutes`. */
export function expectedContainerRoutes(
  ips: { address: string; gateway?: string }[],
  ipamRoutes: { dst: string; gw?: string }[],
  ifname = "eth0",
): string[] {
  const out: string[] = [];
  for (const ip of ips) {
    const net = parseCIDR(ip.address)!;
    const addr = formatIP(net.ip);
    const v4 = net.ip.family === 4;
    out.push(`${formatCIDR(networkOf(net))} via ${ip.gateway} dev ${ifname} src ${addr}`);
    out.push(`${ip.gateway} dev ${ifname}${v4 ? " scope link" : ""} src ${addr}`);
  }
  for (const r of ipamRoutes) {
    const v4 = parseCIDR(r.dst)!.ip.family === 4;
    const gw = r.gw ??
      ips.find((ip) => (parseCIDR(ip.address)!.ip.family === 4) === v4)!.gateway;
    const dst = r.dst === "0.0.0.0/0" || r.dst === "::/0" ? "default" : r.dst;
    out.push(`${dst} via ${gw} dev ${ifname}`);
  }
  return out.sort();
}

/** The host routes ptp should make: one per container address to the host veth. */
export function expectedHostRoutes(ips: { address: string }[]): string[] {
  return ips.map((ip) => {
    const net = parseCIDR(ip.address)!;
    return `${formatIP(net.ip)} dev HOSTVETH${net.ip.family === 4 ? " scope host" : ""}`;
  }).sort();
}

/** What {@link verifyAttachment} needs to know beyond the result. */
export interface Expectation {
  host: TestNetns;
  ctr: TestNetns;
  ifname?: string;
  /** The routes the IPAM config asked for. */
  ipamRoutes: { dst: string; gw?: string }[];
  mtu?: number;
}

/**
 * Checks a (current-shape) ptp result against the kernel of both ends and
 * returns the host veth. Results of 0.1.0/0.2.0 carry no interfaces; the
 * host veth is then the only veth of the fake host.
 */
export async function verifyAttachment(result: Result, want: Expectation): Promise<LinkJ> {
  const ifname = want.ifname ?? "eth0";
  const fail = (msg: string): never => {
    throw new Error(`${msg}\nresult: ${JSON.stringify(result)}`);
  };
  const eth = (await links(want.ctr)).find((l) => l.ifname === ifname) ??
    fail(`${ifname} missing in the container`);
  const hostVeths = await veths(want.host);
  let hostVeth: LinkJ;
  if (result.interfaces) {
    const [h, c] = result.interfaces;
    if (result.interfaces.length !== 2 || !h || !c) fail("expected two interfaces");
    if (!/^veth[0-9a-f]{8}$/.test(h!.name)) fail(`bad host veth name ${h!.name}`);
    hostVeth = hostVeths.find((l) => l.ifname === h!.name) ?? fail(`${h!.name} not in host`);
    if (h!.mac !== hostVeth.address) fail(`host MAC ${h!.mac} != kernel ${hostVeth.address}`);
    if (h!.sandbox !== undefined) fail("host veth has a sandbox");
    if (c!.name !== ifname || c!.mac !== eth.address || c!.sandbox !== want.ctr.path) {
      fail(`container interface ${JSON.stringify(c)} != kernel ${eth.address}`);
    }
    if (result.ips!.some((ip) => ip.interface !== 1)) fail("IPs must point at interface 1");
  } else {
    if (hostVeths.length !== 1) fail(`expected one host veth, found ${hostVeths.length}`);
    hostVeth = hostVeths[0]!;
  }
  if (eth.linkinfo?.info_kind !== "veth") fail(`${ifname} is not a veth`);
  if (!eth.flags.includes("UP")) fail(`${ifname} is not up`);
  const ips = result.ips ?? [];
  const wantAddrs = ips.map((ip) =>
    ip.address.includes(":") ? ip.address : `${ip.address} brd ${broadcastOf(ip.address)}`
  ).sort();
  const same = (a: string[], b: string[]) => JSON.stringify(a) === JSON.stringify(b);
  const gotAddrs = addresses(eth);
  if (!same(gotAddrs, wantAddrs)) fail(`container addresses ${gotAddrs} != ${wantAddrs}`);
  const gotRoutes = await routes(want.ctr);
  const wantRoutes = expectedContainerRoutes(ips, want.ipamRoutes, ifname);
  if (!same(gotRoutes, wantRoutes)) {
    fail(`container routes\n  ${gotRoutes.join("\n  ")}\n!=\n  ${wantRoutes.join("\n  ")}`);
  }
  const gws = ips.map((ip) => `${ip.gateway}/${ip.address.includes(":") ? 128 : 32}`).sort();
  if (!same(addresses(hostVeth), gws)) fail(`host veth addresses ${addresses(hostVeth)} != ${gws}`);
  const hostRoutes = (await routes(want.host, hostVeth.ifname)).filter((r) =>
    r.includes("dev HOSTVETH")
  );
  if (!same(hostRoutes, expectedHostRoutes(ips))) {
    fail(`host routes ${hostRoutes} != ${expectedHostRoutes(ips)}`);
  }
  if (want.mtu !== undefined && (eth.mtu !== want.mtu || hostVeth.mtu !== want.mtu)) {
    fail(`MTU ${eth.mtu}/${hostVeth.mtu} != ${want.mtu}`);
  }
  return hostVeth;
}
