/**
 * Kernel state of a test namespace, read with `ip -j`, `*tables-save` and
 * `nft`, as short canonical strings that are easy to compare; and a veth
 * between two test namespaces.
 * @module
 */

import { sh, type TestNetns } from "./netns.ts";

/** An address as `ip -j addr` prints it. */
export interface AddrJ {
  family: string;
  local: string;
  prefixlen: number;
  broadcast?: string;
  scope: string;
  flags?: string[];
}

/** A link as `ip -j -d addr` prints it. */
export interface LinkJ {
  ifindex: number;
  ifname: string;
  address: string;
  mtu: number;
  flags: string[];
  master?: string;
  /** The peer or lower link when it is in the same namespace (else `link_index`). */
  link?: string;
  link_index?: number;
  link_netnsid?: number;
  promiscuity?: number;
  linkinfo?: {
    info_kind?: string;
    info_data?: Record<string, unknown>;
    info_slave_kind?: string;
    info_slave_data?: Record<string, unknown>;
  };
  addr_info: AddrJ[];
}

/** A route as `ip -j route` prints it. */
export interface RouteJ {
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

/** The link `name` in `ns`, or undefined. */
export async function link(ns: TestNetns, name: string): Promise<LinkJ | undefined> {
  return (await links(ns)).find((l) => l.ifname === name);
}

/** The veths of `ns`. */
export async function veths(ns: TestNetns): Promise<LinkJ[]> {
  return (await links(ns)).filter((l) => l.linkinfo?.info_kind === "veth");
}

/**
 * The addresses of a link other than link-local, as
 * `addr/prefix[ brd b][ scope s]` (the scope when it is not global).
 */
export function addresses(l: LinkJ): string[] {
  return l.addr_info.filter((a) => a.scope !== "link").map((a) =>
    `${a.local}/${a.prefixlen}${a.broadcast ? ` brd ${a.broadcast}` : ""}${
      a.scope === "global" ? "" : ` scope ${a.scope}`
    }`
  ).sort();
}

/**
 * The main-table routes of `ns` that a plugin made (the kernel's own left
 * out), as `dst [via gw] dev d [scope s] [src p]`, with the random name
 * `hostVeth` (when given) replaced by `HOSTVETH`.
 */
export async function routes(ns: TestNetns, hostVeth?: string): Promise<string[]> {
  const out: string[] = [];
  for (const family of ["-4", "-6"]) {
    for (const r of await ns.ipJson<RouteJ[]>(family, "route", "show")) {
      if (r.protocol === "kernel" || r.type === "multicast") continue;
      const dev = hostVeth && r.dev === hostVeth ? "HOSTVETH" : r.dev;
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

/** A sysctl of `ns` (`net/ipv4/ip_forward`), or undefined when absent. */
export async function sysctl(ns: TestNetns, key: string): Promise<string | undefined> {
  return await ns.exec("cat", [`/proc/sys/${key}`]).then((s) => s.trim(), () => undefined);
}

/** The CNI- chains and their rules in `ns`'s nat tables (iptables-save lines), both families. */
export async function iptablesMasq(ns: TestNetns): Promise<string[]> {
  const out: string[] = [];
  for (const tool of ["iptables-save", "ip6tables-save"]) {
    const saved = await ns.exec(tool, ["-t", "nat"]);
    out.push(...saved.split("\n").filter((l) => /CNI-/.test(l)));
  }
  return out;
}

/** The nftables masquerade table of the plugins, `nft list` text, or "" when absent. */
export async function nftMasqTable(ns: TestNetns): Promise<string> {
  return await ns.exec("nft", ["list", "table", "inet", "cni_plugins_masquerade"]).catch(() => "");
}

/** The rules of the nftables masquerade chain `masq_checks` (text, handles left out). */
export async function nftMasqRules(ns: TestNetns): Promise<string[]> {
  const text = await ns.exec("nft", [
    "list",
    "chain",
    "inet",
    "cni_plugins_masquerade",
    "masq_checks",
  ]).catch(() => "");
  return text.split("\n").map((l) => l.trim()).filter((l) => / masquerade( |$)/.test(l));
}

/** Every masquerade rule of either backend. */
export async function masqRules(ns: TestNetns): Promise<string[]> {
  return [...await iptablesMasq(ns), ...await nftMasqRules(ns)];
}

/** Creates a veth pair between two test namespaces, both ends up. */
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

/** A route as `ip -j -d route show table all` prints it. */
interface DetailedRouteJ extends RouteJ {
  table: string;
  metric?: number;
  metrics?: Record<string, unknown>[];
}

/**
 * Every route of `ns` outside the local table, both families, with table,
 * protocol and scope, as `[type ]dst [via gw] dev d table t proto p scope s
 * [src a] [metric m] [mtu n]`, sorted.
 */
export async function allRoutes(ns: TestNetns): Promise<string[]> {
  const all = await ns.ipJson<DetailedRouteJ[]>("-d", "route", "show", "table", "all");
  return all.filter((r) => r.table !== "local").map((r) =>
    [
      r.type === "unicast" ? "" : r.type,
      r.dst,
      r.gateway ? `via ${r.gateway}` : "",
      `dev ${r.dev}`,
      `table ${r.table}`,
      `proto ${r.protocol}`,
      `scope ${r.scope}`,
      r.prefsrc ? `src ${r.prefsrc}` : "",
      r.metric !== undefined ? `metric ${r.metric}` : "",
      ...(r.metrics ?? []).flatMap((m) => Object.entries(m).map(([k, v]) => `${k} ${v}`)),
    ].filter(Boolean).join(" ")
  ).sort();
}

/** The policy rules of `ns`, IPv4 then IPv6, as `prio: from src[/len] lookup table`. */
export async function rules(ns: TestNetns): Promise<string[]> {
  const out: string[] = [];
  for (const family of ["-4", "-6"]) {
    const list = await ns.ipJson<
      { priority: number; src: string; srclen?: number; table: string }[]
    >(
      family,
      "rule",
      "show",
    );
    out.push(
      ...list.map((r) =>
        `${r.priority}: from ${r.src}${
          r.srclen !== undefined ? `/${r.srclen}` : ""
        } lookup ${r.table}`
      ),
    );
  }
  return out;
}
