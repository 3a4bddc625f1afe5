/**
 * The spec's shapes as zod schemas, in one place: network configurations and
 * results of every version. TypeScript types come from them.
 *
 * `zod/mini` rather than classic zod: bundled, it is 18 KB instead of 450 KB,
 * which is 25 ms less on every plugin start.
 * @module
 */

import * as z from "zod/mini";
import { parseCIDR, parseIP } from "../ipnet.ts";

/** An IP address string, any family. */
export const IPString = z.string().check(
  z.refine((s) => parseIP(s) !== null, "invalid IP address"),
);
/** A CIDR string with host bits allowed (`10.1.0.5/16`). */
export const CIDRString = z.string().check(
  z.refine((s) => parseCIDR(s) !== null, "invalid CIDR address"),
);

const Count = z.number().check(z.int(), z.nonnegative());

/** DNS settings of a config or result. */
export const Dns = z.object({
  nameservers: z.optional(z.array(z.string())),
  domain: z.optional(z.string()),
  search: z.optional(z.array(z.string())),
  options: z.optional(z.array(z.string())),
});
export type Dns = z.infer<typeof Dns>;

/** A route; the 1.1.0 extras are optional everywhere. */
export const Route = z.object({
  dst: CIDRString,
  gw: z.optional(IPString),
  mtu: z.optional(Count),
  advmss: z.optional(Count),
  priority: z.optional(Count),
  table: z.optional(Count),
  scope: z.optional(Count),
});
export type Route = z.infer<typeof Route>;

/** An interface entry of a 0.3.0+ result. */
export const Interface = z.object({
  name: z.string(),
  mac: z.optional(z.string()),
  mtu: z.optional(Count),
  sandbox: z.optional(z.string()),
  socketPath: z.optional(z.string()),
  pciID: z.optional(z.string()),
});
export type Interface = z.infer<typeof Interface>;

/** An IP entry of a 1.x result. */
export const IPConfig = z.object({
  address: CIDRString,
  gateway: z.optional(IPString),
  interface: z.optional(Count),
});
export type IPConfig = z.infer<typeof IPConfig>;

/** A 1.0.0 / 1.1.0 result: the shape cnikit works in. */
export const Result = z.object({
  cniVersion: z.string(),
  interfaces: z.optional(z.array(Interface)),
  ips: z.optional(z.array(IPConfig)),
  routes: z.optional(z.array(Route)),
  dns: z.optional(Dns),
});
export type Result = z.infer<typeof Result>;

/** A 0.3.0 / 0.3.1 / 0.4.0 result: IPs carry `version`. */
export const Result04 = z.object({
  cniVersion: z.string(),
  interfaces: z.optional(z.array(z.pick(Interface, { name: true, mac: true, sandbox: true }))),
  ips: z.optional(z.array(z.extend(IPConfig, { version: z.optional(z.enum(["4", "6"])) }))),
  routes: z.optional(z.array(Route)),
  dns: z.optional(Dns),
});
export type Result04 = z.infer<typeof Result04>;

/** The per-family block of a 0.1.0 / 0.2.0 result. */
export const IPFamily02 = z.object({
  ip: CIDRString,
  gateway: z.optional(IPString),
  routes: z.optional(z.array(z.pick(Route, { dst: true, gw: true }))),
});
export type IPFamily02 = z.infer<typeof IPFamily02>;

/** A 0.1.0 / 0.2.0 result. */
export const Result02 = z.object({
  cniVersion: z.string(),
  ip4: z.optional(IPFamily02),
  ip6: z.optional(IPFamily02),
  dns: z.optional(Dns),
});
export type Result02 = z.infer<typeof Result02>;

/** Any result, in whichever version it was written. */
export type AnyResult = Result | Result04 | Result02;

/** The `ipam` section: only `type` is common to every IPAM plugin. */
export const IpamSection = z.looseObject({ type: z.optional(z.string()) });

/**
 * The keys every plugin config shares (SPEC "Plugin configuration objects").
 * Loose, since plugins carry their own keys next to these.
 */
export const PluginConf = z.looseObject({
  cniVersion: z.optional(z.string()),
  name: z.string(),
  type: z.string(),
  capabilities: z.optional(z.record(z.string(), z.boolean())),
  ipam: z.optional(IpamSection),
  dns: z.optional(Dns),
  runtimeConfig: z.optional(z.looseObject({})),
  args: z.optional(z.looseObject({})),
  prevResult: z.optional(z.unknown()),
});
export type PluginConf = z.infer<typeof PluginConf>;

/** One attachment named in a GC request. */
export const GCAttachment = z.object({ containerID: z.string(), ifname: z.string() });
export type GCAttachment = z.infer<typeof GCAttachment>;

/** A zod issue, as much of it as {@link describeIssues} reads. */
export interface Issue {
  path: readonly PropertyKey[];
  code?: string;
  expected?: string;
  message: string;
}

/**
 * A zod failure as one line, naming the expected type where that is the
 * problem: `ips.0.address: invalid CIDR address; mtu: expected number`.
 */
export function describeIssues(error: { issues: readonly Issue[] }): string {
  return error.issues.map((issue) => {
    const where = issue.path.map(String).join(".") || "(root)";
    const what = issue.code === "invalid_type" && issue.expected
      ? `expected ${issue.expected}`
      : issue.message;
    return `${where}: ${what}`;
  }).join("; ");
}
