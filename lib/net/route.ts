/**
 * Routes and policy rules as `ip -j -d` shows them, and the `ip route`
 * arguments that name such a route again in another table: what sbr and vrf
 * need to move a link's routes into a table of their own.
 * @module
 */

import type { IpCommand } from "./ip.ts";

/** A route as `ip -j -d route show table all` prints it. */
export interface RouteInfo {
  type?: string;
  /** A prefix, an address (a host route) or `default`. */
  dst: string;
  gateway?: string;
  /** A gateway of the other family (`via inet6 fe80::1` for an IPv4 route). */
  via?: { family?: string; host: string };
  dev?: string;
  /** `main`, `local`, `default` or a number, as text. */
  table?: string;
  protocol?: string;
  scope?: string;
  prefsrc?: string;
  metric?: number;
  flags?: string[];
  /** IPv6 router preference: `low`, `medium`, `high`. */
  pref?: string;
  /** Route metrics: `[{ "mtu": 1400 }, { "advmss": 1360 }]`. */
  metrics?: Record<string, unknown>[];
}

/** A policy rule as `ip -j rule show` prints it. */
export interface RuleInfo {
  priority: number;
  /** An address, or `all`. */
  src: string;
  srclen?: number;
  table?: string;
}

/** Every route of both families in every table: one batch line. */
export const SHOW_ALL_ROUTES: IpCommand = ["route", "show", "table", "all"];

const TABLE_NAMES: Record<string, number> = { default: 253, main: 254, local: 255 };

/** The number of a table as `ip -j` names it (`main` is 254); NaN for an unknown name. */
export function tableNumber(name: string | undefined): number {
  if (name === undefined) return 254;
  return TABLE_NAMES[name] ?? (/^\d+$/.test(name) ? Number(name) : NaN);
}

/** The family of a route, from whichever of its addresses says it. */
export function routeFamily(route: RouteInfo): 4 | 6 {
  const any = [route.dst, route.gateway, route.prefsrc].find((a) => a && a !== "default");
  return any?.includes(":") ? 6 : 4;
}

/** The prefix of `route` as `ip` takes it back: `default` spelled in its family. */
export function routeDst(route: RouteInfo): string {
  if (route.dst !== "default") return route.dst;
  return routeFamily(route) === 4 ? "0.0.0.0/0" : "::/0";
}

/**
 * The arguments after `ip route replace` (or `del`) that make `route` in
 * `table`: its type, prefix, gateway, device, protocol, scope, source,
 * metric, `onlink`, IPv6 preference and route metrics, as netlink copies
 * them. Status flags (`linkdown`) and expiry are the kernel's and left out.
 */
export function routeArgs(route: RouteInfo, table: number | string): string[] {
  const args = [
    ...(route.type && route.type !== "unicast" ? [route.type] : []),
    routeDst(route),
  ];
  if (route.gateway) args.push("via", route.gateway);
  else if (route.via) {
    args.push("via", ...(route.via.family ? [route.via.family] : []), route.via.host);
  }
  if (route.dev) args.push("dev", route.dev);
  if (route.protocol) args.push("proto", route.protocol);
  if (route.scope) args.push("scope", route.scope);
  if (route.prefsrc) args.push("src", route.prefsrc);
  if (route.metric !== undefined) args.push("metric", String(route.metric));
  if (route.flags?.includes("onlink")) args.push("onlink");
  if (route.pref && route.pref !== "medium") args.push("pref", route.pref);
  for (const metrics of route.metrics ?? []) {
    for (const [key, value] of Object.entries(metrics)) {
      if (typeof value === "number" || typeof value === "string") args.push(key, String(value));
    }
  }
  args.push("table", String(table));
  return args;
}
