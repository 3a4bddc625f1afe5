/**
 * The node agent: leases a subnet of the cluster CIDR for this node in etcd,
 * writes the node's CNI list for it, and keeps the paths to every other
 * node's subnet in the kernel as the nodes come and go.
 *
 * Start-up: find the node's address → reach etcd (bounded retry) → agree on
 * the cluster's configuration → grant a lease → take a subnet (the one saved
 * locally or still held in etcd, else the lowest free) → set up the backend
 * and masquerade → write the list → list every node and sync the kernel
 * fully (removing what the agent's earlier runs left).
 *
 * Then two loops: the lease is refreshed every third of its TTL (a lost
 * lease is replaced and the subnet put back under it); a watch on the
 * subnets, resumed from the last revision seen after a disconnect, listed
 * afresh after a compaction, turns each change into an incremental sync.
 * While etcd is away nothing in the kernel changes. SIGTERM/SIGINT release
 * the subnet (the lease is revoked) and end the agent.
 * @module
 */

import { sha512Hex } from "../lib/cni/hash.ts";
import { formatCIDR, type IPNet, parseCIDR } from "../lib/cni/ipnet.ts";
import { ipBatch, type LinkInfo } from "../lib/net/ip.ts";
import type { BackendName } from "../lib/netfilter/backend.ts";
import { setupNodeMasq, teardownNodeMasq } from "./node_masq.ts";
import { writeList } from "./cniconf.ts";
import { Dataplane, type Peer, type SyncReport } from "./dataplane.ts";
import { errorText, EtcdClient, EtcdUnavailable, type WatchMessage } from "./etcd.ts";
import {
  type Backend,
  ClusterConfigMismatch,
  type NodeRecord,
  Registry,
  type SubnetHolder,
  SubnetsExhausted,
} from "./registry.ts";
import { type AgentStatus, readSavedSubnet, saveSubnet, writeStatus } from "./state.ts";

/** Everything the agent is started with (see agent/README.md for each flag). */
export interface AgentOptions {
  etcdEndpoints: string[];
  etcdPrefix: string;
  clusterCIDR: IPNet;
  subnetLen: number;
  backend: Backend;
  publicIP?: string;
  iface?: string;
  nodeName: string;
  cniConfDir: string;
  cniConfFile: string;
  networkName: string;
  ipamDataDir: string;
  stateDir: string;
  /** Seconds. */
  leaseTTL: number;
  vxlanVNI: number;
  vxlanPort: number;
  mtu?: number;
  masquerade: boolean;
  masqBackend?: BackendName;
  /** Seconds to keep trying etcd at start. */
  startTimeout: number;
}

/** The agent's exit codes. */
export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 2,
  etcdUnreachable: 3,
  exhausted: 4,
} as const;

/** A reason to stop with a given exit code and message. */
export class AgentExit extends Error {
  override name = "AgentExit";
  constructor(readonly code: number, message: string) {
    super(message);
  }
}

/** The nat chain / nft table of the node's masquerade rules. */
export const MASQ_NAME = "CNIKIT-AGENT-MASQ";

/** VXLAN's encapsulation overhead over an IPv4 underlay (outer IP, UDP, VXLAN, inner Ethernet). */
const VXLAN_OVERHEAD = 50;

/** One line on stderr, with the time, as the agent's log. */
export function log(message: string): void {
  console.error(`${new Date().toISOString()} cnikit agent: ${message}`);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
  });
}

/** The node's underlay: its address, the link holding it and that link's MTU. */
export interface Underlay {
  publicIP: string;
  iface: string;
  mtu: number;
}

/**
 * Finds the underlay from the flags: the link holding `--public-ip`, the
 * first global IPv4 address of `--iface`, or else of the default route's
 * link.
 */
