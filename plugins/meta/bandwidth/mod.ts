/**
 * bandwidth: a chained plugin that limits a veth attachment's traffic with
 * token bucket filters in the host. Traffic to the container is shaped by a
 * TBF on the host end of the veth; traffic from the container is redirected
 * from that end's ingress to an IFB device (`bwp` + hash, the reference's
 * name) and shaped by a TBF there.
 *
 * ADD looks the host end up (one `ip` in the container, one in the host, at
 * the same time), makes the IFB (one `ip`), and sets up every qdisc and
 * filter in one `tc -batch`.
 * @module
 */

import * as z from "zod/mini";
import { versionsFrom } from "../../../lib/cni/spec/version.ts";
import { hashedName } from "../../../lib/cni/hash.ts";
import { goStruct, NETCONF_FIELDS, parseConf } from "../../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig } from "../../../lib/cni/errors.ts";
import { checkFailed } from "../../../lib/net/check.ts";
import { requireTools } from "../../../lib/net/exec.ts";
import {
  ipBatch,
  IpBatchError,
  type IpCommand,
  iprouteBatch,
  type LinkInfo,
} from "../../../lib/net/ip.ts";
import { deleteLink, randomMac } from "../../../lib/net/link.ts";
import { requireNetns } from "../../../lib/net/netns.ts";
import { withRollback } from "../../../lib/cni/rollback.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { GCAttachment, Result } from "../../../lib/cni/spec/schemas.ts";
import { acceptedBuffers, referenceTbf, type Tbf, tbfCommand, tickInUsec } from "./tbf.ts";

const Uint64 = z.number().check(z.int(), z.nonnegative());
const LIMIT_FIELDS = {
  ingressRate: z.optional(Uint64),
  ingressBurst: z.optional(Uint64),
  egressRate: z.optional(Uint64),
  egressBurst: z.optional(Uint64),
};
const Limits = goStruct(LIMIT_FIELDS);
type Limits = z.infer<typeof Limits>;

const BandwidthConf = goStruct({
  ...NETCONF_FIELDS,
  ...LIMIT_FIELDS,
  runtimeConfig: z.optional(goStruct({ bandwidth: z.optional(Limits) })),
});

/** A shaped direction: its rate and burst in bits, both non-zero. */
interface Shape {
  rate: number;
  burst: number;
}

/** The limits of one attachment; a direction is absent when it is not shaped. */
interface Bandwidth {
  ingress?: Shape;
  egress?: Shape;
}

const FOUR_GB = 2 ** 32 - 1;

function shapeOf(rate = 0, burst = 0): Shape | undefined {
  if (burst === 0 && rate !== 0) throw invalidConfig("if rate is set, burst must also be set");
  if (rate === 0 && burst !== 0) throw invalidConfig("if burst is set, rate must also be set");
  if (Math.floor(burst / 8) >= FOUR_GB) throw invalidConfig("burst cannot be more than 4GB");
  return rate ? { rate, burst } : undefined;
}

/**
 * The limits: the top-level keys when any of them is present (even as
 * null, as Go decodes them into the embedded struct), else
 * `runtimeConfig.bandwidth`.
 */
function loadBandwidth(args: CmdArgs): { name: string; bandwidth: Bandwidth } {
  const conf = parseConf(BandwidthConf, args.config);
  const names = Object.keys(LIMIT_FIELDS).map((k) => k.toLowerCase());
  const topLevel = Object.keys(args.config).some((k) => names.includes(k.toLowerCase()));
  const limits: Limits = topLevel ? conf : conf.runtimeConfig?.bandwidth ?? {};
  const ingress = shapeOf(limits.ingressRate, limits.ingressBurst);
  const egress = shapeOf(limits.egressRate, limits.egressBurst);
  return {
    name: conf.name,
    bandwidth: { ...(ingress ? { ingress } : {}), ...(egress ? { egress } : {}) },
  };
}

/** The reference's IFB name: `bwp` + 12 hex digits of sha512(network + containerID). */
export function ifbName(network: string, containerId: string): Promise<string> {
  return hashedName("bwp", network + containerId, 15);
}

/**
 * The alias cnikit gives its IFBs, so GC can tell this network's from
 * others'. Network names and container IDs have no spaces or quotes.
 */
function ifbAlias(network: string, containerId: string): string {
  return `cni bandwidth net ${network} id ${containerId}`;
}

/** The network an IFB's alias names, if cnikit made it. */
function aliasNetwork(alias: string | undefined): string | undefined {
  return alias?.match(/^cni bandwidth net (\S+) id \S+$/)?.[1];
}

type PeerLink = LinkInfo & { link_index?: number };

