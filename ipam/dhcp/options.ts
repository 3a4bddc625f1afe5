/**
 * What a DHCPACK says, read from its options (RFC 2132, RFC 3442, RFC 3397):
 * the address and mask, routers, routes, DNS settings and the lease times,
 * and the CNI result the plugin returns for it. Pure.
 * @module
 */

import type { Dns, Route } from "../../lib/cni/spec/schemas.ts";
import { ipString, type Message, Option } from "./message.ts";

/** A lease as the daemon keeps it: the ACK's facts, times in seconds. */
export interface LeaseFacts {
  address: string;
  prefix: number;
  serverId: string;
  /** Routers (option 3), in the server's order. */
  routers: string[];
  routes: Route[];
  dns: Dns;
  /** Seconds; `INFINITE` when the server said so. */
  leaseTime: number;
  renewalTime: number;
  rebindingTime: number;
}

/** The lease time meaning "forever" (RFC 2132 §9.2). */
export const INFINITE = 0xffffffff;
/** The reference's defaults: a lease of one hour, T1 at half of it, T2 at 85 %. */
const DEFAULT_LEASE = 3600;

/** An option whose bytes do not fit its format. */
export class OptionError extends Error {
  constructor(code: number, msg: string) {
    super(`option ${code}: ${msg}`);
    this.name = "OptionError";
  }
}

/** A list of IPv4 addresses (options 3, 6, …). */
export function ipList(code: number, value: Uint8Array): string[] {
  if (value.length === 0 || value.length % 4 !== 0) {
    throw new OptionError(code, `${value.length} bytes is not a list of addresses`);
  }
  return Array.from({ length: value.length / 4 }, (_, i) => ipString(value, 4 * i));
}

/** One IPv4 address (options 1, 50, 54). */
export function ipOption(code: number, value: Uint8Array): string {
  if (value.length !== 4) throw new OptionError(code, `${value.length} bytes is not an address`);
  return ipString(value);
}

/** A 32-bit unsigned number (options 51, 58, 59). */
export function u32Option(code: number, value: Uint8Array): number {
  if (value.length !== 4) {
    throw new OptionError(code, `${value.length} bytes is not a 32-bit value`);
  }
  return new DataView(value.buffer, value.byteOffset, 4).getUint32(0);
}

/** The prefix length of a contiguous netmask; null for a mask with holes. */
export function maskPrefix(mask: Uint8Array): number | null {
  const value = new DataView(mask.buffer, mask.byteOffset, 4).getUint32(0);
  const inverted = ~value >>> 0;
  // Contiguous ones followed by zeros: the inverse plus one is a power of two.
  if ((inverted & (inverted + 1)) !== 0) return null;
  return Math.clz32(inverted);
}

/**
 * Classless static routes (option 121, RFC 3442): each a prefix width, the
 * significant octets of the destination, then the router. A router of
 * 0.0.0.0 means the destination is on the link.
 */
export function classlessRoutes(value: Uint8Array): { dst: string; router: string }[] {
  const out: { dst: string; router: string }[] = [];
  let i = 0;
  while (i < value.length) {
    const width = value[i]!;
    if (width > 32) throw new OptionError(Option.classlessRoutes, `prefix width ${width} > 32`);
    const significant = Math.ceil(width / 8);
    if (i + 1 + significant + 4 > value.length) {
      throw new OptionError(Option.classlessRoutes, "truncated route");
    }
    const dst = new Uint8Array(4);
    dst.set(value.subarray(i + 1, i + 1 + significant));
    out.push({ dst: `${ipString(dst)}/${width}`, router: ipString(value, i + 1 + significant) });
    i += 1 + significant + 4;
  }
  return out;
}

/** The classful prefix of an address (RFC 791 classes A, B, C); null for D and E. */
function classfulPrefix(first: number): number | null {
  if (first < 128) return 8;
  if (first < 192) return 16;
  if (first < 224) return 24;
  return null;
}

/**
 * Static routes (option 33, RFC 2132 §5.8): destination/router pairs, the
 * destination's mask taken from its class as the reference does; class D
 * and E destinations have no mask and are skipped.
 */
export function staticRoutes(value: Uint8Array): { dst: string; router: string }[] {
  if (value.length % 8 !== 0) {
    throw new OptionError(Option.staticRoutes, `${value.length} bytes is not a list of pairs`);
  }
  const out: { dst: string; router: string }[] = [];
  for (let i = 0; i < value.length; i += 8) {
    const prefix = classfulPrefix(value[i]!);
    if (prefix === null) continue;
    out.push({ dst: `${ipString(value, i)}/${prefix}`, router: ipString(value, i + 4) });
  }
  return out;
}

