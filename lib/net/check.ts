/**
 * CHECK helpers: compare what a result says against the kernel, in as few
 * `ip` processes as possible (one per address family in use).
 * @module
 */

import { CniError, ErrorCode } from "../cni/errors.ts";
import { ipBatch, type LinkInfo } from "./ip.ts";
import { formatCIDR, networkOf, parseCIDR, parseIP } from "../cni/ipnet.ts";
import { ipsOf } from "./iface.ts";
import type { Interface, Result } from "../cni/spec/schemas.ts";

interface RouteInfo {
  dst: string;
  gateway?: string;
  dev?: string;
}

/**
 * Ends a CHECK with `msg`. The reference reports what CHECK found as a
 * plain error, which its skel turns into code 999; so does cnikit.
 */
export function checkFailed(msg: string): never {
  throw new CniError(ErrorCode.internal, msg);
}

/** The interface `ifname` in `result` whose sandbox is `netns`, or an error as the reference words it. */
export function containerInterface(
  result: Result,
  ifname: string,
  netns: string,
  plugin: string,
): Interface {
  const iface = result.interfaces?.find((i) => i.name === ifname && i.sandbox === netns);
  if (!iface) {
    checkFailed(
      `Sandbox in prevResult ${
        result.interfaces?.find((i) => i.name === ifname)?.sandbox ?? ""
      } doesn't match configured netns: ${netns}`,
    );
  }
  if (!iface.name) checkFailed(`${plugin}: Container interface name missing in prevResult`);
  return iface;
}

function normalizeDst(dst: string, family: 4 | 6): string {
  if (dst === "default") return family === 4 ? "0.0.0.0/0" : "::/0";
  const net = parseCIDR(dst.includes("/") ? dst : `${dst}/${family === 4 ? 32 : 128}`);
  return net ? formatCIDR(networkOf(net)) : dst;
}

/**
 * Checks, inside `netns`, that link `ifname` exists with the expected kind
 * and MAC (and whatever `verify` checks), carries the result's addresses
 * with a route to each of their subnets, and that every result route is
 * present. One `ip` process.
 */
export async function checkContainerLink(
  netns: string,
  ifname: string,
  result: Result,
  expect: {
    kind?: string;
    mac?: string;
    plugin: string;
    /** Further checks of the link (mode, VLAN id, up), after kind and MAC, before the addresses. */
    verify?: (link: LinkInfo) => void;
  },
): Promise<LinkInfo> {
  const ips = ipsOf(result, ifname);
  const familyOf = (cidr: string) => parseCIDR(cidr)?.ip.family ?? 4;
  const families = new Set<4 | 6>([
    ...ips.map((ip) => familyOf(ip.address)),
    ...(result.routes ?? []).map((r) => familyOf(r.dst)),
  ]);
  // Not `ip -6`: with it, `addr show` omits the link details (the kind).
  // `root <everything>` selects one family's routes without that flag.
  const routeShows = [...families].map((f) => {
    const everything = f === 4 ? "0.0.0.0/0" : "::/0";
    return ["route", "show", "table", "all", "root", everything];
  });
  const [links, ...tables] = await ipBatch([["addr", "show"], ...routeShows], {
    netns,
    flags: ["-d"],
  }) as [LinkInfo[], ...RouteInfo[][]];
  const routes = new Map([...families].map((f, i) => [f, tables[i] ?? []]));
  const link = links.find((l) => l.ifname === ifname);
  if (!link) {
    checkFailed(`${expect.plugin}: Container Interface name in prevResult: ${ifname} not found`);
  }
  if (expect.kind && link.linkinfo?.info_kind !== expect.kind) {
    checkFailed(`Error: Container interface ${ifname} not of type ${expect.kind}`);
  }
  if (expect.mac && expect.mac !== link.address) {
    checkFailed(
      `${expect.plugin}: Interface ${ifname} Mac ${expect.mac} doesn't match container Mac: ${link.address}`,
    );
  }
  expect.verify?.(link);
  const hasRoute = (family: 4 | 6, dst: string, gw?: string) => {
    const want = gw ? parseIP(gw) : null;
    return (routes.get(family) ?? []).some((r) =>
      normalizeDst(r.dst, family) === dst &&
      (!want ||
        // An unspecified gateway (DHCP option 121's on-link routes) is a route without one.
        (want.value === 0n ? !r.gateway : parseIP(r.gateway ?? "")?.value === want.value))
    );
  };
  for (const ip of ips) {
    const want = parseCIDR(ip.address)!;
    const found = (link.addr_info ?? []).some((a) => {
      const have = parseIP(a.local);
      return have && have.value === want.ip.value && have.family === want.ip.family &&
        a.prefixlen === want.prefix;
    });
    if (!found) checkFailed(`Failed to match addr ${ip.address} on interface ${ifname}`);
    if (!hasRoute(want.ip.family, formatCIDR(networkOf(want)))) {
      checkFailed(
        `Failed to find a route to ${formatCIDR(networkOf(want))} for interface ${ifname}`,
      );
    }
  }
  for (const route of result.routes ?? []) {
    const family = familyOf(route.dst);
    if (!hasRoute(family, normalizeDst(route.dst, family), route.gw)) {
      checkFailed(`Failed to find a route to ${route.dst}${route.gw ? ` via ${route.gw}` : ""}`);
    }
  }
  return link;
}
