/**
 * Bridge-only kernel work for the bridge plugin: a bridge made when missing
 * and a veth pair attached to it with its port flags, all in one `ip -batch`;
 * VLANs on ports in one `bridge -batch`; gateway addresses under the
 * reference's rules (add when missing, refuse or replace a different one);
 * and the port's operational state.
 *
 * The batch never needs a lookup first: whether the bridge exists is guessed
 * from sysfs (no process) and a wrong guess, or a concurrent ADD creating the
 * same bridge, shows as the failure of one known line, after which the batch
 * runs again the other way.
 * @module
 */

import { CniError, ErrorCode } from "../../../lib/cni/errors.ts";
import { run } from "../../../lib/net/exec.ts";
import { addrCommand } from "../../../lib/net/iface.ts";
import { type AddrInfo, type IpCommand, type LinkInfo } from "../../../lib/net/ip.ts";
import { contains, formatCIDR, type IPNet, parseCIDR } from "../../../lib/cni/ipnet.ts";
import {
  createVeth,
  deleteLink,
  getLink,
  randomMac,
  VethBatchError,
  type VethEnd,
} from "../../../lib/net/link.ts";
import { requireNetns } from "../../../lib/net/netns.ts";
import { trySysctls } from "../../../lib/net/sysctl.ts";

/** The bridge an attachment joins; the creation-time settings only apply to a new bridge. */
export interface BridgeSpec {
  name: string;
  /** MTU of a new bridge. */
  mtu?: number;
  /** Promiscuous mode, set on every ADD. */
  promisc: boolean;
  /** A new bridge gets `vlan_filtering 1`. */
  vlanFiltering: boolean;
  /**
   * A new bridge gets a random MAC of its own, so it never takes over a
   * port's: what the reference's re-setting of a gateway bridge's MAC to
   * the one it was created with amounts to.
   */
  ownMac: boolean;
}

/** Flags of the host end as a bridge port. */
export interface PortFlags {
  hairpin: boolean;
  isolated: boolean;
}

/** Options for {@link attachToBridge}. */
export interface AttachOptions {
  bridge: BridgeSpec;
  port: PortFlags;
  /** The container's netns path and interface name (CNI_IFNAME). */
  netns: string;
  ifname: string;
  /** MTU of both veth ends. */
  mtu?: number;
  /** MAC of the container end; random when absent. */
  containerMac?: string;
  /** Another host link to report on in the same batch, when it exists (the VLAN gateway). */
  alsoShow?: string;
}

/** What {@link attachToBridge} made and saw. */
export interface Attached {
  host: VethEnd;
  container: VethEnd;
  /** The bridge's MAC before the new port joined. */
  macBefore: string;
  /** The bridge after the port joined, with its addresses. */
  bridge: LinkInfo;
  /** The `alsoShow` link with its addresses, when it exists. */
  other?: LinkInfo;
}

/** Tries of the bridge's batch when a guess about the bridge's existence was wrong. */
const ATTEMPTS = 6;

function onOff(value: boolean): string {
  return value ? "on" : "off";
}

function notABridge(name: string): CniError {
  return new CniError(
    ErrorCode.invalidNetworkConfig,
    `failed to create bridge "${name}": "${name}" already exists but is not a bridge`,
  );
}

/**
 * What sysfs says about link `name`: a hint only, since sysfs shows the
 * namespace that mounted it, which a runtime may not have remounted.
 */
function sysfsHint(name: string): "bridge" | "other" | "missing" | "unknown" {
  const stat = (path: string) => {
    try {
      Deno.statSync(path);
      return true;
    } catch {
      return false;
    }
  };
  if (!stat("/sys/class/net")) return "unknown";
  if (!stat(`/sys/class/net/${name}`)) return "missing";
  return stat(`/sys/class/net/${name}/bridge`) ? "bridge" : "other";
}

