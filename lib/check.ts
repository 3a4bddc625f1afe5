/**
 * CHECK helpers: compare what a result says against the kernel, in as few
 * `ip` processes as possible (one per address family in use).
 * @module
 */

import { CniError, ErrorCode } from "./errors.ts";
import { ipBatch, type LinkInfo } from "./ip.ts";
import { formatCIDR, networkOf, parseCIDR, parseIP } from "./ipnet.ts";
import { ipsOf } from "./iface.ts";
import type { Interface, Result } from "./spec/schemas.ts";

interface RouteInfo {
  dst: string;
  gateway?: string;
  dev?: string;
}

function fail(msg: string): never {
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
    fail(
      `Sandbox in prevResult ${
        result.interfaces?.find((i) => i.name === ifname)?.sandbox ?? ""
      } doesn't match configured netns: ${netns}`,
    );
  }
  if (!iface.name) fail(`${plugin}: Container interface name missing in prevResult`);
  return iface;
}

function normalizeDst(dst: string, family: 4 | 6): string {
  if (dst === "default") return family === 4 ? "0.0.0.0/0" : "::/0";
  const net = parseCIDR(dst.includes("/") ? dst : `${dst}/${family === 4 ? 32 : 128}`);
  return net ? formatCIDR(networkOf(net)) : dst;
}

/**
 * Checks, inside `netns`, that link `ifname` exists with the expected kind
 * and MAC, carries the result's addresses, and that every result route is
 * present.
 */
export async function checkContainerLink(
  netns: string,
  ifname: string,
  result: Result,
  expect: { kind?: string; mac?: string; plugin: string },
): Promise<LinkInfo> {
  const ips = ipsOf(result, ifname);
  const families = new Set<4 | 6>([4]);
  for (const r of result.routes ?? []) families.add(parseCIDR(r.dst)?.ip.family ?? 4);
  for (const ip of ips) families.add(parseCIDR(ip.address)?.ip.family ?? 4);
  const routes = new Map<4 | 6, RouteInfo[]>();
  let link: LinkInfo | undefined;
  for (const family of families) {
    // -4/-6 filter both listings, so each family in use costs one process.
    const [links, table] = await ipBatch(
      [["addr", "show"], ["route", "show", "table", "all"]],
      { netns, flags: ["-d", `-${family}`] },
    ) as [LinkInfo[], RouteInfo[]];
    routes.set(family, table);
    const here = links.find((l) => l.ifname === ifname);
    if (here && link) link.addr_info = [...(link.addr_info ?? []), ...(here.addr_info ?? [])];
    else link ??= here;
  }
  if (!link) fail(`${expect.plugin}: Container Interface name in prevResult: ${ifname} not found`);
  if (expect.kind && link.linkinfo?.info_kind !== expect.kind) {
    fail(`Error: Container interface ${ifname} not of type ${expect.kind}`);
  }
  if (expect.mac && expect.mac !== link.address) {
    fail(
      `${expect.plugin}: Interface ${ifname} Mac ${expect.mac} doesn't match container Mac: ${link.address}`,
    );
  }
  for (const ip of ips) {
    const want = parseCIDR(ip.address)!;
    const found = (link.addr_info ?? []).some((a) => {
      const have = parseIP(a.local);
      return have && have.value === want.ip.value && have.family === want.ip.family &&
        a.prefixlen === want.prefix;
    });
    if (!found) fail(`Failed to match addr ${ip.address} on interface ${ifname}`);
  }
  for (const route of result.routes ?? []) {
    const family = parseCIDR(route.dst)!.ip.family;
    const dst = normalizeDst(route.dst, family);
    const match = (routes.get(family) ?? []).some((r) =>
      normalizeDst(r.dst, family) === dst &&
      (!route.gw || parseIP(r.gateway ?? "")?.value === parseIP(route.gw)?.value)
    );
    if (!match) fail(`Failed to find a route to ${route.dst}${route.gw ? ` via ${route.gw}` : ""}`);
  }
  return link;
}
