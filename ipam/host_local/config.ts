/**
 * host-local's configuration: decoding (Go's JSON rules), the legacy
 * single range, runtime ranges and requested addresses, and the validation
 * and defaults of ranges and range sets, with the reference's messages.
 * @module
 */

import * as z from "zod/mini";
import { parseCniArgs } from "../../lib/cni/args.ts";
import { goList, goStruct, parseConf } from "../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig } from "../../lib/cni/errors.ts";
import { AddressList, checkAddressesPerFamily, IpamRoute, toRoutes } from "../config.ts";
import {
  addToIP,
  bitsOf,
  canonicalIP,
  compareIP,
  contains,
  formatCIDR,
  formatIP,
  type IP,
  type IPNet,
  lastAddress,
  networkOf,
  parseCIDR,
  parseGoIP,
  parseRequestedIP,
} from "../../lib/cni/ipnet.ts";
import type { Dns, Route } from "../../lib/cni/spec/schemas.ts";

/** Where leases live when `dataDir` is not set. */
const DEFAULT_DATA_DIR = "/var/lib/cni/networks";

/** A validated range: every bound filled in, addresses canonical. */
export interface Range {
  /** The network address and prefix. */
  readonly subnet: IPNet;
  readonly start: IP;
  readonly end: IP;
  readonly gateway: IP;
}

/** The ranges one address is allocated from. */
export type RangeSet = readonly Range[];

/** host-local's configuration after validation. */
export interface HostLocalConfig {
  /** The network name: the store's directory under `dataDir`. */
  readonly name: string;
  /** Runtime ranges first, then the legacy top-level range, then `ranges`. */
  readonly ranges: readonly RangeSet[];
  readonly routes: Route[];
  readonly dataDir: string;
  /** A resolv.conf to read DNS settings from; "" for none. */
  readonly resolvConf: string;
  /** Requested addresses: CNI_ARGS `IP`, then `args.cni.ips`, then `runtimeConfig.ips`. */
  readonly requestedIPs: readonly IP[];
}

const RangeFields = {
  rangeStart: z.optional(z.string()),
  rangeEnd: z.optional(z.string()),
  subnet: z.optional(z.string()),
  gateway: z.optional(z.string()),
};
const RawRange = goStruct(RangeFields);
type RawRange = z.infer<typeof RawRange>;
const RawRangeSet = z.nullable(z.array(RawRange));

const HostLocalNet = goStruct({
  name: z.optional(z.string()),
  cniVersion: z.optional(z.string()),
  ipam: z.optional(goStruct({
    ...RangeFields,
    type: z.optional(z.string()),
    routes: goList(IpamRoute),
    dataDir: z.optional(z.string()),
    resolvConf: z.optional(z.string()),
    ranges: goList(RawRangeSet),
  })),
  runtimeConfig: z.optional(goStruct({ ipRanges: goList(RawRangeSet), ips: AddressList })),
  args: z.optional(goStruct({ cni: z.optional(goStruct({ ips: AddressList })) })),
});

/** A range as decoded: addresses parsed, nothing checked or defaulted yet. */
interface DecodedRange {
  subnet?: IPNet;
  start?: IP;
  end?: IP;
  gateway?: IP;
}

// Decoding errors carry Go's texts: json.Unmarshal reports them bare.
function decodeIP(text: string | undefined): IP | undefined {
  if (text === undefined || text === "") return undefined;
  const ip = parseGoIP(text);
  if (!ip) throw invalidConfig(`invalid IP address: ${text}`);
  return ip;
}

function decodeRange(raw: RawRange): DecodedRange {
  const out: DecodedRange = {};
  if (raw.subnet !== undefined) {
    const subnet = parseCIDR(raw.subnet);
    if (!subnet) throw invalidConfig(`invalid CIDR address: ${raw.subnet}`);
    out.subnet = subnet;
  }
  const [start, end, gateway] = [raw.rangeStart, raw.rangeEnd, raw.gateway].map(decodeIP);
  if (start) out.start = start;
  if (end) out.end = end;
  if (gateway) out.gateway = gateway;
  return out;
}

