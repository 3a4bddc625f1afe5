/**
 * Fixtures for the bridge tests: configs with a throwaway host-local
 * dataDir, plugin runs inside a fake host, and the kernel state of both
 * sides (bridge, ports and their flags, VLANs, addresses, routes, masquerade
 * rules, spoof-check objects) read with `ip -j`, `bridge -j`, `*tables-save`
 * and `nft -j`, as short canonical strings that are easy to compare.
 * @module
 */

import { parseResult, toCurrentResult } from "../../lib/spec/convert.ts";
import type { Result } from "../../lib/spec/schemas.ts";
import { cniEnv, DIST_BIN, type PluginRun, REFERENCE_BIN, runApplet } from "./applet.ts";
import { sh, type TestNetns, uniqueName } from "./netns.ts";

/** cnikit first, then the reference plugins. */
export const BRIDGE_PATH = `${DIST_BIN}:${REFERENCE_BIN}`;
/** Only the reference plugins (its bridge delegating to its host-local). */
export const REFERENCE_PATH = REFERENCE_BIN;

/** The subnets the tests hand out (each test has its own namespaces). */
export const SUBNET = { 4: "10.88.0.0/24", 6: "fd00:88::/64" } as const;

/** The address families of an attachment. */
export type Families = "v4" | "v6" | "dual";

/** A host-local `ipam` section for `families`, storing its leases in `dataDir`. */
export function hostLocal(
  families: Families,
  dataDir: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  const fams: (4 | 6)[] = families === "v4" ? [4] : families === "v6" ? [6] : [4, 6];
  return {
    type: "host-local",
    dataDir,
    ranges: fams.map((f) => [{ subnet: SUBNET[f] }]),
    ...extra,
  };
}

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

/** Runs `fn` with a fresh temporary directory, removed afterwards. */
export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "cnikit-bridge-" });
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
  args?: string;
}

/** Runs `bridge` (cnikit's, or the one in `bin`) inside `host`. */
export function bridge(
  command: string,
  host: TestNetns,
  at: Attachment,
  conf: Record<string, unknown> | string,
  bin?: string,
): Promise<PluginRun> {
  return runApplet("bridge", {
    env: cniEnv(command, {
      containerId: at.containerId ?? "ctr1",
      netns: at.netns,
      ifname: at.ifname ?? "eth0",
      ...(at.args !== undefined ? { args: at.args } : {}),
      path: bin === REFERENCE_BIN ? REFERENCE_PATH : BRIDGE_PATH,
    }),
    stdin: conf,
    host,
    ...(bin ? { bin } : {}),
  });
}

/** `conf` with `prevResult` set, for CHECK. */
export function withPrev(
  conf: Record<string, unknown>,
  add: PluginRun,
): Record<string, unknown> {
  return { ...conf, prevResult: add.json };
}

/** A result of any version in the 1.x shape (0.1.0/0.2.0 lose the interfaces). */
export function currentResult(run: PluginRun, version: string): Result {
  return toCurrentResult(parseResult(run.json, version));
}

/** The leases host-local keeps under `dataDir`, of every network, as `network/ip`. */
export async function leases(dataDir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const net of Deno.readDir(dataDir)) {
      if (!net.isDirectory) continue;
      for await (const e of Deno.readDir(`${dataDir}/${net.name}`)) {
        if (e.name !== "lock" && !e.name.startsWith("last_reserved_ip")) {
          out.push(`${net.name}/${e.name}`);
        }
      }
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
}

/** A link as `ip -j -d addr` prints it. */
export interface LinkJ {
  ifindex: number;
  ifname: string;
  address: string;
  mtu: number;
  flags: string[];
  master?: string;
  link_index?: number;
  promiscuity?: number;
  linkinfo?: {
    info_kind?: string;
    info_data?: Record<string, unknown>;
    info_slave_kind?: string;
    info_slave_data?: Record<string, unknown>;
  };
  addr_info: AddrJ[];
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

/** The addresses of a link other than link-local, as `addr/prefix[ brd b]`. */
export function addresses(l: LinkJ): string[] {
  return l.addr_info.filter((a) => a.scope !== "link").map((a) =>
    `${a.local}/${a.prefixlen}${a.broadcast ? ` brd ${a.broadcast}` : ""}`
  ).sort();
}

/** A port flag of a bridge port (`hairpin`, `isolated`, …). */
export function portFlag(l: LinkJ, flag: string): unknown {
  return l.linkinfo?.info_slave_data?.[flag];
}

interface RouteJ {
  dst: string;
  gateway?: string;
  dev?: string;
  scope?: string;
  protocol?: string;
  type?: string;
}

/**
 * The main-table routes of `ns` that are not the kernel's own, as
 * `dst [via gw] dev d`.
 */
export async function routes(ns: TestNetns): Promise<string[]> {
  const out: string[] = [];
  for (const family of ["-4", "-6"]) {
    for (const r of await ns.ipJson<RouteJ[]>(family, "route", "show")) {
      if (r.protocol === "kernel" || r.type === "multicast") continue;
      out.push(
        [r.dst, r.gateway ? `via ${r.gateway}` : "", `dev ${r.dev}`].filter(Boolean).join(" "),
      );
    }
  }
  return out.sort();
}

/** `bridge -j vlan show` in `ns`, as `port vid[ pvid][ untagged]` lines. */
export async function vlans(ns: TestNetns): Promise<string[]> {
  const out = await ns.exec("bridge", ["-j", "vlan", "show"]);
  const ports = JSON.parse(out || "[]") as {
    ifname: string;
    vlans: { vlan: number; vlanEnd?: number; flags?: string[] }[];
  }[];
  return ports.flatMap((p) =>
    p.vlans.map((v) =>
      [p.ifname, v.vlanEnd ? `${v.vlan}-${v.vlanEnd}` : String(v.vlan), ...(v.flags ?? [])].join(
        " ",
      )
        .toLowerCase()
    )
  ).sort();
}

/** The CNI- chains and their rules in `ns`'s nat tables, both families. */
export async function iptablesMasq(ns: TestNetns): Promise<string[]> {
  const out: string[] = [];
  for (const tool of ["iptables-save", "ip6tables-save"]) {
    const saved = await ns.exec(tool, ["-t", "nat"]);
    out.push(...saved.split("\n").filter((l) => /CNI-/.test(l)));
  }
  return out;
}

/** The rules of the nftables masquerade chain `masq_checks` (text, handles left out). */
export async function nftMasq(ns: TestNetns): Promise<string[]> {
  const text = await ns.exec("nft", [
    "list",
    "chain",
    "inet",
    "cni_plugins_masquerade",
    "masq_checks",
  ])
    .catch(() => "");
  return text.split("\n").map((l) => l.trim()).filter((l) => / masquerade\b/.test(l));
}

/** Every masquerade rule of either backend. */
export async function masqRules(ns: TestNetns): Promise<string[]> {
  return [...await iptablesMasq(ns), ...await nftMasq(ns)];
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

/** A sysctl of `ns` (`net/ipv4/ip_forward`), or undefined when absent. */
export async function sysctl(ns: TestNetns, key: string): Promise<string | undefined> {
  return await ns.exec("cat", [`/proc/sys/${key}`]).then((s) => s.trim(), () => undefined);
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
