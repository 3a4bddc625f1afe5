/**
 * The node's paths to the other nodes' pod subnets, in the kernel:
 *
 * - **host-gw**: `<subnet> via <node's public IP>`, for nodes on one L2
 *   segment.
 * - **vxlan**: one VXLAN device `cnikit.<vni>` holding this node's subnet
 *   address (`a.b.c.0/32`); per other node a permanent fdb entry (its VTEP
 *   MAC → its public IP), a permanent neighbour (its `a.b.c.0` → its VTEP
 *   MAC) and `<subnet> via <its a.b.c.0> dev cnikit.<vni> onlink`.
 *
 * Every route the agent makes carries protocol {@link ROUTE_PROTOCOL}, which
 * is how a later run finds them: a full sync deletes the routes with that
 * protocol that no live node accounts for, and no other route. The VXLAN
 * device, with every fdb and neighbour entry on it, is the agent's alone.
 * Changes go through one `bridge -batch` and one `ip -batch` per step.
 * @module
 */

import { formatCIDR, formatIP, type IPNet } from "../lib/cni/ipnet.ts";
import { ipBatch, type IpCommand, iprouteBatch, type LinkInfo } from "../lib/net/ip.ts";
import { deleteLink, getLink } from "../lib/net/link.ts";
import { enableForwarding } from "../lib/net/sysctl.ts";
import type { Backend } from "./registry.ts";

/**
 * The route protocol number marking the agent's routes (`ip route show
 * proto 152`). Unassigned in iproute2's rt_protos; rt_protos.d may name it.
 */
export const ROUTE_PROTOCOL = "152";

/** Another node, as the data plane needs it. */
export interface Peer {
  node: string;
  subnet: IPNet;
  publicIP: string;
  vtepMAC?: string;
}

/** The VXLAN device's settings. */
export interface VxlanSettings {
  vni: number;
  port: number;
  /** The device's MAC, which the other nodes' fdb and neighbour entries name. */
  mac: string;
  mtu: number;
}

/** What the data plane is built from. */
export interface DataplaneConfig {
  backend: Backend;
  /** This node's subnet. */
  subnet: IPNet;
  publicIP: string;
  /** The link holding `publicIP`. */
  underlay: string;
  vxlan: VxlanSettings;
}

/** What a sync changed, for the log. */
export interface SyncReport {
  joined: Peer[];
  left: Peer[];
  updated: Peer[];
  /** Kernel entries a full sync found that no live node accounts for, now removed. */
  stale: string[];
  /** Commands the kernel refused (a peer whose address is not reachable, say). */
  failures: string[];
}

/** The name of the VXLAN device for `vni`. */
export function vxlanDevice(vni: number): string {
  return `cnikit.${vni}`;
}

/** `a.b.c.0`: the address a subnet's node gives its VXLAN device. */
function vtepAddress(subnet: IPNet): string {
  return formatIP(subnet.ip);
}

function samePeer(a: Peer, b: Peer): boolean {
  return a.publicIP === b.publicIP && a.vtepMAC === b.vtepMAC && a.node === b.node;
}

interface RouteJ {
  dst: string;
  gateway?: string;
}

interface NeighJ {
  dst: string;
  lladdr?: string;
  state?: string[];
}

interface FdbJ {
  mac: string;
  dst?: string;
  state?: string;
}

/** The kernel side of the agent: sets up the backend and keeps the peers' paths as the peers are. */
export class Dataplane {
  readonly #config: DataplaneConfig;
  readonly #device: string;
  #applied = new Map<string, Peer>();

  constructor(config: DataplaneConfig) {
    this.#config = config;
    this.#device = vxlanDevice(config.vxlan.vni);
  }

  /** The peers whose paths are in place, by subnet. */
  get peers(): ReadonlyMap<string, Peer> {
    return this.#applied;
  }