/** The commands that make `port` a bridge port with `flags`. */
function portCommands(port: string, bridge: string, flags: PortFlags): IpCommand[] {
  return [
    ["link", "set", port, "master", bridge],
    [
      "link",
      "set",
      port,
      "type",
      "bridge_slave",
      "hairpin",
      onOff(flags.hairpin),
      "isolated",
      onOff(flags.isolated),
    ],
  ];
}

/**
 * Makes sure the bridge exists and is up, and attaches a new veth pair to
 * it (lib/net/link's createVeth, with the bridge's lines in the same batch):
 * the host end `veth<8 hex>` becomes an up port with the given flags, the
 * container end is made inside the container's netns, down. One `ip`
 * process in the common case. On failure nothing of the pair is left.
 */
export async function attachToBridge(o: AttachOptions): Promise<Attached> {
  requireNetns(o.netns);
  const br = o.bridge;
  const hint = sysfsHint(br.name);
  if (hint === "other") {
    // Only a hint: ask the kernel before refusing.
    const link = await getLink(br.name);
    if (link && link.linkinfo?.info_kind !== "bridge") throw notABridge(br.name);
  }
  let create = hint === "missing";
  for (let attempt = 1;; attempt++) {
    const before: IpCommand[] = [
      ...(create
        ? [[
          "link",
          "add",
          br.name,
          ...(br.mtu ? ["mtu", String(br.mtu)] : []),
          ...(br.ownMac ? ["address", randomMac()] : []),
          "type",
          "bridge",
          ...(br.vlanFiltering ? ["vlan_filtering", "1"] : []),
        ]]
        : []),
      ["link", "set", br.name, ...(br.promisc ? ["promisc", "on"] : []), "up"],
      // `addr show`, not `link show`: in a batch, `link show` leaves ip set to
      // the link family, and every later `addr show` prints no addresses.
      ["addr", "show", "dev", br.name],
    ];
    const upLine = create ? 1 : 0;
    let veth;
    try {
      veth = await createVeth({
        netns: o.netns,
        ifname: o.ifname,
        ...(o.mtu ? { mtu: o.mtu } : {}),
        ...(o.containerMac ? { containerMac: o.containerMac } : {}),
        flags: ["-d"],
        before,
        after: (port) => [
          ...portCommands(port, br.name, o.port),
          ["addr", "show", "dev", br.name],
          ...(o.alsoShow ? [["addr", "show", "dev", o.alsoShow]] : []),
        ],
        ...(o.alsoShow ? { optionalLast: /does not exist/ } : {}),
      });
    } catch (e) {
      if (!(e instanceof VethBatchError)) throw e;
      if (e.part === "before" && attempt < ATTEMPTS) {
        // Another ADD made the bridge first, or the hint was wrong either way.
        if (create && e.index === 0 && /File exists/.test(e.said)) {
          create = false;
          continue;
        }
        if (!create && e.index === upLine && /Cannot find device/.test(e.said)) {
          create = true;
          continue;
        }
      }
      const seen = (e.outputs[0] as LinkInfo[] | undefined)?.[0];
      if (seen && seen.linkinfo?.info_kind !== "bridge") throw notABridge(br.name);
      throw new CniError(
        ErrorCode.ioFailure,
        e.part === "before"
          ? `failed to create bridge "${br.name}": ${e.said}`
          : `failed to connect a veth pair to bridge "${br.name}": ${e.said}`,
        e.details,
      );
    }
    const [before_, after, other] = veth.outputs as LinkInfo[][];
    if (before_?.[0]?.linkinfo?.info_kind !== "bridge" || !after?.[0]) {
      await deleteLink(veth.host.name).catch(() => {});
      throw notABridge(br.name);
    }
    // We want to own the bridge's routes too; best effort, as in the reference.
    trySysctls({ [`net/ipv6/conf/${br.name}/accept_ra`]: "0" });
    return {
      host: veth.host,
      container: veth.container,
      macBefore: before_[0].address ?? "",
      bridge: after[0],
      ...(other?.[0] ? { other: other[0] } : {}),
    };
  }
}

// ---- VLANs ------------------------------------------------------------------