/**
 * The host end of the container's veth among the result's host interfaces:
 * the veth whose peer is `CNI_IFNAME`, and the other way round. Its name
 * and MTU.
 */
async function hostInterface(args: CmdArgs, prev: Result): Promise<LinkInfo> {
  if (!prev.interfaces?.length) throw invalidConfig("no interfaces provided");
  const candidates = prev.interfaces.filter((i) => !i.sandbox);
  const [container, hosts] = await Promise.all([
    ipBatch([["link", "show", "dev", args.ifname]], { netns: args.netns, flags: ["-d"] }).then(
      (out) => (out[0] as PeerLink[])[0],
      (e: Error) => e,
    ),
    candidates.length
      ? ipBatch(candidates.map((c) => ["link", "show", "dev", c.name]), {
        force: true,
        flags: ["-d"],
      }).catch((e) => (e instanceof IpBatchError ? e.outputs : []))
      : Promise.resolve([]),
  ]);
  if (container instanceof Error || container?.linkinfo?.info_kind !== "veth") {
    const why = container instanceof Error ? container.message : "not a veth";
    throw invalidConfig(`container interface ${args.ifname} has no veth peer: ${why}`);
  }
  const host = (hosts as PeerLink[][]).flat().find((l) =>
    l.linkinfo?.info_kind === "veth" && l.ifindex === container.link_index &&
    l.link_index === container.ifindex
  );
  if (!host) throw invalidConfig("no veth peer of container interface found in host ns");
  return host;
}

function requirePrev(args: CmdArgs, msg: string): Result {
  if (!args.prevResult) throw invalidConfig(msg);
  return args.prevResult;
}

async function add(args: CmdArgs): Promise<Result> {
  const { name, bandwidth } = loadBandwidth(args);
  if (!bandwidth.ingress && !bandwidth.egress) return args.prevResult ?? { cniVersion: "1.1.0" };
  const prev = structuredClone(requirePrev(args, "must be called as chained plugin"));
  requireNetns(args.netns);
  const host = await hostInterface(args, prev);
  const tick = tickInUsec();
  const veth = host.ifname;

  return await withRollback(async (rollback) => {
    const tc: IpCommand[] = [];
    if (bandwidth.ingress) {
      tc.push(
        tbfCommand(veth, referenceTbf(bandwidth.ingress.rate, bandwidth.ingress.burst, tick)),
      );
    }
    if (bandwidth.egress) {
      const ifb = await ifbName(name, args.containerId);
      const mac = randomMac();
      try {
        await ipBatch([
          [
            "link",
            "add",
            ifb,
            "txqueuelen",
            "0",
            "mtu",
            String(host.mtu),
            "address",
            mac,
            "type",
            "ifb",
          ],
          ["link", "set", "dev", ifb, "alias", ifbAlias(name, args.containerId), "up"],
        ]);
      } catch (e) {
        if (e instanceof IpBatchError && e.line !== 1) await deleteLink(ifb).catch(() => {});
        throw new CniError(ErrorCode.ioFailure, `adding link: ${(e as Error).message}`);
      }
      rollback.defer("IFB", () => deleteLink(ifb));
      prev.interfaces = [...prev.interfaces ?? [], { name: ifb, mac }];
      tc.push(
        ["qdisc", "add", "dev", veth, "handle", "ffff:", "ingress"],
        [
          "filter",
          "add",
          "dev",
          veth,
          "parent",
          "ffff:",
          "protocol",
          "all",
          "prio",
          "1",
          "u32",
          "match",
          "u32",
          "0",
          "0",
          "flowid",
          "1:1",
          "action",
          "mirred",
          "egress",
          "redirect",
          "dev",
          ifb,
        ],
        tbfCommand(ifb, referenceTbf(bandwidth.egress.rate, bandwidth.egress.burst, tick)),
      );
    }
    try {
      await iprouteBatch("tc", tc);
    } catch (e) {
      // Remove what the lines before the failing one added to the veth (the
      // IFB and its qdisc go with the IFB).
      const done = e instanceof IpBatchError && e.line ? tc.slice(0, e.line - 1) : [];
      const undo = done.flatMap((c): IpCommand[] =>
        c[0] === "qdisc" && c[3] === veth
          ? [["qdisc", "del", "dev", veth, c[4] === "root" ? "root" : "ingress"]]
          : []
      );
      if (undo.length) await iprouteBatch("tc", undo, { force: true }).catch(() => {});
      throw e;
    }
    return prev;
  });
}

/** Deletes the IFB; the host veth's qdiscs go with the veth. Gone already is fine. */
async function del(args: CmdArgs): Promise<void> {
  const conf = parseConf(goStruct({ name: z.string() }), args.config);
  await deleteLink(await ifbName(conf.name, args.containerId));
}

