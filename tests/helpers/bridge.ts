/**
 * Fixtures for the bridge tests: configs, plugin runs inside a fake host,
 * and what only a bridge has (port flags, VLANs with `bridge -j`, the
 * spoof-check objects with `nft -j`); a check of a whole attachment against
 * the kernel of both sides, and one that nothing of it is left.
 * @module
 */

import type { Result } from "../../lib/cni/spec/schemas.ts";
import { type HostRunner, hostRunner } from "./applet.ts";
import { leases } from "./ipam.ts";
import { addresses, type LinkJ, links, masqRules, veths } from "./kernel.ts";
import { type TestNetns, uniqueName } from "./netns.ts";

/** A bridge config named `brnet` on bridge `bridge`. */
export function bridgeConf(
  version: string,
  bridge: string,
  ipam: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return { cniVersion: version, name: "brnet", type: "bridge", bridge, ipam, ...extra };
}

/** A bridge name no other test uses. */
export function bridgeName(): string {
  return uniqueName("ckbr");
}

/** Runs `bridge` (cnikit's, or the one in `bin`) inside `host`. */
export const bridge: HostRunner = hostRunner("bridge");

/** A port flag of a bridge port (`hairpin`, `isolated`, …). */
export function portFlag(l: LinkJ, flag: string): unknown {
  return l.linkinfo?.info_slave_data?.[flag];
}

/**
 * `bridge -j vlan show` in `ns`, as `port vid[ pvid][ egress untagged]` lines. Consecutive VLANs
 * of a port with the same flags are one `first-last` line, as the kernel stores single VLANs
 * however they were added and iproute2 prints them one by one.
 */
export async function vlans(ns: TestNetns): Promise<string[]> {
  const out = await ns.exec("bridge", ["-j", "vlan", "show"]);
  const ports = JSON.parse(out || "[]") as {
    ifname: string;
    vlans: { vlan: number; vlanEnd?: number; flags?: string[] }[];
  }[];
  return ports.flatMap((p) => {
    const runs: { first: number; last: number; flags: string }[] = [];
    for (const v of p.vlans) {
      const flags = (v.flags ?? []).map((f) => ` ${f.toLowerCase()}`).join("");
      const prev = runs.at(-1);
      if (prev && prev.last + 1 === v.vlan && prev.flags === flags) prev.last = v.vlanEnd ?? v.vlan;
      else runs.push({ first: v.vlan, last: v.vlanEnd ?? v.vlan, flags });
    }
    return runs.map((r) =>
      `${p.ifname} ${r.first === r.last ? r.first : `${r.first}-${r.last}`}${r.flags}`
    );
  }).sort();
}

interface NftItem {
  chain?: { name: string };
  rule?: { chain: string; comment?: string; expr: unknown[] };
}

/**
 * The spoof-check objects of the `bridge nat` table: its chains (besides
 * PREROUTING) and each rule as `chain: <expr json> # comment`.
 */
export async function spoofCheck(ns: TestNetns): Promise<{ chains: string[]; rules: string[] }> {
  const text = await ns.exec("nft", ["-j", "list", "table", "bridge", "nat"]).catch(() => "");
  if (!text) return { chains: [], rules: [] };
  const items = (JSON.parse(text) as { nftables: NftItem[] }).nftables;
  return {
    chains: items.flatMap((i) => i.chain && i.chain.name !== "PREROUTING" ? [i.chain.name] : [])
      .sort(),
    rules: items.flatMap((i) =>
      i.rule ? [`${i.rule.chain}: ${JSON.stringify(i.rule.expr)} # ${i.rule.comment ?? ""}`] : []
    ),
  };
}

/** What {@link verifyAttachment} needs to know beyond the result. */
export interface Expectation {
  host: TestNetns;
  ctr: TestNetns;
  bridge: string;
  ifname?: string;
  mtu?: number;
  hairpin?: boolean;
  isolated?: boolean;
  /** The container link is expected down (disableContainerInterface). */
  down?: boolean;
}

/**
 * Checks a (current-shape) bridge result against the kernel of both sides
 * and returns the host veth. Results of 0.1.0/0.2.0 carry no interfaces;
 * the host veth is then the bridge's only veth port.
 */
