/**
 * Fixtures for the ptp tests: configs with a throwaway host-local dataDir,
 * plugin runs inside a fake host, and the kernel state of both ends read
 * with `ip -j` as short canonical strings that are easy to compare.
 * @module
 */

import { formatCIDR, formatIP, lastAddress, networkOf, parseCIDR } from "../../lib/ipnet.ts";
import { parseResult, toCurrentResult } from "../../lib/spec/convert.ts";
import type { Result } from "../../lib/spec/schemas.ts";
import { cniEnv, DIST_BIN, type PluginRun, REFERENCE_BIN, runApplet } from "./applet.ts";
import { sh, type TestNetns } from "./netns.ts";

/** cnikit first, then the reference plugins (host-local until cnikit has its own). */
export const PTP_PATH = `${DIST_BIN}:${REFERENCE_BIN}`;

/** The address families of an attachment. */
export type Families = "v4" | "v6" | "dual";

/** The subnets the tests hand out (each test has its own namespaces). */
export const SUBNET = { 4: "10.77.0.0/24", 6: "fd00:77::/64" } as const;

/** A host-local `ipam` section for `families`, storing its leases in `dataDir`. */
export function hostLocal(families: Families, dataDir: string): Record<string, unknown> {
  const fams: (4 | 6)[] = families === "v4" ? [4] : families === "v6" ? [6] : [4, 6];
  return {
    type: "host-local",
    dataDir,
    ranges: fams.map((f) => [{ subnet: SUBNET[f] }]),
    routes: fams.map((f) => ({ dst: f === 4 ? "0.0.0.0/0" : "::/0" })),
  };
}

/** A ptp config named `ptpnet`. */
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
    ipam: hostLocal(families, dataDir),
    ...extra,
  };
}

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "cnikit-ptp-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** One attachment as a runtime names it. */
export interface Attachment {
  containerId?: string;
  netns: string;
  ifname?: string;
}

/** Runs `ptp` (cnikit's, or the one in `bin`) inside `host`. */
export function ptp(
  command: string,
  host: TestNetns,
  at: Attachment,
  conf: Record<string, unknown> | string,
  bin?: string,
): Promise<PluginRun> {
  return runApplet("ptp", {
    env: cniEnv(command, {
      containerId: at.containerId ?? "ctr1",
      netns: at.netns,
      ifname: at.ifname ?? "eth0",
      path: PTP_PATH,
    }),
    stdin: conf,
    host,
    ...(bin ? { bin } : {}),
  });
}

/** A result of any version in the 1.x shape (0.1.0/0.2.0 lose the interfaces). */
export function currentResult(run: PluginRun, version: string): Result {
  return toCurrentResult(parseResult(run.json, version));
}

/** The leases host-local keeps under `dataDir` (file names other than its bookkeeping). */
export async function leases(dataDir: string, network = "ptpnet"): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(`${dataDir}/${network}`)) {
      if (e.name !== "lock" && !e.name.startsWith("last_reserved_ip")) out.push(e.name);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort();
}

interface AddrJ {
  family: string;
  local: string;
  prefixlen: number;
  broadcast?: string;
  scope: string;
  flags?: string[];
}

/** A link as `ip -j -d addr` prints it. */
export interface LinkJ {
  ifname: string;
  address: string;
  mtu: number;
  flags: string[];
  link_netnsid?: number;
  linkinfo?: { info_kind?: string };
  addr_info: AddrJ[];
}

interface RouteJ {
  dst: string;
  gateway?: string;
  dev?: string;
  scope?: string;
  prefsrc?: string;
  protocol?: string;
  type?: string;
}

/** The links of `ns` (without lo). */
export async function links(ns: TestNetns): Promise<LinkJ[]> {
  return (await ns.ipJson<LinkJ[]>("-d", "addr", "show")).filter((l) => l.ifname !== "lo");
}

/** The addresses of a link other than link-local, as `addr/prefix[ brd b]`. */
export function addresses(link: LinkJ): string[] {
  return link.addr_info.filter((a) => a.scope !== "link").map((a) =>
    `${a.local}/${a.prefixlen}${a.broadcast ? ` brd ${a.broadcast}` : ""}${
      a.scope === "global" ? "" : ` scope ${a.scope}`
    }`
  ).sort();
}

/**
 * The main-table routes of `ns` that a plugin made (the kernel's own left
 * out), as `dst [via gw] dev d [scope s] [src p]` with the host veth's
 * random name replaced by `HOSTVETH`.
 */
export async function routes(ns: TestNetns, hostVeth?: string): Promise<string[]> {
  const out: string[] = [];
  for (const family of ["-4", "-6"]) {
    for (const r of await ns.ipJson<RouteJ[]>(family, "route", "show")) {
      if (r.protocol === "kernel" || r.type === "multicast") continue;
      const dev = r.dev === hostVeth && hostVeth ? "HOSTVETH" : r.dev;
      out.push(
        [
          r.dst,
          r.gateway ? `via ${r.gateway}` : "",
          `dev ${dev}`,
          r.scope && r.scope !== "global" ? `scope ${r.scope}` : "",
          r.prefsrc ? `src ${r.prefsrc}` : "",
        ].filter(Boolean).join(" "),
      );
    }
  }
  return out.sort();
}

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

/** The CNI- chains and their rules in `ns`'s nat table, both families. */
export async function cniNatRules(ns: TestNetns): Promise<string[]> {
  const out: string[] = [];
  for (const tool of ["iptables-save", "ip6tables-save"]) {
    const saved = await ns.exec(tool, ["-t", "nat"]);
    out.push(...saved.split("\n").filter((l) => /CNI-/.test(l)));
  }
  return out;
}

/** The ptp masquerade table in nftables, `nft list` text, or "" when absent. */
export async function nftMasq(ns: TestNetns): Promise<string> {
  return await ns.exec("nft", ["list", "table", "inet", "cni_plugins_masquerade"]).catch(() => "");
}

/** The rules of chain masq_checks (text, handles left out). */
export async function nftMasqRules(ns: TestNetns): Promise<string[]> {
  const text = await ns.exec("nft", [
    "list",
    "chain",
    "inet",
    "cni_plugins_masquerade",
    "masq_checks",
  ])
    .catch(() => "");
  return text.split("\n").map((l) => l.trim()).filter((l) => / masquerade( |$)/.test(l));
}

/** Creates a veth pair between two test namespaces. */
export async function vethBetween(
  a: TestNetns,
  aName: string,
  b: TestNetns,
  bName: string,
): Promise<void> {
  await sh("ip", [
    "-n",
    a.name,
    "link",
    "add",
    aName,
    "type",
    "veth",
    "peer",
    "name",
    bName,
    "netns",
    b.name,
  ]);
  await sh("ip", ["-n", a.name, "link", "set", aName, "up"]);
  await sh("ip", ["-n", b.name, "link", "set", bName, "up"]);
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
  const hostVeths = (await links(want.host)).filter((l) => l.linkinfo?.info_kind === "veth");
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