interface QdiscJ {
  kind: string;
  dev?: string;
  root?: boolean;
  options?: { rate?: number; burst_raw?: string; limit?: number };
}

interface FilterJ {
  options?: { actions?: { kind?: string; to_dev?: string }[] };
}

function checkTbf(qdiscs: QdiscJ[], dev: string, want: Tbf): void {
  const root = qdiscs.find((q) => q.dev === dev && q.root);
  if (!root) checkFailed("Failed to find qdisc");
  if (root.kind !== "tbf") checkFailed(`Failed to find qdisc: ${dev} has ${root.kind}, not tbf`);
  const o = root.options ?? {};
  if (o.rate !== want.rate) checkFailed("Rate doesn't match");
  if (o.limit !== want.limit) checkFailed("Limit doesn't match");
  if (!acceptedBuffers(want).includes(parseInt(o.burst_raw ?? "", 16))) {
    checkFailed("Buffer doesn't match");
  }
}

async function check(args: CmdArgs): Promise<void> {
  const { name, bandwidth } = loadBandwidth(args);
  const prev = requirePrev(args, "must be called as a chained plugin");
  if (!bandwidth.ingress && !bandwidth.egress) return;
  requireNetns(args.netns);
  const veth = (await hostInterface(args, prev)).ifname;
  const ifb = await ifbName(name, args.containerId);
  const tick = tickInUsec();
  const [qdiscs, filters] = await iprouteBatch("tc", [
    ["qdisc", "show"],
    ["filter", "show", "dev", veth, "ingress"],
  ], { flags: ["-raw"] }) as [QdiscJ[], FilterJ[]];
  if (bandwidth.ingress) {
    checkTbf(qdiscs, veth, referenceTbf(bandwidth.ingress.rate, bandwidth.ingress.burst, tick));
  }
  if (bandwidth.egress) {
    if (!qdiscs.some((q) => q.dev === ifb)) checkFailed(`get ifb device: ${ifb}: Link not found`);
    checkTbf(qdiscs, ifb, referenceTbf(bandwidth.egress.rate, bandwidth.egress.burst, tick));
    const redirected = filters.some((f) =>
      f.options?.actions?.some((a) => a.kind === "mirred" && a.to_dev === ifb)
    );
    if (!redirected) checkFailed(`no filter on ${veth} redirects its ingress to ${ifb}`);
  }
}

/**
 * Removes this network's IFBs whose attachment is not valid: those cnikit
 * made (its alias names the network), and any `bwp` IFB that nothing
 * redirects to any more (its veth went with the container), whoever made
 * it. An IFB of another network that is still in use is never touched.
 */
async function gc(args: CmdArgs): Promise<void> {
  const conf = parseConf(goStruct({ name: z.string() }), args.config);
  const valid = new Set(
    await Promise.all(
      (args.validAttachments ?? []).map((a: GCAttachment) => ifbName(conf.name, a.containerID)),
    ),
  );
  const [ifbs, veths] = await ipBatch([
    ["link", "show", "type", "ifb"],
    ["link", "show", "type", "veth"],
  ]) as [(LinkInfo & { ifalias?: string })[], LinkInfo[]];
  const candidates = ifbs.filter((l) => /^bwp[0-9a-f]{12}$/.test(l.ifname) && !valid.has(l.ifname));
  if (!candidates.length) return;
  const targets = new Set<string>();
  if (candidates.some((l) => l.ifalias === undefined) && veths.length) {
    const shows = veths.map((v) => ["filter", "show", "dev", v.ifname, "ingress"]);
    const out = await iprouteBatch("tc", shows, { force: true })
      .catch((e) => (e instanceof IpBatchError ? e.outputs : [])) as FilterJ[][];
    for (const f of out.flat()) {
      for (const a of f.options?.actions ?? []) if (a.to_dev) targets.add(a.to_dev);
    }
  }
  const stale = candidates.filter((l) =>
    l.ifalias === undefined ? !targets.has(l.ifname) : aliasNetwork(l.ifalias) === conf.name
  );
  if (stale.length) {
    await ipBatch(stale.map((l) => ["link", "del", "dev", l.ifname]), { force: true });
  }
}

/** STATUS: `ip` and `tc` must be at hand. */
function status(): Promise<void> {
  return requireTools("ip", "tc");
}

/** The bandwidth plugin (spec 0.3.0 and later, as the reference). */
export const bandwidth: Plugin = {
  name: "bandwidth",
  versions: versionsFrom("0.3.0"),
  add,
  del,
  check,
  gc,
  status,
};
