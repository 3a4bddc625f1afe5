/**
 * IP addresses and CIDR prefixes as big integers: parsing, canonical printing
 * (Go's form, so results compare equal to the reference), containment and
 * stepping through ranges.
 * @module
 */

/** An IPv4 or IPv6 address. */
export interface IP {
  readonly family: 4 | 6;
  readonly value: bigint;
}

/** An address with its prefix length, host bits kept (`10.1.0.5/16`). */
export interface IPNet {
  readonly ip: IP;
  readonly prefix: number;
}

/** Address width in bits for a family. */
export function bitsOf(family: 4 | 6): number {
  return family === 4 ? 32 : 128;
}

function parseIPv4(text: string): bigint | null {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  let value = 0n;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part)) return null;
    const n = Number(part);
    if (n > 255 || (part.length > 1 && part[0] === "0")) return null;
    value = (value << 8n) | BigInt(n);
  }
  return value;
}

function parseIPv6(text: string): bigint | null {
  if (!/^[0-9a-fA-F:.]+$/.test(text)) return null;
  let tail: bigint | null = null;
  let body = text;
  const lastColon = text.lastIndexOf(":");
  if (text.includes(".")) {
    tail = parseIPv4(text.slice(lastColon + 1));
    if (tail === null) return null;
    body = text.slice(0, lastColon + 1) + "0:0";
  }
  const halves = body.split("::");
  if (halves.length > 2) return null;
  const groupsOf = (s: string) => (s === "" ? [] : s.split(":"));
  const head = groupsOf(halves[0]!);
  const rest = halves.length === 2 ? groupsOf(halves[1]!) : [];
  const missing = 8 - head.length - rest.length;
  if (halves.length === 1 ? missing !== 0 : missing < 1) return null;
  const groups = [...head, ...Array(halves.length === 2 ? missing : 0).fill("0"), ...rest];
  let value = 0n;
  for (const group of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(group)) return null;
    value = (value << 16n) | BigInt(parseInt(group, 16));
  }
  if (tail !== null) value = (value & ~0xffffffffn) | tail;
  return value;
}

/** Parses an address; returns null when it is not one. */
export function parseIP(text: string): IP | null {
  if (text.includes(":")) {
    const value = parseIPv6(text);
    return value === null ? null : { family: 6, value };
  }
  const value = parseIPv4(text);
  return value === null ? null : { family: 4, value };
}

/** Parses a CIDR (`10.1.0.5/16`); returns null when it is not one. */
export function parseCIDR(text: string): IPNet | null {
  const slash = text.indexOf("/");
  if (slash < 0) return null;
  const ip = parseIP(text.slice(0, slash));
  const prefixText = text.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(prefixText)) return null;
  const prefix = Number(prefixText);
  if (prefix > bitsOf(ip.family)) return null;
  return { ip, prefix };
}

/** Prints an address in canonical form (RFC 5952 for IPv6, as Go's netip does). */
export function formatIP(ip: IP): string {
  if (ip.family === 4) {
    return [24n, 16n, 8n, 0n].map((s) => String((ip.value >> s) & 0xffn)).join(".");
  }
  // RFC 5952 §5: an IPv4-mapped address keeps its IPv4 part dotted.
  if (ip.value >> 32n === 0xffffn) {
    return `::ffff:${formatIP({ family: 4, value: ip.value & 0xffffffffn })}`;
  }
  const groups = Array.from(
    { length: 8 },
    (_, i) => Number((ip.value >> BigInt(112 - 16 * i)) & 0xffffn),
  );
  let bestStart = -1, bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) [bestStart, bestLen] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  return `${hex.slice(0, bestStart).join(":")}::${hex.slice(bestStart + bestLen).join(":")}`;
}

/** Prints `ip/prefix`. */
export function formatCIDR(net: IPNet): string {
  return `${formatIP(net.ip)}/${net.prefix}`;
}

function hostMask(net: IPNet): bigint {
  return (1n << BigInt(bitsOf(net.ip.family) - net.prefix)) - 1n;
}

/**
 * The network address of a prefix (host bits cleared).
 * @example
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * import { contains, formatCIDR, networkOf, parseCIDR, parseIP } from "./ipnet.ts";
 * const net = parseCIDR("10.1.2.3/16")!;
 * deepEqual(formatCIDR(networkOf(net)), "10.1.0.0/16");
 * deepEqual(contains(net, parseIP("10.1.255.255")!), true);
 * deepEqual(formatCIDR(networkOf(parseCIDR("2001:db8::5/64")!)), "2001:db8::/64");
 * ```
 */
export function networkOf(net: IPNet): IPNet {
  return {
    ip: { family: net.ip.family, value: net.ip.value & ~hostMask(net) },
    prefix: net.prefix,
  };
}

/** The last address of a prefix (the IPv4 broadcast). */
export function lastAddress(net: IPNet): IP {
  return { family: net.ip.family, value: net.ip.value | hostMask(net) };
}

/** True when `ip` lies inside `net`. */
export function contains(net: IPNet, ip: IP): boolean {
  return ip.family === net.ip.family &&
    (ip.value & ~hostMask(net)) === (net.ip.value & ~hostMask(net));
}

/** True when two prefixes share any address. */
export function overlaps(a: IPNet, b: IPNet): boolean {
  return contains(a, networkOf(b).ip) || contains(b, networkOf(a).ip);
}

/** The address `delta` steps after `ip` (negative steps back). */
export function addToIP(ip: IP, delta: bigint): IP {
  return { family: ip.family, value: ip.value + delta };
}

/** True when both are the same address. */
export function ipEquals(a: IP, b: IP): boolean {
  return a.family === b.family && a.value === b.value;
}

/** Compares addresses of one family. */
export function compareIP(a: IP, b: IP): number {
  return a.value < b.value ? -1 : a.value > b.value ? 1 : 0;
}

/** The prefix as a host route: `/32` or `/128`. */
export function hostPrefix(ip: IP): IPNet {
  return { ip, prefix: bitsOf(ip.family) };
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
