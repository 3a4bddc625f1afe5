/**
 * One masquerade rule set for a whole node (the node agent's): traffic from
 * the node's pod subnet to anywhere but the cluster CIDR and multicast
 * leaves with the node's address. Per-attachment rules (lib/netfilter/masq/) cannot do
 * this: they exempt only the attachment's own subnet, so pod-to-pod traffic
 * between nodes would be masqueraded too.
 *
 * iptables: nat chain `<name>` (RETURN for each exempt prefix, then
 * MASQUERADE), jumped to from POSTROUTING for the source subnet. nftables:
 * table `ip <name>`, rewritten whole. IPv4 only.
 * @module
 */

import { formatCIDR, formatIP, type IPNet, networkOf, parseCIDR } from "../lib/cni/ipnet.ts";
import { type BackendName, settleBackends } from "../lib/netfilter/backend.ts";
import { defaultBackend, iptablesUsable, nftUsable } from "../lib/netfilter/detect.ts";
import {
  appendRule,
  comment,
  deleteSavedLine,
  removeChains,
  type RuleSpec,
  savedLine,
  type SavedTable,
  updateTable,
} from "../lib/netfilter/iptables.ts";
import { expr, nftApply, NftTx } from "../lib/netfilter/nftables.ts";

/** A node-wide masquerade rule set. */
export interface NodeMasq {
  /** The iptables chain (nat table) or the nftables table (`ip` family) that holds the rules. */
  name: string;
  source: IPNet;
  exclude: IPNet[];
  /** Put on every rule, so a reader of the ruleset knows whose they are. */
  comment: string;
}

function exempt(spec: NodeMasq): IPNet[] {
  return [...spec.exclude.map(networkOf), parseCIDR("224.0.0.0/4")!];
}

/** POSTROUTING's jumps to `name` other than `keep`, as delete lines. */
function staleJumps(saved: SavedTable, name: string, keep?: string): string[] {
  return saved.rulesOf("POSTROUTING").filter((l) => l.endsWith(` -j ${name}`) && l !== keep)
    .map(deleteSavedLine);
}

function iptablesPlan(saved: SavedTable, spec: NodeMasq): string[] {
  const tag = comment(spec.comment);
  const jump: RuleSpec = ["-s", formatCIDR(networkOf(spec.source)), ...tag, "-j", spec.name];
  // A jump for an earlier subnet of the node goes; the chain is rewritten whole.
  const lines = staleJumps(saved, spec.name, savedLine("POSTROUTING", jump));
  lines.push(saved.hasChain(spec.name) ? `-F ${spec.name}` : `-N ${spec.name}`);
  for (const net of exempt(spec)) {
    lines.push(appendRule(spec.name, ["-d", formatCIDR(net), ...tag, "-j", "RETURN"]));
  }
  lines.push(appendRule(spec.name, [...tag, "-j", "MASQUERADE"]));
  if (!saved.has("POSTROUTING", jump)) lines.push(appendRule("POSTROUTING", jump));
  return lines;
}

/** Installs or rewrites a node-wide masquerade rule set (IPv4), atomically. Requires root. */
export async function setupNodeMasq(spec: NodeMasq, backend?: BackendName): Promise<void> {
  if ((backend ?? await defaultBackend()) === "iptables") {
    await updateTable(4, "nat", (saved) => iptablesPlan(saved, spec));
    return;
  }
  const tx = new NftTx("ip", spec.name);
  const source = networkOf(spec.source);
  await nftApply([
    tx.addTable(),
    { delete: { table: { family: "ip", name: spec.name } } },
    { add: { table: { family: "ip", name: spec.name, comment: spec.comment } } },
    tx.addChain("postrouting", { type: "nat", hook: "postrouting", prio: 100 }),
    tx.addRule("postrouting", [
      expr.match(expr.payload("ip", "saddr"), expr.prefix(formatIP(source.ip), source.prefix)),
      expr.match(
        expr.payload("ip", "daddr"),
        expr.set(exempt(spec).map((n) => expr.prefix(formatIP(n.ip), n.prefix))),
        "!=",
      ),
      expr.masquerade(),
    ], spec.comment),
  ]);
}

/** Removes a node-wide masquerade rule set from both backends; absent is fine. */
export async function teardownNodeMasq(name: string): Promise<void> {
  await settleBackends([
    [
      () => iptablesUsable(4),
      updateTable(4, "nat", (saved) => removeChains(saved, [name])),
    ],
    [
      nftUsable,
      nftApply([
        { add: { table: { family: "ip", name } } },
        { delete: { table: { family: "ip", name } } },
      ]),
    ],
  ]);
}