/** The VLAN settings of a port. */
export interface PortVlans {
  /** Access VLAN (PVID, untagged), or the native VLAN of a trunk; 0 for none. */
  vlan: number;
  /** Tagged VLANs, sorted and unique. */
  trunk: number[];
  /** Keep the bridge's default PVID on the port. */
  preserveDefaultVlan: boolean;
}

/** One `vlanTrunk` entry: a range (`minID`…`maxID`) and/or a single `id`. */
export interface TrunkEntry {
  minID?: number | null;
  maxID?: number | null;
  id?: number | null;
}

function trunkId(value: number, what: string): number {
  if (value <= 0 || value > 4094) {
    throw new CniError(ErrorCode.invalidNetworkConfig, `incorrect trunk ${what} parameter`);
  }
  return value;
}

/**
 * The VLAN ids of a `vlanTrunk`, sorted and unique, validated as the
 * reference does and with its messages (code 7).
 */
export function collectVlanTrunk(entries: readonly TrunkEntry[]): number[] {
  const invalid = (msg: string) => new CniError(ErrorCode.invalidNetworkConfig, msg);
  const vids = new Set<number>();
  for (const item of entries) {
    const min = item.minID ?? undefined;
    const max = item.maxID ?? undefined;
    if (min !== undefined && max !== undefined) {
      trunkId(min, "minID");
      trunkId(max, "maxID");
      if (max < min) throw invalid("minID is greater than maxID in trunk parameter");
      for (let v = min; v <= max; v++) vids.add(v);
    } else if (max !== undefined) {
      throw invalid("minID and maxID should be configured simultaneously, minID is missing");
    } else if (min !== undefined) {
      throw invalid("minID and maxID should be configured simultaneously, maxID is missing");
    }
    if (item.id !== undefined && item.id !== null) vids.add(trunkId(item.id, "id"));
  }
  return [...vids].sort((a, b) => a - b);
}

/** Sorted unique VLAN ids as `a-b` ranges for `bridge vlan add vid`. */
export function vidRanges(vids: number[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < vids.length;) {
    let j = i;
    while (j + 1 < vids.length && vids[j + 1] === vids[j]! + 1) j++;
    out.push(i === j ? String(vids[i]) : `${vids[i]}-${vids[j]}`);
    i = j + 1;
  }
  return out;
}

/**
 * The `bridge vlan` commands for a new port, in the reference's order: the
 * default PVID (the only VLAN a new port has) removed unless kept, the
 * access VLAN as PVID untagged, the trunk VLANs tagged, and VLAN 1 as the
 * native VLAN of a trunk without an access VLAN.
 */
export function vlanCommands(
  port: string,
  v: PortVlans,
  defaultPvid: number | undefined,
): string[][] {
  if (v.vlan === 0 && v.trunk.length === 0) return [];
  const out: string[][] = [];
  if (!v.preserveDefaultVlan && defaultPvid) {
    out.push(["vlan", "del", "dev", port, "vid", String(defaultPvid)]);
  }
  if (v.vlan) out.push(["vlan", "add", "dev", port, "vid", String(v.vlan), "pvid", "untagged"]);
  for (const vid of vidRanges(v.trunk)) out.push(["vlan", "add", "dev", port, "vid", vid]);
  if (v.vlan === 0) out.push(["vlan", "add", "dev", port, "vid", "1", "pvid", "untagged"]);
  return out;
}

/** The bridge's default PVID, when the kernel reports one. */
export function defaultPvid(bridge: LinkInfo): number | undefined {
  const value = bridge.linkinfo?.info_data?.vlan_default_pvid;
  return typeof value === "number" ? value : undefined;
}

/** Runs `bridge vlan` commands in one `bridge -batch` process. */
export async function bridgeBatch(commands: string[][]): Promise<void> {
  if (commands.length === 0) return;
  try {
    await run("bridge", ["-batch", "-"], {
      stdin: commands.map((c) => c.join(" ")).join("\n") + "\n",
    });
  } catch (e) {
    throw new CniError(
      ErrorCode.ioFailure,
      `failed to setup vlan tag: ${(e as Error).message.replace(/^bridge failed: /, "")}`,
      e instanceof CniError ? e.details : "",
    );
  }
}