/** Domain names in DNS wire format with compression (option 119, RFC 3397). */
export function domainSearch(value: Uint8Array): string[] {
  const fail = (msg: string) => new OptionError(Option.domainSearch, msg);
  const nameAt = (start: number): [string, number] => {
    const labels: string[] = [];
    let i = start;
    let next = -1;
    for (let hops = 0;; hops++) {
      if (hops > value.length) throw fail("compression loop");
      if (i >= value.length) throw fail("truncated name");
      const length = value[i]!;
      if (length === 0) {
        i++;
        break;
      }
      if ((length & 0xc0) === 0xc0) {
        if (i + 1 >= value.length) throw fail("truncated pointer");
        if (next < 0) next = i + 2;
        i = ((length & 0x3f) << 8) | value[i + 1]!;
        continue;
      }
      if (length > 63 || i + 1 + length > value.length) throw fail("bad label");
      labels.push(new TextDecoder().decode(value.subarray(i + 1, i + 1 + length)));
      i += 1 + length;
    }
    return [labels.join("."), next < 0 ? i : next];
  };
  const names: string[] = [];
  for (let i = 0; i < value.length;) {
    const [name, next] = nameAt(i);
    names.push(name);
    i = next;
  }
  return names;
}

function text(value: Uint8Array): string {
  // Servers may count a trailing NUL into the length (RFC 2132 §2 forbids it).
  return new TextDecoder().decode(value).replace(/\0+$/, "");
}

/**
 * The facts of an ACK. A missing subnet mask is an error, as in the
 * reference; missing times take the reference's defaults.
 */
export function leaseFacts(ack: Message): LeaseFacts {
  const get = (code: number) => ack.options.get(code);
  const mask = get(Option.subnetMask);
  if (!mask) {
    throw new OptionError(Option.subnetMask, "DHCP option Subnet Mask not found in DHCPACK");
  }
  if (mask.length !== 4) throw new OptionError(Option.subnetMask, "not 4 bytes");
  const prefix = maskPrefix(mask);
  if (prefix === null) {
    throw new OptionError(Option.subnetMask, `${ipString(mask)} is not contiguous`);
  }
  const serverIdBytes = get(Option.serverId);
  const routers = get(Option.router) ? ipList(Option.router, get(Option.router)!) : [];
  const lease = get(Option.leaseTime);
  const leaseTime = lease ? u32Option(Option.leaseTime, lease) : DEFAULT_LEASE;
  const t1 = get(Option.renewalTime);
  const t2 = get(Option.rebindingTime);
  const scaled = (share: number) =>
    leaseTime === INFINITE ? INFINITE : Math.floor(leaseTime * share);
  return {
    address: ack.yiaddr,
    prefix,
    // Without option 54 the reply's siaddr is the best guess (RFC 2131 §4.3.1 makes it a MUST).
    serverId: serverIdBytes ? ipOption(Option.serverId, serverIdBytes) : ack.siaddr,
    routers,
    routes: resultRoutes(ack, routers[0]),
    dns: resultDns(ack),
    leaseTime,
    renewalTime: t1 ? u32Option(Option.renewalTime, t1) : scaled(0.5),
    rebindingTime: t2 ? u32Option(Option.rebindingTime, t2) : scaled(0.85),
  };
}

/** RTM scope "link" (`ip route … scope link`). */
export const SCOPE_LINK = 253;

/**
 * The result's routes, as the reference builds them: the classless routes
 * when option 121 is there (RFC 3442 §2: then 3 and 33 are ignored), a
 * router of 0.0.0.0 marking an on-link route; otherwise the static routes
 * and a default route through the first router.
 */
function resultRoutes(ack: Message, gateway: string | undefined): Route[] {
  const classless = ack.options.get(Option.classlessRoutes);
  const routes121 = classless ? classlessRoutes(classless) : [];
  if (routes121.length) {
    return routes121.map(({ dst, router }) =>
      router === "0.0.0.0" ? { dst, gw: router, scope: SCOPE_LINK } : { dst, gw: router }
    );
  }
  const fixed = ack.options.get(Option.staticRoutes);
  const routes: Route[] = (fixed ? staticRoutes(fixed) : []).map(({ dst, router }) => ({
    dst,
    gw: router,
  }));
  if (gateway) routes.push({ dst: "0.0.0.0/0", gw: gateway });
  return routes;
}

/** DNS settings from options 6, 15 and 119; empty when the server sent none. */
function resultDns(ack: Message): Dns {
  const dns: Dns = {};
  const servers = ack.options.get(Option.domainNameServer);
  if (servers) dns.nameservers = ipList(Option.domainNameServer, servers);
  const domain = ack.options.get(Option.domainName);
  if (domain && text(domain)) dns.domain = text(domain);
  const search = ack.options.get(Option.domainSearch);
  if (search) dns.search = domainSearch(search);
  return dns;
}