export async function findUnderlay(publicIP?: string, iface?: string): Promise<Underlay> {
  const [links, defaults] = await ipBatch([["addr", "show"], ["route", "show", "default"]]) as [
    LinkInfo[],
    { dev?: string }[],
  ];
  const v4 = (l: LinkInfo) =>
    (l.addr_info ?? []).filter((a) => a.family === "inet" && a.scope === "global");
  if (publicIP) {
    const link = links.find((l) => v4(l).some((a) => a.local === publicIP));
    if (!link) {
      throw new AgentExit(EXIT.usage, `--public-ip ${publicIP} is not an address of this node`);
    }
    if (iface && link.ifname !== iface) {
      throw new AgentExit(EXIT.usage, `--public-ip ${publicIP} is on ${link.ifname}, not ${iface}`);
    }
    return { publicIP, iface: link.ifname, mtu: link.mtu };
  }
  const name = iface ?? defaults?.[0]?.dev;
  if (!name) {
    throw new AgentExit(
      EXIT.usage,
      "no default route to find the node's address by: give --public-ip",
    );
  }
  const link = links.find((l) => l.ifname === name);
  const address = link && v4(link)[0];
  if (!link || !address) {
    throw new AgentExit(EXIT.usage, `link ${name} has no global IPv4 address: give --public-ip`);
  }
  return { publicIP: address.local, iface: link.ifname, mtu: link.mtu };
}

/** A stable VTEP MAC for a node: the same after the device is made again, so peers' entries stay valid. */
export async function vtepMacFor(node: string): Promise<string> {
  const hex = await sha512Hex(`cnikit vtep ${node}`);
  const bytes = hex.slice(0, 12).match(/../g)!.map((b) => parseInt(b, 16));
  bytes[0] = (bytes[0]! & 0xfe) | 0x02;
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
}

/** A running agent. */
export class Agent {
  readonly #o: AgentOptions;
  readonly #etcd: EtcdClient;
  readonly #registry: Registry;
  #underlay!: Underlay;
  #dataplane!: Dataplane;
  #record!: NodeRecord;
  #lease = "0";
  #key = "";
  #subnet!: IPNet;
  #mtu = 0;
  #holders = new Map<string, SubnetHolder>();
  #revision = 0;
  #reachable = true;
  #reachableSince = new Date().toISOString();
  /** The revision of the last put of this node's record by this agent. */
  #registeredAt = 0;
  /** When the current watch was confirmed, and when etcd was last found unreachable (ms). */
  #watchCreated = 0;
  #lostAt = 0;
  #lastSync?: string;
  readonly #startedAt = new Date().toISOString();
  readonly #stop = new AbortController();
  #watchAbort?: AbortController;
  #syncing: Promise<void> = Promise.resolve();
  #keepingAlive: Promise<void> = Promise.resolve();
  #reregistering?: Promise<void>;
  #fail!: (e: AgentExit) => void;
  readonly #failed = new Promise<AgentExit>((resolve) => this.#fail = resolve);

