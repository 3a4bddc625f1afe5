/**
 * Fixtures for chained (meta) plugins: a veth pair between a fake host and
 * a container with an address on each end, as a main plugin would leave it,
 * and the prevResult that describes it in any spec version.
 * @module
 */

import { convertResult, resultToJSON } from "../../lib/cni/spec/convert.ts";
import type { Result } from "../../lib/cni/spec/schemas.ts";
import { link, type LinkJ } from "./kernel.ts";
import { sh, type TestNetns, uniqueName } from "./netns.ts";

/** A veth pair made for a test: the host end's name and both ends' addresses. */
export interface VethAttachment {
  hostVeth: string;
  ifname: string;
  hostIP: string;
  containerIP: string;
  /** The attachment as a main plugin's result (1.1.0 shape). */
  result: Result;
}

let subnet = 0;

/**
 * Creates a veth pair, `veth…` up in `host` and `ifname` up in `ctr`, with
 * 10.99.N.1/24 on the host end and 10.99.N.2/24 in the container (N
 * counts up unless `subnet` names it).
 */
export async function vethAttachment(
  host: TestNetns,
  ctr: TestNetns,
  options: { ifname?: string; subnet?: number } = {},
): Promise<VethAttachment> {
  const ifname = options.ifname ?? "eth0";
  const hostVeth = uniqueName("veth");
  const n = options.subnet ?? (subnet++ % 200) + 1;
  const hostIP = `10.99.${n}.1`;
  const containerIP = `10.99.${n}.2`;
  await sh("ip", [
    "-n",
    host.name,
    "link",
    "add",
    hostVeth,
    "type",
    "veth",
    "peer",
    "name",
    ifname,
    "netns",
    ctr.name,
  ]);
  await sh("ip", ["-n", host.name, "addr", "add", `${hostIP}/24`, "dev", hostVeth]);
  await sh("ip", ["-n", host.name, "link", "set", hostVeth, "up"]);
  await sh("ip", ["-n", ctr.name, "addr", "add", `${containerIP}/24`, "dev", ifname]);
  await sh("ip", ["-n", ctr.name, "link", "set", ifname, "up"]);
  const h = (await link(host, hostVeth))!;
  const c = (await link(ctr, ifname))!;
  return {
    hostVeth,
    ifname,
    hostIP,
    containerIP,
    result: {
      cniVersion: "1.1.0",
      interfaces: [
        { name: hostVeth, mac: h.address },
        { name: ifname, mac: c.address, sandbox: ctr.path },
      ],
      ips: [{ address: `${containerIP}/24`, gateway: hostIP, interface: 1 }],
    },
  };
}

/** `result` as a prevResult of a `version` config. */
export function prevResultFor(result: Result, version: string): Record<string, unknown> {
  return resultToJSON(convertResult(result, version));
}

/** The link attributes tuning touches, read from the kernel. */
export interface LinkState {
  mac: string;
  mtu: number;
  promisc: boolean;
  allmulti: boolean;
  txqlen: number;
}

/** The tuning-relevant state of `name` in `ns`. */
export async function linkState(ns: TestNetns, name: string): Promise<LinkState> {
  const l = await link(ns, name) as (LinkJ & { txqlen?: number }) | undefined;
  if (!l) throw new Error(`${name} not found in ${ns.name}`);
  return {
    mac: l.address,
    mtu: l.mtu,
    promisc: l.flags.includes("PROMISC"),
    allmulti: l.flags.includes("ALLMULTI"),
    txqlen: l.txqlen ?? 0,
  };
}

/** A qdisc as `tc -j -raw qdisc show` prints it. */
export interface QdiscJ {
  kind: string;
  handle: string;
  dev: string;
  root?: boolean;
  parent?: string;
  options?: { rate?: number; burst_raw?: string; limit?: number };
}

/** Every qdisc of `ns` except the kernel's defaults (noqueue, noop, pfifo_fast, mq). */
export async function qdiscs(ns: TestNetns): Promise<QdiscJ[]> {
  const out = await ns.exec("tc", ["-j", "-raw", "qdisc", "show"]);
  return (JSON.parse(out || "[]") as QdiscJ[]).filter((q) =>
    !["noqueue", "noop", "pfifo_fast", "mq", "fq_codel"].includes(q.kind)
  );
}

/** A TBF as `rate/limit/burst_raw` of the root qdisc of `dev`, or its kind when not a TBF. */
export function tbfOf(all: QdiscJ[], dev: string): string | undefined {
  const q = all.find((q) => q.dev === dev && q.root);
  if (!q) return undefined;
  if (q.kind !== "tbf") return q.kind;
  return `rate ${q.options?.rate} limit ${q.options?.limit} buffer ${
    parseInt(q.options?.burst_raw ?? "", 16)
  }`;
}

/** The ingress filters of `dev` in `ns` that redirect, as `prio proto kind -> to_dev`. */
export async function redirects(ns: TestNetns, dev: string): Promise<string[]> {
  const out = await ns.exec("tc", ["-j", "filter", "show", "dev", dev, "ingress"]).catch(() => "");
  const filters = JSON.parse(out || "[]") as {
    pref: number;
    protocol: string;
    kind: string;
    options?: {
      flowid?: string;
      match?: { value: string; mask: string };
      actions?: { kind: string; mirred_action?: string; direction?: string; to_dev?: string }[];
    };
  }[];
  return filters.flatMap((f) => {
    const a = f.options?.actions?.[0];
    if (!a) return [];
    const m = f.options?.match;
    return [
      `prio ${f.pref} ${f.protocol} ${f.kind} match ${m?.value}/${m?.mask} flowid ${f.options?.flowid} ${a.kind} ${a.direction} ${a.mirred_action} -> ${a.to_dev}`,
    ];
  });
}
