/**
 * The cluster's shared state in etcd: which node holds which subnet of the
 * cluster CIDR, under a lease each node keeps alive.
 *
 * Keys (`<prefix>` is `--etcd-prefix`, default `/cnikit/network`):
 * - `<prefix>/config`: `{"clusterCIDR","subnetLen","backend"}`, written by
 *   the first agent; every later agent must agree with it.
 * - `<prefix>/subnets/<a.b.c.d>-<len>`: the {@link NodeRecord} of the node
 *   holding that subnet, attached to that node's lease, so it disappears
 *   when the node stops refreshing it.
 *
 * A subnet is taken by a transaction that puts the key only if its
 * create_revision is 0 (the key does not exist), so two agents racing for
 * one subnet cannot both win.
 * @module
 */

import * as z from "zod/mini";
import {
  bitsOf,
  contains,
  formatCIDR,
  formatIP,
  type IPNet,
  networkOf,
  parseCIDR,
  parseIP,
} from "../lib/cni/ipnet.ts";
import type { Compare, EtcdClient, KeyValue } from "./etcd.ts";

/** How nodes reach each other's subnets. */
export type Backend = "host-gw" | "vxlan";

const NodeRecordSchema = z.object({
  node: z.string().check(z.minLength(1)),
  publicIP: z.string().check(z.refine((s) => parseIP(s) !== null, "not an IP address")),
  backend: z.enum(["host-gw", "vxlan"]),
  vtepMAC: z.optional(z.string()),
});

/** What a node publishes about itself with its subnet. */
export type NodeRecord = z.infer<typeof NodeRecordSchema>;

/** A node holding a subnet, as read from etcd. */
export interface SubnetHolder {
  subnet: IPNet;
  record: NodeRecord;
}

const ClusterConfigSchema = z.object({
  clusterCIDR: z.string(),
  subnetLen: z.number(),
  backend: z.enum(["host-gw", "vxlan"]),
});

type ClusterConfig = z.infer<typeof ClusterConfigSchema>;

/** The agent's configuration disagrees with the one the cluster runs on. */
export class ClusterConfigMismatch extends Error {
  override name = "ClusterConfigMismatch";
}

/** No subnet of the cluster CIDR is free. */
export class SubnetsExhausted extends Error {
  override name = "SubnetsExhausted";
}

/** The subnet this node was given, and the key that holds it. */
export interface Acquired {
  subnet: IPNet;
  key: string;
  /** The revision of the put that took it. */
  revision: number;
  /** The lease of an earlier run of this node that held the key, now replaced. */
  replacedLease?: string;
}

/** The key layout and the allocation of subnets. */
export class Registry {
  readonly configKey: string;
  readonly subnetsPrefix: string;

  constructor(
    private readonly etcd: EtcdClient,
    prefix: string,
    readonly clusterCIDR: IPNet,
    readonly subnetLen: number,
  ) {
    const base = prefix.replace(/\/+$/, "");
    this.configKey = `${base}/config`;
    this.subnetsPrefix = `${base}/subnets/`;
  }

  /** The key of a subnet: `<prefix>/subnets/10.244.3.0-24`. */
  keyOf(subnet: IPNet): string {
    return `${this.subnetsPrefix}${formatIP(subnet.ip)}-${subnet.prefix}`;
  }

  /** The subnet a key names, or undefined for a key that names none of ours. */
  subnetOfKey(key: string): IPNet | undefined {
    if (!key.startsWith(this.subnetsPrefix)) return undefined;
    const net = parseCIDR(key.slice(this.subnetsPrefix.length).replace("-", "/"));
    return net && this.isOurSubnet(net) ? net : undefined;
  }

  /** True when `net` is one of the cluster CIDR's subnets of the configured size. */
  isOurSubnet(net: IPNet): boolean {
    return net.prefix === this.subnetLen && contains(this.clusterCIDR, net.ip) &&
      networkOf(net).ip.value === net.ip.value;
  }

  /** A key's holder, or undefined when the key or its value is not one of ours. */
  holderOf(kv: KeyValue): SubnetHolder | undefined {
    const subnet = this.subnetOfKey(kv.key);
    if (!subnet) return undefined;
    let value: unknown;
    try {
      value = JSON.parse(kv.value);
    } catch {
      return undefined;
    }
    const parsed = NodeRecordSchema.safeParse(value);
    return parsed.success ? { subnet, record: parsed.data } : undefined;
  }

  /**
   * Writes the cluster's configuration if no agent did yet; otherwise checks
   * that ours is the same, since nodes that carve the CIDR differently or
   * use another backend cannot reach each other.
   */
  async ensureClusterConfig(backend: Backend): Promise<void> {
    const mine: ClusterConfig = {
      clusterCIDR: formatCIDR(this.clusterCIDR),
      subnetLen: this.subnetLen,
      backend,
    };
    const answer = await this.etcd.txn(
      [{ key: this.configKey, target: "CREATE", revision: 0 }],
      [{ put: { key: this.configKey, value: JSON.stringify(mine) } }],
      [{ range: { key: this.configKey } }],
    );
    if (answer.succeeded) return;
    const stored = ClusterConfigSchema.safeParse(safeJson(answer.kvs[0]?.value));
    if (!stored.success) {
      throw new ClusterConfigMismatch(
        `${this.configKey} in etcd is not a cnikit cluster configuration: ${answer.kvs[0]?.value}`,
      );
    }
    const theirs = stored.data;
    if (
      theirs.clusterCIDR !== mine.clusterCIDR || theirs.subnetLen !== mine.subnetLen ||
      theirs.backend !== mine.backend
    ) {
      throw new ClusterConfigMismatch(
        `the cluster runs --cluster-cidr ${theirs.clusterCIDR} --subnet-len ${theirs.subnetLen} ` +
          `--backend ${theirs.backend} (${this.configKey} in etcd), this agent was started with ` +
          `${mine.clusterCIDR} /${mine.subnetLen} ${mine.backend}`,
      );
    }
  }

