/**
 * What the IPAM plugins share when they read a config: the `routes` and
 * `dns` sections as the reference copies them into results, requested
 * addresses, and the one-address-per-family rule of old versions.
 * @module
 */

import * as z from "zod/mini";
import { invalidConfig } from "../lib/cni/errors.ts";
import { formatCIDR, formatIP, parseCIDR, parseIP } from "../lib/cni/ipnet.ts";
import { GoInt, goList, goStruct } from "../lib/cni/conf.ts";
import type { Route } from "../lib/cni/spec/schemas.ts";
import { compareVersions } from "../lib/cni/spec/version.ts";

/** The `routes` entries of an IPAM section. */
export const IpamRoute = goStruct({
  dst: z.string(),
  gw: z.optional(z.string()),
  mtu: z.optional(GoInt),
  advmss: z.optional(GoInt),
  priority: z.optional(GoInt),
  table: z.optional(GoInt),
  scope: z.optional(GoInt),
});
export type IpamRoute = z.infer<typeof IpamRoute>;

/**
 * Routes as the reference prints them: addresses canonical, `mtu`, `advmss`
 * and `priority` left out when 0, `table` and `scope` kept when given.
 */
export function toRoutes(routes: readonly IpamRoute[] | null | undefined, where: string): Route[] {
  return (routes ?? []).map((r, i) => {
    const dst = parseCIDR(r.dst);
    if (!dst) throw invalidRoute(where, i, `invalid CIDR address: ${r.dst}`);
    const route: Route = { dst: formatCIDR(dst) };
    if (r.gw !== undefined && r.gw !== "") {
      const gw = parseIP(r.gw);
      if (!gw) throw invalidRoute(where, i, `invalid IP address: ${r.gw}`);
      route.gw = formatIP(gw);
    }
    if (r.mtu) route.mtu = r.mtu;
    if (r.advmss) route.advmss = r.advmss;
    if (r.priority) route.priority = r.priority;
    if (r.table !== undefined) route.table = r.table;
    if (r.scope !== undefined) route.scope = r.scope;
    return route;
  });
}

function invalidRoute(where: string, index: number, msg: string) {
  return invalidConfig(`${where}.${index}: ${msg}`);
}

/** `runtimeConfig` / `args.cni` entries holding addresses. */
export const AddressList = goList(z.string());

/**
 * Refuses more than one address per family for configs older than 0.3.0,
 * whose results cannot carry them. `version` is the config's own text.
 */
export function checkAddressesPerFamily(families: readonly (4 | 6)[], version: string): void {
  if (families.filter((f) => f === 4).length <= 1 && families.filter((f) => f === 6).length <= 1) {
    return;
  }
  let ok: boolean;
  try {
    ok = compareVersions(version, "0.3.0") >= 0;
  } catch {
    ok = false;
  }
  if (!ok) {
    throw invalidConfig(`CNI version ${version} does not support more than 1 address per family`);
  }
}