  /**
   * Enables forwarding and sets up the backend's device: the VXLAN device
   * (kept when it already is as wanted, so a restart does not disturb
   * traffic), or, for host-gw, the removal of the VXLAN devices an earlier
   * vxlan run left.
   */
  async prepare(): Promise<void> {
    enableForwarding([4]);
    if (this.#config.backend === "host-gw") {
      await this.#removeVxlanDevices();
      return;
    }
    const { vni, port, mac, mtu } = this.#config.vxlan;
    const dev = this.#device;
    const link = await getLink(dev);
    const data = link?.linkinfo?.info_data;
    const fits = link?.linkinfo?.info_kind === "vxlan" && data?.id === vni &&
      data?.local === this.#config.publicIP && data?.port === port &&
      data?.link === this.#config.underlay && data?.learning === false && link.address === mac;
    const commands: IpCommand[] = [];
    if (link && !fits) commands.push(["link", "del", "dev", dev]);
    if (!fits) {
      commands.push([
        "link",
        "add",
        dev,
        "address",
        mac,
        "type",
        "vxlan",
        "id",
        String(vni),
        "local",
        this.#config.publicIP,
        "dev",
        this.#config.underlay,
        "dstport",
        String(port),
        "nolearning",
      ]);
    }
    commands.push(["link", "set", dev, "mtu", String(mtu), "up"]);
    const address = `${vtepAddress(this.#config.subnet)}/32`;
    const addresses = fits ? this.#ownAddresses(link) : [];
    for (const stale of addresses.filter((a) => a !== address)) {
      commands.push(["addr", "del", stale, "dev", dev]);
    }
    if (!addresses.includes(address)) commands.push(["addr", "add", address, "dev", dev]);
    await ipBatch(commands);
  }

