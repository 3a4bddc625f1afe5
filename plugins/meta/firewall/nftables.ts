/**
 * The firewall with nftables, which the reference never shipped (its PR
 * plugins#462 was closed): the iptables backend's semantics in table
 * `inet cni_firewall`:
 *
 * - base chain `forward` (filter, forward hook, priority 0, policy accept)
 *   starts with `jump isolation_stage_1` (when an ingress policy asked for
 *   it) and `jump admin` (the operator's own rules), then holds per
 *   container address `<fam> daddr <ip> ct state established,related
 *   accept` and `<fam> saddr <ip> accept`;
 * - `isolation_stage_1`: `iifname <br> oifname != <br> jump
 *   isolation_stage_2` (isolated: also `iifname <br> oifname <br> drop`);
 *   `isolation_stage_2`: `oifname <br> drop`.
 *
 * The address rules are commented like the reference's nftables masquerade
 * (`<hash(net)>-<hash(if:cid)>, net: …, if: …, id: …`), so teardown and GC
 * find them without addresses, records or prevResult. One read and one
 * JSON transaction; bridge names of any spelling survive (JSON).
 *
 * An accept in one nftables table does not override a drop in another
 * table's forward chain: on a host whose own ruleset drops forwarded
 * traffic, the accepts here do not open it (the iptables backend inserts
 * into the filter table's FORWARD chain for that reason). Isolation and the
 * admin chain's drops work either way.
 * @module
 */

import { checkFailed } from "../../../lib/net/check.ts";
import { formatIP, type IPNet } from "../../../lib/cni/ipnet.ts";
import type { NetfilterBackend, Owner } from "../../../lib/netfilter/backend.ts";
import {
  attachmentRules,
  instanceComment,
  staleAttachmentRules,
} from "../../../lib/netfilter/names.ts";
import {
  expr,
  listTable,
  nftApply,
  nftApplyText,
  type NftCommand,
  type NftTable,
  NftTx,
} from "../../../lib/netfilter/nftables.ts";
import { type FirewallSpec, ISOLATION_COMMENT, policyComment } from "./spec.ts";

/** The table. */
export const TABLE = "cni_firewall";
const FORWARD = "forward";
const ADMIN = "admin";
const STAGE1 = "isolation_stage_1";
const STAGE2 = "isolation_stage_2";
const tx = new NftTx("inet", TABLE);

function addressRules(ip: IPNet): unknown[][] {
  const fam = ip.ip.family === 4 ? "ip" : "ip6";
  const addr = formatIP(ip.ip);
  return [
    [
      expr.match(expr.payload(fam, "daddr"), addr),
      expr.match(expr.ctState(), ["established", "related"], "in"),
      expr.accept(),
    ],
    [expr.match(expr.payload(fam, "saddr"), addr), expr.accept()],
  ];
}

const same = (a: unknown[], b: unknown[]) => JSON.stringify(a) === JSON.stringify(b);

function has(table: NftTable | undefined, chain: string, rule: unknown[]): boolean {
  return !!table?.rulesOf(chain).some((r) => same(r.expr, rule));
}

function isolationCommands(
  table: NftTable | undefined,
  isolation: NonNullable<FirewallSpec["isolation"]>,
): NftCommand[] {
  const { bridge, isolated } = isolation;
  const iif = expr.match(expr.meta("iifname"), bridge);
  const commands: NftCommand[] = [tx.addChain(STAGE1), tx.addChain(STAGE2)];
  const wanted: [string, unknown[], string][] = [
    [
      STAGE1,
      [iif, expr.match(expr.meta("oifname"), bridge, "!="), expr.jump(STAGE2)],
      policyComment(isolated),
    ],
    ...(isolated
      ? [
        [
          STAGE1,
          [iif, expr.match(expr.meta("oifname"), bridge), expr.drop()],
          policyComment(true),
        ] as [
          string,
          unknown[],
          string,
        ],
      ]
      : []),
    [STAGE2, [expr.match(expr.meta("oifname"), bridge), expr.drop()], ISOLATION_COMMENT],
  ];
  for (const [chain, rule, comment] of wanted) {
    if (!has(table, chain, rule)) commands.push(tx.addRule(chain, rule, comment));
  }
  return commands;
}

/** The rules of `owner` in `table`, found by their comment's instance hash. */
function ownRules(table: NftTable | undefined, owner: Owner) {
  const rules = table?.rulesOf(FORWARD) ?? [];
  return attachmentRules(rules, owner.network, owner.ifname, owner.containerId);
}

/** The firewall through nftables. */
export const firewallNftables: NetfilterBackend<FirewallSpec> = {
  name: "nftables",

  async setup(owner, spec) {
    const table = await listTable("inet", TABLE);
    if (!table) await nftApplyText(tx.declare("CNI firewall plugin rules"));
    const comment = await instanceComment(owner.network, owner.ifname, owner.containerId);
    const commands: NftCommand[] = [
      tx.addTable(),
      tx.addChain(FORWARD, { type: "filter", hook: "forward", prio: 0 }),
      tx.addChain(ADMIN),
    ];
    // Inserted at the top, admin first, so the isolation jump ends up before it.
    const adminJump = [expr.jump(ADMIN)];
    if (!has(table, FORWARD, adminJump)) commands.push(tx.insertRule(FORWARD, adminJump));
    if (spec.isolation) {
      commands.push(...isolationCommands(table, spec.isolation));
      const stageJump = [expr.jump(STAGE1)];
      if (!has(table, FORWARD, stageJump)) {
        commands.push(tx.insertRule(FORWARD, stageJump, ISOLATION_COMMENT));
      }
    }
    // A crashed or repeated ADD of the same attachment is replaced, not doubled.
    commands.push(...(await ownRules(table, owner)).map((r) => tx.deleteRule(r)));
    for (const ip of spec.ips) {
      for (const rule of addressRules(ip)) commands.push(tx.addRule(FORWARD, rule, comment));
    }
    await nftApply(commands);
  },

  async check(owner, spec) {
    const table = await listTable("inet", TABLE);
    if (!has(table, FORWARD, [expr.jump(ADMIN)])) {
      checkFailed(`expected jump to ${ADMIN} not found in ${TABLE} ${FORWARD}`);
    }
    const mine = await ownRules(table, owner);
    for (const ip of spec.ips) {
      for (const rule of addressRules(ip)) {
        if (!mine.some((r) => same(r.expr, rule))) {
          checkFailed(`expected rule for ${formatIP(ip.ip)} not found in ${TABLE} ${FORWARD}`);
        }
      }
    }
  },

  async teardown(owner) {
    const table = await listTable("inet", TABLE);
    await nftApply((await ownRules(table, owner)).map((r) => tx.deleteRule(r)));
  },

  async gc(network, valid) {
    const table = await listTable("inet", TABLE);
    const stale = await staleAttachmentRules(table?.rulesOf(FORWARD) ?? [], network, valid);
    await nftApply(stale.map((r) => tx.deleteRule(r)));
  },
};
