/**
 * Masquerade with nftables, the reference's objects: table
 * `inet cni_plugins_masquerade`, base chain `postrouting` (nat, srcnat)
 * rewritten to skip multicast and `goto masq_checks`, and in `masq_checks`
 * one rule per address, `<fam> saddr <ip> <fam> daddr != <subnet>
 * masquerade`, commented `<hash(net)>-<hash(if:cid)>, net: …` so that
 * teardown and GC find an attachment's rules without its addresses.
 * One read and one transaction (plus one text declaration the first time,
 * for the table's and chain's descriptive comments).
 * @module
 */

import { checkFailed } from "../../net/check.ts";
import { formatCIDR, formatIP, type IPNet, networkOf } from "../../cni/ipnet.ts";
import type { GCAttachment } from "../../cni/spec/schemas.ts";
import type { NetfilterBackend, Owner } from "../backend.ts";
import {
  expr,
  listTable,
  nftApply,
  nftApplyText,
  type NftCommand,
  type NftRule,
  NftTx,
} from "../nftables.ts";
import { attachmentRules, instanceComment, MASQ_NFT, staleAttachmentRules } from "../names.ts";

const tx = new NftTx("inet", MASQ_NFT.table);

/** The statements of one address's rule. */
function ruleExpr(ip: IPNet): unknown[] {
  const fam = ip.ip.family === 4 ? "ip" : "ip6";
  const subnet = networkOf(ip);
  return [
    expr.match(expr.payload(fam, "saddr"), formatIP(ip.ip)),
    expr.match(expr.payload(fam, "daddr"), expr.prefix(formatIP(subnet.ip), subnet.prefix), "!="),
    expr.masquerade(),
  ];
}

async function rules(): Promise<NftRule[] | undefined> {
  return (await listTable("inet", MASQ_NFT.table))?.rulesOf(MASQ_NFT.chain);
}

/** The rules among `rules` of `owner`'s attachment. */
function ownRules(rules: readonly NftRule[] | undefined, owner: Owner): Promise<NftRule[]> {
  return attachmentRules(rules ?? [], owner.network, owner.ifname, owner.containerId);
}

/** Masquerade through nftables. */
export const masqNftables: NetfilterBackend<IPNet[]> = {
  name: "nftables",

  async setup(owner, ips) {
    const comment = await instanceComment(owner.network, owner.ifname, owner.containerId);
    const existing = await rules();
    if (!existing) {
      await nftApplyText(
        tx.declare(MASQ_NFT.tableComment, [[MASQ_NFT.chain, MASQ_NFT.chainComment]]),
      );
    }
    const commands: NftCommand[] = [
      tx.addTable(),
      tx.addChain(MASQ_NFT.chain),
      tx.addChain("postrouting", { type: "nat", hook: "postrouting", prio: 100 }),
      tx.flushChain("postrouting"),
      tx.addRule("postrouting", [
        expr.match(expr.payload("ip", "daddr"), expr.prefix("224.0.0.0", 4)),
        expr.return(),
      ]),
      tx.addRule("postrouting", [
        expr.match(expr.payload("ip6", "daddr"), expr.prefix("ff00::", 8)),
        expr.return(),
      ]),
      tx.addRule("postrouting", [expr.goto(MASQ_NFT.chain)]),
      // A crashed or repeated ADD of the same attachment is replaced, not doubled.
      ...(await ownRules(existing, owner)).map((r) => tx.deleteRule(r)),
      ...ips.map((ip) => tx.addRule(MASQ_NFT.chain, ruleExpr(ip), comment)),
    ];
    await nftApply(commands);
  },

  async check(owner, ips) {
    const comment = await instanceComment(owner.network, owner.ifname, owner.containerId);
    const mine = (await rules() ?? []).filter((r) => r.comment === comment);
    for (const ip of ips) {
      const want = JSON.stringify(ruleExpr(ip));
      if (!mine.some((r) => JSON.stringify(r.expr) === want)) {
        checkFailed(
          `nftables masquerade rule for ${formatCIDR(ip)} not found in ${MASQ_NFT.chain}`,
        );
      }
    }
  },

  async teardown(owner) {
    await nftApply((await ownRules(await rules(), owner)).map((r) => tx.deleteRule(r)));
  },

  async gc(network, valid: readonly GCAttachment[]) {
    const stale = await staleAttachmentRules(await rules() ?? [], network, valid);
    await nftApply(stale.map((r) => tx.deleteRule(r)));
  },
};
