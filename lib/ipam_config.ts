/**
 * What the IPAM plugins share when they read a config: Go's JSON decoding
 * rules (keys match case-insensitively, `null` means absent), Go's reading
 * of IP addresses (IPv4-mapped IPv6 is IPv4), and the `routes` and `dns`
 * sections as the reference copies them into results.
 * @module
 */

import * as z from "zod/mini";
import { CniError, ErrorCode, invalidConfig } from "./errors.ts";
import { formatCIDR, formatIP, type IP, parseCIDR, parseIP } from "./ipnet.ts";
import type { Dns, Route } from "./spec/schemas.ts";
import { compareVersions } from "./spec/version.ts";

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Picks the keys of `value` that Go's encoding/json would decode into a
 * struct with the fields `names`: an exact match first, else any spelling
 * that matches case-insensitively; the later of two wins. `null` values are
 * dropped, since Go leaves the field untouched for them.
 */
function goFields(
  value: Record<string, unknown>,
  names: readonly string[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  let folded: Map<string, string> | undefined;
  for (const [key, v] of Object.entries(value)) {
    let name: string | undefined = key;
    if (!names.includes(key)) {
      folded ??= new Map(names.map((n) => [n.toLowerCase(), n]));
      name = folded.get(key.toLowerCase());
    }
    if (name === undefined) continue;
    if (v === null) delete out[name];
    else out[name] = v;
  }
  return out;
}

/**
 * A zod object schema that reads its input with {@link goFields}: unknown
 * keys are ignored, keys match case-insensitively and `null` is absent.
 */
export function goStruct<S extends z.core.$ZodLooseShape>(
  shape: S,
): z.ZodMiniPipe<z.ZodMiniTransform<unknown, unknown>, z.ZodMiniObject<S>> {
  const names = Object.keys(shape);
  return z.pipe(
    z.transform((v: unknown) => (isPlainObject(v) ? goFields(v, names) : v)),
    z.object(shape),
  );
}

/** Go's `int`: any integral JSON number. */
const GoInt = z.number().check(z.int());

/** A list that Go would decode from `null` as empty. */
export function goList<T extends z.core.SomeType>(item: T) {
  return z.optional(z.nullable(z.array(item)));
}

/** IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as IPv4, the way Go's `To4` reads it. */
export function canonicalIP(ip: IP): IP {
  if (ip.family === 6 && ip.value >> 32n === 0xffffn) {
    return { family: 4, value: ip.value & 0xffffffffn };
  }
  return ip;
}

/** Go's `net.ParseIP` followed by canonicalisation; null when invalid. */
export function parseGoIP(text: string): IP | null {
  const ip = parseIP(text);
  return ip && canonicalIP(ip);
}

/**
 * The reference's `ip.IP` text form, used for requested addresses: a plain
 * address or a CIDR whose address part is taken. Null when invalid.
 */
export function parseRequestedIP(text: string): IP | null {
  if (text.includes("/")) {
    const net = parseCIDR(text);
    return net && canonicalIP(net.ip);
  }
  return parseGoIP(text);
}

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

function invalidRoute(where: string, index: number, msg: string): CniError {
  return new CniError(ErrorCode.invalidNetworkConfig, `${where}.${index}: ${msg}`);
}

/** A `dns` section. */
export const IpamDns = goStruct({
  nameservers: goList(z.string()),
  domain: z.optional(z.string()),
  search: goList(z.string()),
  options: goList(z.string()),
});
export type IpamDns = z.infer<typeof IpamDns>;

/** DNS settings with the empty fields left out, as Go's `omitempty` prints them. */
export function toDns(dns: IpamDns | undefined): Dns {
  const out: Dns = {};
  if (dns?.nameservers?.length) out.nameservers = dns.nameservers;
  if (dns?.domain) out.domain = dns.domain;
  if (dns?.search?.length) out.search = dns.search;
  if (dns?.options?.length) out.options = dns.options;
  return out;
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