function decodeRangeSets(
  sets: readonly (RawRange[] | null)[] | null | undefined,
): DecodedRange[][] {
  return (sets ?? []).map((set) => (set ?? []).map(decodeRange));
}

function decodeRequested(list: readonly string[] | null | undefined): IP[] {
  return (list ?? []).map((text) => {
    if (text === "") throw invalidConfig("cannot understand ip: IP <nil> not v4 nor v6");
    const ip = parseRequestedIP(text);
    if (!ip) throw invalidConfig(`invalid IP address ${text}`);
    return ip;
  });
}

function isV4Mapped(ip: IP): boolean {
  return ip.family === 6 && canonicalIP(ip).family === 4;
}

/** True when `ip` lies in the range's subnet, between its start and end. */
export function rangeContains(r: Range, ip: IP): boolean {
  const addr = canonicalIP(ip);
  return contains(r.subnet, addr) && compareIP(addr, r.start) >= 0 && compareIP(addr, r.end) <= 0;
}

/** `start-end`, as the reference names a range in messages. */
function rangeString(r: Range): string {
  return `${formatIP(r.start)}-${formatIP(r.end)}`;
}

/** True when two ranges share an address (the reference's endpoint test). */
function rangesOverlap(a: Range, b: Range): boolean {
  if (a.start.family !== b.start.family) return false;
  return rangeContains(a, b.start) || rangeContains(a, b.end) || rangeContains(b, a.start) ||
    rangeContains(b, a.end);
}

/** The range of a set holding `ip`, if any. */
export function rangeFor(set: RangeSet, ip: IP): Range | undefined {
  return set.find((r) => rangeContains(r, ip));
}

/** The ranges of a set joined by commas, as in the reference's messages. */
export function rangeSetString(set: RangeSet): string {
  return set.map(rangeString).join(",");
}

/** Validates one range and fills in the gateway, start and end defaults. */
export function canonicalizeRange(decoded: DecodedRange): Range {
  if (!decoded.subnet) throw invalidConfig("IP <nil> not v4 nor v6");
  const given = decoded.subnet;
  const bits = bitsOf(given.ip.family);
  if (given.prefix > bits - 2) {
    throw invalidConfig(
      `Network ${formatIP(canonicalIP(given.ip))}/${given.prefix} too small to allocate from`,
    );
  }
  if (isV4Mapped(given.ip)) throw invalidConfig("IPNet IP and Mask version mismatch");
  const subnet = networkOf(given);
  if (subnet.ip.value !== given.ip.value) {
    throw invalidConfig(
      `Network has host bits set. For a subnet mask of length ${given.prefix} the network address is ${
        formatIP(subnet.ip)
      }`,
    );
  }
  const network = formatCIDR(subnet);
  const gateway = decoded.gateway ?? addToIP(subnet.ip, 1n);
  // The bounds are checked against each other as the reference does: start
  // against a given end, then end against the (possibly defaulted) start.
  const inside = (ip: IP, start?: IP, end?: IP) =>
    ip.family === subnet.ip.family && contains(subnet, ip) &&
    (!start || compareIP(ip, start) >= 0) && (!end || compareIP(ip, end) <= 0);
  let start = decoded.start;
  if (start) {
    if (!inside(start, start, decoded.end)) {
      throw invalidConfig(`RangeStart ${formatIP(start)} not in network ${network}`);
    }
  } else {
    start = addToIP(subnet.ip, 1n);
  }
  let end = decoded.end;
  if (end) {
    if (!inside(end, start, end)) {
      throw invalidConfig(`RangeEnd ${formatIP(end)} not in network ${network}`);
    }
  } else {
    const last = lastAddress(subnet);
    end = subnet.ip.family === 4 ? addToIP(last, -1n) : last;
  }
  return { subnet, start, end, gateway };
}