// ---- gateway addresses --------------------------------------------------------

function addrNet(a: AddrInfo): IPNet | null {
  return parseCIDR(`${a.local}/${a.prefixlen}`);
}

/**
 * The commands that give `dev` the gateway addresses, as the reference's
 * ensureAddr decides per gateway in order: nothing when the same
 * address/prefix is there; another IPv4 address, or an IPv6 one whose
 * subnet overlaps, is an error unless `force`, which deletes it. `added`
 * says whether an address is added (the reference then pins the MAC).
 */
export function gatewayAddressCommands(
  dev: string,
  current: AddrInfo[],
  gateways: IPNet[],
  force: boolean,
): { commands: IpCommand[]; added: boolean } {
  let have = current.flatMap((a) => {
    const net = addrNet(a);
    return net ? [net] : [];
  });
  const commands: IpCommand[] = [];
  let added = false;
  for (const gw of gateways) {
    const want = formatCIDR(gw);
    let present = false;
    for (const a of have.filter((a) => a.ip.family === gw.ip.family)) {
      if (formatCIDR(a) === want) {
        present = true;
        break;
      }
      if (gw.ip.family === 4 || contains(a, gw.ip) || contains(gw, a.ip)) {
        if (!force) {
          throw new CniError(
            ErrorCode.invalidNetworkConfig,
            `"${dev}" already has an IP address different from ${want}`,
          );
        }
        commands.push(["addr", "del", formatCIDR(a), "dev", dev]);
        have = have.filter((h) => h !== a);
      }
    }
    if (present) continue;
    // replace: a concurrent ADD may add the same address between our look and this.
    commands.push(["addr", "replace", ...addrCommand(want, dev).slice(2)]);
    have.push(gw);
    added = true;
  }
  return { commands, added };
}

/**
 * Makes the VLAN gateway link `name`: a veth pair inside the host whose
 * peer is a bare port of `bridge` (no flags), `name` up with the commands
 * of `addrs` run on it in the same batch. Returns its port.
 *
 * @throws {LinkExistsError} when `name` exists already (a concurrent ADD made it)
 */
export async function makeGatewayLink(
  bridge: string,
  name: string,
  mtu: number,
  addrs: IpCommand[],
): Promise<{ link: VethEnd; port: VethEnd }> {
  try {
    const veth = await createVeth({
      ifname: name,
      mtu,
      after: (port) => [
        ...portCommands(port, bridge, { hairpin: false, isolated: false }),
        ["link", "set", name, "up"],
        ...addrs,
      ],
    });
    return { link: veth.container, port: veth.host };
  } catch (e) {
    if (!(e instanceof VethBatchError)) throw e;
    throw new CniError(
      ErrorCode.ioFailure,
      `failed to create vlan interface: ${e.said}`,
      e.details,
    );
  }
}

// ---- port state -------------------------------------------------------------------

async function operState(name: string): Promise<string> {
  try {
    // No process in the common case; the random name cannot match a link of
    // another namespace when sysfs is not this one's.
    return Deno.readTextFileSync(`/sys/class/net/${name}/operstate`).trim();
  } catch {
    const link = await getLink(name);
    if (!link) throw new CniError(ErrorCode.ioFailure, `Link not found: "${name}"`);
    return (link.operstate ?? "unknown").toLowerCase();
  }
}

/**
 * Waits, as the reference does (0, 50, 500, 1000, 1000 ms), for the port to
 * be operationally up.
 */
export async function waitPortUp(name: string): Promise<void> {
  const delays = [0, 50, 500, 1000, 1000];
  let state = "";
  for (const delay of delays) {
    if (delay) await new Promise((r) => setTimeout(r, delay));
    state = await operState(name);
    if (state === "up") return;
  }
  throw new CniError(ErrorCode.ioFailure, `bridge port in error state: ${state}`);
}