  /** Every holder of a subnet, and the revision they were read at. */
  async list(): Promise<{ revision: number; holders: Map<string, SubnetHolder> }> {
    const { revision, kvs } = await this.etcd.rangePrefix(this.subnetsPrefix);
    const holders = new Map<string, SubnetHolder>();
    for (const kv of kvs) {
      const holder = this.holderOf(kv);
      if (holder) holders.set(kv.key, holder);
    }
    return { revision, holders };
  }

  /** The number of subnets the cluster CIDR holds. */
  get capacity(): bigint {
    return 1n << BigInt(this.subnetLen - this.clusterCIDR.prefix);
  }

  /** The `index`th subnet of the cluster CIDR. */
  subnetAt(index: bigint): IPNet {
    const base = networkOf(this.clusterCIDR).ip;
    const step = 1n << BigInt(bitsOf(base.family) - this.subnetLen);
    return {
      ip: { family: base.family, value: base.value + index * step },
      prefix: this.subnetLen,
    };
  }

  /**
   * Leases a subnet to `record.node` under `lease`: `preferred` (the one this
   * node held before) when it is free or still this node's, else one this
   * node still holds in etcd, else the lowest free one. A transaction
   * another agent won is retried on a fresh listing.
   */
  async acquire(lease: string, record: NodeRecord, preferred?: IPNet): Promise<Acquired> {
    const value = JSON.stringify(record);
    for (let attempt = 0; attempt < 1000; attempt++) {
      const { kvs } = await this.etcd.rangePrefix(this.subnetsPrefix);
      const byKey = new Map(kvs.map((kv) => [kv.key, kv]));
      const ownerOf = (kv: KeyValue) => this.holderOf(kv)?.record.node;
      const mine = kvs.filter((kv) => ownerOf(kv) === record.node && this.subnetOfKey(kv.key));
      const candidates: (KeyValue | IPNet)[] = [];
      if (preferred && this.isOurSubnet(preferred)) {
        const held = byKey.get(this.keyOf(preferred));
        if (!held) candidates.push(preferred);
        else if (ownerOf(held) === record.node) candidates.push(held);
      }
      candidates.push(...mine);
      const free = this.#lowestFree(byKey);
      if (free) candidates.push(free);
      const choice = candidates[0];
      if (!choice) {
        throw new SubnetsExhausted(
          `cluster CIDR ${formatCIDR(this.clusterCIDR)} is exhausted: all ${this.capacity} ` +
            `/${this.subnetLen} subnets are leased`,
        );
      }
      const taking = "key" in choice;
      const key = taking ? choice.key : this.keyOf(choice);
      // Other subnets an earlier run of this node left behind go now, if
      // they are still as listed.
      const stale = mine.filter((kv) => kv.key !== key);
      const answer = await this.etcd.txn(
        [
          taking
            ? { key, target: "MOD", revision: choice.modRevision }
            : { key, target: "CREATE", revision: 0 },
          ...stale.map((kv): Compare => ({ key: kv.key, target: "MOD", revision: kv.modRevision })),
        ],
        [{ put: { key, value, lease } }, ...stale.map((kv) => ({ delete: { key: kv.key } }))],
      );
      if (!answer.succeeded) continue;
      const subnet = this.subnetOfKey(key)!;
      const revision = answer.revision;
      return taking && choice.lease !== "0" && choice.lease !== lease
        ? { subnet, key, revision, replacedLease: choice.lease }
        : { subnet, key, revision };
    }
    throw new Error("gave up leasing a subnet after 1000 conflicting transactions");
  }

  #lowestFree(byKey: Map<string, KeyValue>): IPNet | undefined {
    for (let i = 0n; i < this.capacity; i++) {
      const subnet = this.subnetAt(i);
      if (!byKey.has(this.keyOf(subnet))) return subnet;
    }
    return undefined;
  }

  /**
   * Puts this node's record again under `lease` if the key is free or still
   * this node's (after etcd lost the lease); returns the revision of that
   * put, or undefined when another node holds the key.
   */
  async reclaim(key: string, lease: string, record: NodeRecord): Promise<number | undefined> {
    const value = JSON.stringify(record);
    for (let attempt = 0; attempt < 100; attempt++) {
      const answer = await this.etcd.txn(
        [{ key, target: "CREATE", revision: 0 }],
        [{ put: { key, value, lease } }],
        [{ range: { key } }],
      );
      if (answer.succeeded) return answer.revision;
      const held = answer.kvs[0]!;
      if (this.holderOf(held)?.record.node !== record.node) return undefined;
      const retake = await this.etcd.txn(
        [{ key, target: "MOD", revision: held.modRevision }],
        [{ put: { key, value, lease } }],
      );
      if (retake.succeeded) return retake.revision;
    }
    throw new Error(`gave up putting ${key} back after 100 conflicting transactions`);
  }
}

function safeJson(text: string | undefined): unknown {
  try {
    return text === undefined ? undefined : JSON.parse(text);
  } catch {
    return undefined;
  }
}