  #ownAddresses(link: LinkInfo | undefined): string[] {
    return (link?.addr_info ?? []).filter((a) => a.family === "inet")
      .map((a) => `${a.local}/${a.prefixlen}`);
  }

  async #removeVxlanDevices(): Promise<void> {
    const [links] = await ipBatch([["link", "show", "type", "vxlan"]]) as [LinkInfo[]];
    for (const link of links ?? []) {
      if (/^cnikit\.\d+$/.test(link.ifname)) await deleteLink(link.ifname);
    }
  }

  /**
   * Brings the kernel to exactly `peers`. A full sync reads what the kernel
   * holds and removes every entry of the agent's that no peer accounts for
   * (left by an earlier run, or by peers that left while the agent was
   * away), then writes every peer's entries again; an incremental one
   * changes only what differs from the last sync.
   */
  async sync(peers: Iterable<Peer>, full: boolean): Promise<SyncReport> {
    const desired = new Map<string, Peer>();
    for (const peer of peers) {
      if (formatCIDR(peer.subnet) === formatCIDR(this.#config.subnet)) continue;
      if (this.#config.backend === "vxlan" && !peer.vtepMAC) continue;
      desired.set(formatCIDR(peer.subnet), peer);
    }
    const report: SyncReport = { joined: [], left: [], updated: [], stale: [], failures: [] };
    const removals: Peer[] = [];
    const writes: Peer[] = [];
    for (const [key, peer] of desired) {
      const before = this.#applied.get(key);
      if (!before) report.joined.push(peer);
      else if (!samePeer(before, peer)) {
        report.updated.push(peer);
        removals.push(before);
      }
      if (full || !before || !samePeer(before, peer)) writes.push(peer);
    }
    for (const [key, peer] of this.#applied) {
      if (!desired.has(key)) {
        report.left.push(peer);
        removals.push(peer);
      }
    }
    const deletes = full ? await this.#staleEntries(desired) : this.#deleteCommands(removals);
    if (full) report.stale = deletes.ip.concat(deletes.bridge).map((c) => c.join(" "));
    // Deletes of what is already gone fail harmlessly; -force goes on past
    // them. The two tools' batches of a step run side by side: a join costs
    // the time of one process start, not two.
    await Promise.all([
      this.#bridge(deletes.bridge).catch(() => {}),
      ipBatch(deletes.ip, { force: true }).catch(() => {}),
    ]);
    const adds = this.#writeCommands(writes);
    const failed = (e: Error) => void report.failures.push(e.message);
    await Promise.all([
      this.#bridge(adds.bridge).catch(failed),
      ipBatch(adds.ip, { force: true }).catch(failed),
    ]);
    this.#applied = desired;
    return report;
  }

  #writeCommands(peers: Peer[]): { ip: IpCommand[]; bridge: IpCommand[] } {
    const ip: IpCommand[] = [];
    const bridge: IpCommand[] = [];
    const proto = ["proto", ROUTE_PROTOCOL];
    for (const peer of peers) {
      const subnet = formatCIDR(peer.subnet);
      if (this.#config.backend === "host-gw") {
        ip.push(["route", "replace", subnet, "via", peer.publicIP, ...proto]);
        continue;
      }
      const dev = this.#device;
      const gw = vtepAddress(peer.subnet);
      bridge.push([
        "fdb",
        "replace",
        peer.vtepMAC!,
        "dev",
        dev,
        "dst",
        peer.publicIP,
        "self",
        "permanent",
      ]);
      ip.push(["neigh", "replace", gw, "lladdr", peer.vtepMAC!, "dev", dev, "nud", "permanent"]);
      ip.push(["route", "replace", subnet, "via", gw, "dev", dev, "onlink", ...proto]);
    }
    return { ip, bridge };
  }

  #deleteCommands(peers: Peer[]): { ip: IpCommand[]; bridge: IpCommand[] } {
    const ip: IpCommand[] = [];
    const bridge: IpCommand[] = [];
    for (const peer of peers) {
      ip.push(["route", "del", formatCIDR(peer.subnet), "proto", ROUTE_PROTOCOL]);
      if (this.#config.backend === "host-gw" || !peer.vtepMAC) continue;
      ip.push(["neigh", "del", vtepAddress(peer.subnet), "dev", this.#device]);
      bridge.push(["fdb", "del", peer.vtepMAC, "dev", this.#device, "dst", peer.publicIP, "self"]);
    }
    return { ip, bridge };
  }

  /** The delete commands for what the kernel holds of the agent's beyond `desired`. */
  async #staleEntries(
    desired: Map<string, Peer>,
  ): Promise<{ ip: IpCommand[]; bridge: IpCommand[] }> {
    const vxlan = this.#config.backend === "vxlan";
    const [[routes, neighbours], [fdb]] = await Promise.all([
      ipBatch([
        ["route", "show", "proto", ROUTE_PROTOCOL],
        ...(vxlan ? [["neigh", "show", "dev", this.#device]] : []),
      ]) as Promise<[RouteJ[], NeighJ[] | undefined]>,
      vxlan
        ? iprouteBatch("bridge", [["fdb", "show", "dev", this.#device]]) as Promise<[FdbJ[]]>
        : Promise.resolve([[]] as [FdbJ[]]),
    ]);
    const ip: IpCommand[] = [];
    const bridge: IpCommand[] = [];
    for (const route of routes ?? []) {
      if (!desired.has(route.dst)) ip.push(["route", "del", route.dst, "proto", ROUTE_PROTOCOL]);
    }
    if (!vxlan) return { ip, bridge };
    const gateways = new Map([...desired.values()].map((p) => [vtepAddress(p.subnet), p]));
    for (const n of neighbours ?? []) {
      if (!n.state?.includes("PERMANENT")) continue;
      const peer = gateways.get(n.dst);
      if (!peer || peer.vtepMAC !== n.lladdr) ip.push(["neigh", "del", n.dst, "dev", this.#device]);
    }
    const wanted = new Set([...desired.values()].map((p) => `${p.vtepMAC}@${p.publicIP}`));
    for (const entry of fdb ?? []) {
      if (entry.state !== "permanent" || !entry.dst) continue;
      if (!wanted.has(`${entry.mac}@${entry.dst}`)) {
        bridge.push(["fdb", "del", entry.mac, "dev", this.#device, "dst", entry.dst, "self"]);
      }
    }
    return { ip, bridge };
  }

  async #bridge(commands: IpCommand[]): Promise<void> {
    await iprouteBatch("bridge", commands, { force: true });
  }
}