/** Validates a range set: one family, no overlaps inside it. */
function canonicalizeRangeSet(decoded: readonly DecodedRange[]): Range[] {
  if (decoded.length === 0) throw invalidConfig("empty range set");
  const set: Range[] = [];
  for (const d of decoded) {
    const r = canonicalizeRange(d);
    if (set.length && r.start.family !== set[0]!.start.family) {
      throw invalidConfig("mixed address families");
    }
    set.push(r);
  }
  for (let i = 0; i < set.length; i++) {
    for (let j = i + 1; j < set.length; j++) {
      if (rangesOverlap(set[i]!, set[j]!)) {
        throw invalidConfig(
          `subnets ${rangeString(set[i]!)} and ${rangeString(set[j]!)} overlap`,
        );
      }
    }
  }
  return set;
}

function requestedFromCniArgs(cniArgs: string): IP[] {
  const ip = parseCniArgs(cniArgs, ["IP"]).IP;
  if (ip === undefined || ip === "") return [];
  const parsed = parseRequestedIP(ip);
  if (!parsed) {
    throw new CniError(
      ErrorCode.invalidEnvironment,
      `ARGS: error parsing value of pair "IP=${ip}": invalid IP address ${ip}`,
    );
  }
  return [parsed];
}

/**
 * Reads host-local's configuration from the whole network config and
 * CNI_ARGS, in the reference's order: decoding, the `ipam` key, CNI_ARGS,
 * then the ranges.
 */
export function loadHostLocalConfig(
  config: Record<string, unknown>,
  cniArgs: string,
): HostLocalConfig {
  const net = parseConf(HostLocalNet, config, "IPAM config");
  const ipam = net.ipam;
  const runtimeRanges = decodeRangeSets(net.runtimeConfig?.ipRanges);
  const fromArgs = decodeRequested(net.args?.cni?.ips);
  const fromRuntime = decodeRequested(net.runtimeConfig?.ips);
  if (!ipam) throw invalidConfig("IPAM config missing 'ipam' key");
  const routes = toRoutes(ipam.routes, "ipam.routes");
  const legacy = decodeRange(ipam);
  const ranges = decodeRangeSets(ipam.ranges);
  const requestedIPs = [...requestedFromCniArgs(cniArgs), ...fromArgs, ...fromRuntime];

  // The legacy top-level range counts only when it names a subnet.
  const decoded = [...runtimeRanges, ...(legacy.subnet ? [[legacy]] : []), ...ranges];
  if (decoded.length === 0) throw invalidConfig("no IP ranges specified");
  const sets = decoded.map((set, i) => {
    try {
      return canonicalizeRangeSet(set);
    } catch (e) {
      throw invalidConfig(`invalid range set ${i}: ${(e as Error).message}`);
    }
  });
  checkAddressesPerFamily(sets.map((s) => s[0]!.start.family), net.cniVersion ?? "");
  for (let i = 0; i < sets.length; i++) {
    for (let j = i + 1; j < sets.length; j++) {
      if (sets[i]!.some((a) => sets[j]!.some((b) => rangesOverlap(a, b)))) {
        throw invalidConfig(`range set ${i} overlaps with ${j}`);
      }
    }
  }
  return {
    name: net.name ?? "",
    ranges: sets,
    routes,
    dataDir: ipam.dataDir || DEFAULT_DATA_DIR,
    resolvConf: ipam.resolvConf ?? "",
    requestedIPs,
  };
}

/**
 * Reads resolv.conf text into DNS settings: `nameserver`, `domain`,
 * `search` and `options` lines; comments and short lines are skipped.
 */
export function parseResolvConf(text: string): Dns {
  const dns: Dns = {};
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line[0] === "#" || line[0] === ";") continue;
    const [key, ...values] = line.split(/\s+/);
    if (values.length === 0) continue;
    switch (key) {
      case "nameserver":
        (dns.nameservers ??= []).push(values[0]!);
        break;
      case "domain":
        dns.domain = values[0]!;
        break;
      case "search":
        (dns.search ??= []).push(...values);
        break;
      case "options":
        (dns.options ??= []).push(...values);
        break;
    }
  }
  return dns;
}