  constructor(options: AgentOptions) {
    this.#o = options;
    const ttlMs = options.leaseTTL * 1000;
    this.#etcd = new EtcdClient(options.etcdEndpoints, {
      timeoutMs: Math.max(1000, Math.min(3000, ttlMs / 3)),
    });
    this.#registry = new Registry(
      this.#etcd,
      options.etcdPrefix,
      options.clusterCIDR,
      options.subnetLen,
    );
  }

  /** Milliseconds between retries and lease refreshes: a third of the TTL, at most a second for retries. */
  get #refreshMs(): number {
    return Math.max(500, (this.#o.leaseTTL * 1000) / 3);
  }

  get #retryMs(): number {
    return Math.min(1000, this.#refreshMs);
  }

  /** Runs until SIGTERM/SIGINT (exit 0) or a failure it cannot get past. */
  async run(): Promise<number> {
    try {
      await this.#start();
    } catch (e) {
      this.#stop.abort();
      await this.#keepingAlive;
      throw this.#asExit(e);
    }
    const stopped = new Promise<"signal">((resolve) => {
      const onSignal = () => resolve("signal");
      Deno.addSignalListener("SIGTERM", onSignal);
      Deno.addSignalListener("SIGINT", onSignal);
    });
    const loops = Promise.all([this.#keepingAlive, this.#watchLoop()]);
    const outcome = await Promise.race([stopped, this.#failed]);
    this.#stop.abort();
    await loops;
    await this.#syncing;
    if (outcome instanceof AgentExit) {
      await this.#writeStatus(false).catch(() => {});
      throw outcome;
    }
    await this.#release();
    return EXIT.ok;
  }

  #asExit(e: unknown): AgentExit {
    if (e instanceof AgentExit) return e;
    if (e instanceof SubnetsExhausted) return new AgentExit(EXIT.exhausted, e.message);
    if (e instanceof ClusterConfigMismatch) return new AgentExit(EXIT.usage, e.message);
    if (e instanceof EtcdUnavailable) return new AgentExit(EXIT.etcdUnreachable, e.message);
    return new AgentExit(EXIT.failure, errorText(e));
  }

  async #start(): Promise<void> {
    const o = this.#o;
    this.#underlay = await findUnderlay(o.publicIP, o.iface);
    await this.#waitForEtcd();
    const vxlan = o.backend === "vxlan";
    const vtepMAC = vxlan ? await vtepMacFor(o.nodeName) : undefined;
    this.#record = {
      node: o.nodeName,
      publicIP: this.#underlay.publicIP,
      backend: o.backend,
      ...(vtepMAC ? { vtepMAC } : {}),
    };
    const saved = await readSavedSubnet(o.stateDir);
    const preferred = saved && saved.node === o.nodeName &&
        saved.clusterCIDR === formatCIDR(o.clusterCIDR)
      ? parseCIDR(saved.subnet) ?? undefined
      : undefined;
    this.#lease = await this.#etcd.grantLease(o.leaseTTL);
    // From now on, however long the rest of the start takes.
    this.#keepingAlive = this.#keepAliveLoop();
    const acquired = await this.#registry.acquire(this.#lease, this.#record, preferred);
    this.#subnet = acquired.subnet;
    this.#key = acquired.key;
    this.#registeredAt = acquired.revision;
    if (acquired.replacedLease) {
      await this.#etcd.revokeLease(acquired.replacedLease).catch(() => {});
    }
    const same = preferred && formatCIDR(preferred) === formatCIDR(acquired.subnet);
    log(
      `leased ${formatCIDR(this.#subnet)} for node ${o.nodeName} (${this.#underlay.publicIP}, ` +
        `${o.backend}${vtepMAC ? ` ${vtepMAC}` : ""})` +
        (preferred && !same ? `; ${formatCIDR(preferred)}, held before, is taken` : "") +
        (same ? ", the subnet this node held before" : ""),
    );
    this.#mtu = o.mtu ?? this.#underlay.mtu - (vxlan ? VXLAN_OVERHEAD : 0);
    await saveSubnet(o.stateDir, {
      node: o.nodeName,
      clusterCIDR: formatCIDR(o.clusterCIDR),
      subnet: formatCIDR(this.#subnet),
      mtu: this.#mtu,
    });
    this.#dataplane = new Dataplane({
      backend: o.backend,
      subnet: this.#subnet,
      publicIP: this.#underlay.publicIP,
      underlay: this.#underlay.iface,
      vxlan: { vni: o.vxlanVNI, port: o.vxlanPort, mac: vtepMAC ?? "", mtu: this.#mtu },
    });
    await this.#dataplane.prepare();
    if (o.masquerade) {
      await setupNodeMasq({
        name: MASQ_NAME,
        source: this.#subnet,
        exclude: [o.clusterCIDR],
        comment: `cnikit agent: masquerade pods of ${formatCIDR(this.#subnet)} leaving ${
          formatCIDR(o.clusterCIDR)
        }`,
      }, o.masqBackend);
    } else {
      await teardownNodeMasq(MASQ_NAME);
    }
    const listPath = `${o.cniConfDir}/${o.cniConfFile}`;
    const written = await writeList(listPath, {
      networkName: o.networkName,
      subnet: this.#subnet,
      mtu: this.#mtu,
      ipamDataDir: o.ipamDataDir,
    });
    log(
      `${written ? "wrote" : "kept"} ${listPath} (${formatCIDR(this.#subnet)}, mtu ${this.#mtu})`,
    );
    await this.#listAll();
    await this.#requestSync(true, `start, revision ${this.#revision}`);
  }

  async #waitForEtcd(): Promise<void> {
    const deadline = Date.now() + this.#o.startTimeout * 1000;
    let said = false;
    while (true) {
      try {
        await this.#registry.ensureClusterConfig(this.#o.backend);
        return;
      } catch (e) {
        if (!(e instanceof EtcdUnavailable)) throw e;
        if (Date.now() >= deadline) {
          throw new AgentExit(
            EXIT.etcdUnreachable,
            `gave up after ${this.#o.startTimeout} s: ${e.message}`,
          );
        }
        if (!said) log(`waiting for etcd (up to ${this.#o.startTimeout} s): ${e.message}`);
        said = true;
        await sleep(1000, this.#stop.signal);
      }
    }
  }

  async #listAll(): Promise<void> {
    const { revision, holders } = await this.#registry.list();
    holders.delete(this.#key);
    this.#holders = holders;
    this.#revision = revision;
  }

  /** Queues a sync of the kernel with the holders as they are when it runs. */
  #requestSync(full: boolean, why: string): Promise<void> {
    const next = this.#syncing.then(() => this.#sync(full, why));
    this.#syncing = next.catch((e) => log(`sync failed: ${errorText(e)}`));
    return next;
  }

  async #sync(full: boolean, why: string): Promise<void> {
    const peers: Peer[] = [...this.#holders.values()].map((h) => ({
      node: h.record.node,
      subnet: h.subnet,
      publicIP: h.record.publicIP,
      ...(h.record.vtepMAC ? { vtepMAC: h.record.vtepMAC } : {}),
    }));
    const started = performance.now();
    const report = await this.#dataplane.sync(peers, full);
    this.#logReport(report, full, why, performance.now() - started);
    this.#lastSync = new Date().toISOString();
    await this.#writeStatus(true);
  }

  #logReport(report: SyncReport, full: boolean, why: string, ms: number): void {
    const via = (p: Peer) =>
      `${p.node} ${formatCIDR(p.subnet)} via ${p.publicIP}${p.vtepMAC ? ` (${p.vtepMAC})` : ""}`;
    for (const p of report.joined) log(`join: ${via(p)}`);
    for (const p of report.updated) log(`update: ${via(p)}`);
    for (const p of report.left) log(`leave: ${p.node} ${formatCIDR(p.subnet)}`);
    for (const f of report.failures) log(`kernel refused: ${f}`);
    if (full) {
      log(
        `reconcile (${why}): ${this.#dataplane.peers.size} peers, ` +
          `${report.stale.length} stale entries removed, ${ms.toFixed(0)} ms` +
          (report.stale.length ? `: ${report.stale.join("; ")}` : ""),
      );
    }
  }

  async #writeStatus(running: boolean): Promise<void> {
    const status: AgentStatus = {
      pid: Deno.pid,
      running,
      node: this.#o.nodeName,
      backend: this.#o.backend,
      publicIP: this.#underlay?.publicIP ?? "",
      subnet: this.#subnet ? formatCIDR(this.#subnet) : "",
      startedAt: this.#startedAt,
      etcd: {
        endpoints: [...this.#etcd.endpoints],
        reachable: this.#reachable,
        since: this.#reachableSince,
        revision: this.#revision,
      },
      ...(this.#lastSync ? { lastSync: this.#lastSync } : {}),
      peers: [...(this.#dataplane?.peers.values() ?? [])].map((p) => ({
        node: p.node,
        subnet: formatCIDR(p.subnet),
        publicIP: p.publicIP,
        ...(p.vtepMAC ? { vtepMAC: p.vtepMAC } : {}),
      })),
    };
    await writeStatus(this.#o.stateDir, status);
  }

  #setReachable(reachable: boolean, why: string): void {
    if (reachable === this.#reachable) return;
    this.#reachable = reachable;
    if (!reachable) this.#lostAt = Date.now();
    this.#reachableSince = new Date().toISOString();
    log(
      reachable
        ? "etcd reachable again"
        : `etcd unreachable, keeping the data plane as it is: ${why}`,
    );
    this.#writeStatus(true).catch(() => {});
  }

  async #keepAliveLoop(): Promise<void> {
    const signal = this.#stop.signal;
    while (!signal.aborted) {
      await sleep(this.#refreshMs, signal);
      if (signal.aborted) return;
      try {
        const ttl = await this.#etcd.keepAlive(this.#lease);
        this.#setReachable(true, "");
        // A watch stream from before etcd went away can hang on a connection
        // etcd no longer serves; a fresh one resumes from the last revision.
        if (this.#watchCreated < this.#lostAt) this.#watchAbort?.abort();
        if (ttl <= 0 && this.#key) await this.#reregister(`lease ${this.#lease} expired`);
      } catch (e) {
        if (e instanceof EtcdUnavailable) this.#setReachable(false, e.message);
        else log(`lease refresh failed: ${errorText(e)}`);
      }
    }
  }

  /** Puts this node's subnet back under a live lease; a subnet another node took ends the agent. */
  #reregister(why: string): Promise<void> {
    this.#reregistering ??= (async () => {
      try {
        const alive = await this.#etcd.keepAlive(this.#lease) > 0;
        const lease = alive ? this.#lease : await this.#etcd.grantLease(this.#o.leaseTTL);
        const revision = await this.#registry.reclaim(this.#key, lease, this.#record);
        if (revision !== undefined) {
          this.#lease = lease;
          this.#registeredAt = revision;
          log(`registered ${formatCIDR(this.#subnet)} again (${why})`);
          return;
        }
        this.#fail(
          new AgentExit(
            EXIT.failure,
            `subnet ${formatCIDR(this.#subnet)} went to another node while this node's record ` +
              `was gone (${why}); the pods here hold its addresses, so the agent stops`,
          ),
        );
      } catch (e) {
        if (e instanceof EtcdUnavailable) this.#setReachable(false, e.message);
        else log(`registering again failed: ${errorText(e)}`);
      } finally {
        this.#reregistering = undefined;
      }
    })();
    return this.#reregistering;
  }

  async #watchLoop(): Promise<void> {
    const signal = this.#stop.signal;
    let resumed: string | undefined;
    while (!signal.aborted) {
      const abort = new AbortController();
      this.#watchAbort = abort;
      const from = this.#revision + 1;
      try {
        await this.#etcd.watchPrefix(
          this.#registry.subnetsPrefix,
          from,
          (message) => this.#onWatch(message),
          AbortSignal.any([signal, abort.signal]),
          () => {
            this.#watchCreated = Date.now();
            // etcd is back; the changes missed meanwhile come as the events
            // that follow, and the kernel is checked against the peers.
            if (resumed) {
              this.#requestSync(true, `${resumed}, watch resumed at revision ${from}`);
              resumed = undefined;
            }
          },
        );
        if (abort.signal.aborted && !signal.aborted) resumed ??= "etcd back";
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof EtcdUnavailable) {
          this.#setReachable(false, e.message);
          resumed ??= "etcd back";
        } else {
          log(`watch failed: ${errorText(e)}`);
          resumed ??= "watch failed";
        }
        await sleep(this.#retryMs, signal);
      }
    }
  }

  async #onWatch(message: WatchMessage): Promise<void> {
    if (message.kind === "compacted") {
      await this.#listAll();
      await this.#requestSync(
        true,
        `revisions up to ${message.compactRevision} compacted, listed again at ${this.#revision}`,
      );
      return;
    }
    for (const { type, kv } of message.events) {
      if (kv.key === this.#key) {
        // What happened to the record before this agent last put it is old news.
        if (kv.modRevision <= this.#registeredAt) continue;
        const holder = type === "PUT" ? this.#registry.holderOf(kv) : undefined;
        if (holder?.record.node !== this.#o.nodeName && !this.#stop.signal.aborted) {
          this.#reregister(type === "PUT" ? "record overwritten" : "record deleted");
        }
        continue;
      }
      const holder = type === "PUT" ? this.#registry.holderOf(kv) : undefined;
      if (holder) this.#holders.set(kv.key, holder);
      else this.#holders.delete(kv.key);
    }
    this.#revision = Math.max(this.#revision, message.revision);
    await this.#requestSync(false, `revision ${message.revision}`);
  }

  async #release(): Promise<void> {
    try {
      await this.#etcd.revokeLease(this.#lease);
      log(`released ${formatCIDR(this.#subnet)} (lease revoked); the data plane stays as it is`);
    } catch (e) {
      log(
        `could not release ${formatCIDR(this.#subnet)}, it expires with its lease: ${errorText(e)}`,
      );
    }
    await this.#writeStatus(false).catch(() => {});
  }
}