export async function verifyAttachment(result: Result, want: Expectation): Promise<LinkJ> {
  const ifname = want.ifname ?? "eth0";
  const fail = (msg: string): never => {
    throw new Error(`${msg}\nresult: ${JSON.stringify(result)}`);
  };
  const hostLinks = await links(want.host);
  const br = hostLinks.find((l) => l.ifname === want.bridge) ??
    fail(`bridge ${want.bridge} missing`);
  if (br.linkinfo?.info_kind !== "bridge") fail(`${want.bridge} is not a bridge`);
  if (!br.flags.includes("UP")) fail(`${want.bridge} is not up`);
  const eth = (await links(want.ctr)).find((l) => l.ifname === ifname) ??
    fail(`${ifname} missing in the container`);
  const ports = hostLinks.filter((l) =>
    l.linkinfo?.info_kind === "veth" && l.master === want.bridge
  );
  let hostVeth: LinkJ;
  if (result.interfaces) {
    const [b, h, c] = result.interfaces;
    if (!b || !h || !c) fail("expected bridge, host veth and container interfaces");
    if (b!.name !== want.bridge || b!.mac !== br.address || b!.sandbox !== undefined) {
      fail(`bridge interface ${JSON.stringify(b)} != kernel ${br.address}`);
    }
    if (!/^veth[0-9a-f]{8}$/.test(h!.name)) fail(`bad host veth name ${h!.name}`);
    hostVeth = ports.find((l) => l.ifname === h!.name) ?? fail(`${h!.name} is not a port`);
    if (h!.mac !== hostVeth.address) fail(`host MAC ${h!.mac} != kernel ${hostVeth.address}`);
    if (h!.sandbox !== undefined) fail("host veth has a sandbox");
    if (c!.name !== ifname || c!.mac !== eth.address || c!.sandbox !== want.ctr.path) {
      fail(`container interface ${JSON.stringify(c)} != kernel ${eth.address}`);
    }
    if ((result.ips ?? []).some((ip) => ip.interface !== 2)) fail("IPs must point at interface 2");
  } else {
    const mine = ports.filter((p) => p.ifindex === eth.link_index);
    if (mine.length !== 1) fail(`expected the container's peer among the ports`);
    hostVeth = mine[0]!;
  }
  if (hostVeth.ifindex !== eth.link_index || hostVeth.link_index !== eth.ifindex) {
    fail("host veth and container link are not peers");
  }
  if (eth.linkinfo?.info_kind !== "veth") fail(`${ifname} is not a veth`);
  if (eth.flags.includes("UP") === (want.down ?? false)) fail(`${ifname} up state wrong`);
  if (!hostVeth.flags.includes("UP")) fail("host veth is not up");
  if (portFlag(hostVeth, "hairpin") !== (want.hairpin ?? false)) fail("hairpin flag wrong");
  if (portFlag(hostVeth, "isolated") !== (want.isolated ?? false)) fail("isolated flag wrong");
  const wantAddrs = (result.ips ?? []).map((ip) => ip.address).sort();
  const gotAddrs = addresses(eth).map((a) => a.replace(/ brd .*/, "")).sort();
  if (JSON.stringify(gotAddrs) !== JSON.stringify(wantAddrs)) {
    fail(`container addresses ${gotAddrs} != ${wantAddrs}`);
  }
  if (want.mtu !== undefined && (eth.mtu !== want.mtu || hostVeth.mtu !== want.mtu)) {
    fail(`MTU ${eth.mtu}/${hostVeth.mtu} != ${want.mtu}`);
  }
  return hostVeth;
}

/**
 * Nothing of any attachment is left: no veth on either side, no lease, no
 * masquerade rule, no spoof-check chain or rule. The bridge itself stays.
 */
export async function assertNothingLeft(
  host: TestNetns,
  ctrs: TestNetns[],
  dataDir: string,
): Promise<void> {
  const problems: string[] = [];
  const hostVeths = await veths(host);
  if (hostVeths.length) problems.push(`host veths ${hostVeths.map((l) => l.ifname)}`);
  for (const ctr of ctrs) {
    const left = await links(ctr);
    if (left.length) problems.push(`container links ${left.map((l) => l.ifname)} in ${ctr.name}`);
  }
  const held = await leases(dataDir);
  if (held.length) problems.push(`leases ${held}`);
  const masq = await masqRules(host);
  if (masq.length) problems.push(`masquerade rules ${masq.join(" | ")}`);
  const sc = await spoofCheck(host);
  if (sc.chains.length || sc.rules.length) problems.push(`spoof check ${JSON.stringify(sc)}`);
  if (problems.length) throw new Error(`left behind: ${problems.join("; ")}`);
}
