/**
 * Port mapping with nftables, in the reference's objects: table
 * `cni_hostport` in family `ip` and/or `ip6` (comment "CNI portmap
 * plugin") with chains `hostports` (one DNAT rule per mapping),
 * `hostip_hostports` (kept empty, as the reference keeps it),
 * `hostports_all` (jumps to both), the base chains `prerouting` and `output`
 * (`<conditions> fib daddr type local jump hostports_all`) and
 * `masquerading` (hairpin and localhost masquerade). Every per-attachment
 * rule is commented with the bare container ID, as the reference's are, so
 * either side removes the other's.
 *
 * Setup reads each family's table and writes one JSON transaction for both
 * (replacing rules a crashed or repeated ADD left). nft text is used only
 * for what JSON cannot say (see lib/netfilter/nftables.ts): the table's
 * comment when the table is new, and conditions, which the user writes in
 * nft syntax.
 * @module
 */

import { checkFailed } from "../../../lib/net/check.ts";
import { formatIP, type IPNet } from "../../../lib/cni/ipnet.ts";
import type { NetfilterBackend } from "../../../lib/netfilter/backend.ts";
import {
  expr,
  listTable,
  nftApply,
  nftApplyText,
  type NftCommand,
  type NftRule,
  type NftTable,
  NftTx,
} from "../../../lib/netfilter/nftables.ts";
import { hostAddress, mappingsFor, type PortmapSpec } from "./spec.ts";

const TABLE = "cni_hostport";
const HOSTPORTS = "hostports";
const HOSTIP_HOSTPORTS = "hostip_hostports";
const HOSTPORTS_ALL = "hostports_all";
const MASQUERADING = "masquerading";
/** The chains that hold per-attachment rules. */
const ATTACHMENT_CHAINS = [HOSTPORTS, HOSTIP_HOSTPORTS, MASQUERADING];

type Fam = "ip" | "ip6";
const famOf = (family: 4 | 6): Fam => (family === 4 ? "ip" : "ip6");

const DSTNAT = -100;
const SRCNAT = 100;

function readBoth(): Promise<Record<Fam, NftTable | undefined>> {
  return Promise.all([listTable("ip", TABLE), listTable("ip6", TABLE)]).then(([ip, ip6]) => ({
    ip,
    ip6,
  }));
}

/** The rules of container `id` in `table` (commented with the bare ID, as the reference's). */
function ownRules(table: NftTable | undefined, id: string): NftRule[] {
  return ATTACHMENT_CHAINS.flatMap((chain) => table?.rulesOf(chain) ?? [])
    .filter((r) => r.comment === id);
}

/** The per-attachment rules of `container`: DNATs, then masquerades. */
function attachmentRules(
  tx: NftTx,
  spec: PortmapSpec,
  container: IPNet,
  id: string,
): NftCommand[] {
  const family = container.ip.family;
  const fam = famOf(family);
  const addr = formatIP(container.ip);
  const commands = mappingsFor(spec, family).map((m) => {
    const host = hostAddress(m);
    return tx.addRule(HOSTPORTS, [
      ...(host ? [expr.match(expr.payload(fam, "daddr"), host)] : []),
      expr.match(expr.payload(m.protocol, "dport"), m.hostPort),
      expr.dnat(addr, m.containerPort),
    ], id);
  });
  if (spec.snat) {
    const sources: unknown[] = spec.masqAll
      ? [expr.prefix(family === 4 ? "0.0.0.0" : "::", 0)]
      : family === 4
      ? [addr, "127.0.0.1"]
      : [addr];
    for (const source of sources) {
      commands.push(tx.addRule(MASQUERADING, [
        expr.match(expr.payload(fam, "saddr"), source),
        expr.match(expr.payload(fam, "daddr"), addr),
        expr.masquerade(),
      ], id));
    }
  }
  return commands;
}

/** How many rules of the attachment each chain must hold, per the reference's CHECK. */
function expectedCounts(spec: PortmapSpec, family: 4 | 6): Record<string, number> {
  return {
    [HOSTPORTS]: mappingsFor(spec, family).length,
    [MASQUERADING]: spec.snat ? (family === 4 && !spec.masqAll ? 2 : 1) : 0,
  };
}

/** Port mapping through nftables. */
export const portmapNftables: NetfilterBackend<PortmapSpec> = {
  name: "nftables",

  async setup(owner, spec) {
    const tables = await readBoth();
    const text: string[] = [];
    const commands: NftCommand[] = [];
    for (const container of spec.containers) {
      const fam = famOf(container.ip.family);
      const tx = new NftTx(fam, TABLE);
      const table = tables[fam];
      const conditions = spec.conditions[container.ip.family];
      const t = `${fam} ${TABLE}`;
      if (!table) text.push(...tx.declare("CNI portmap plugin"));
      if (conditions.length) {
        // The user's conditions are nft text: the hooks' rules go in text.
        text.push(
          `add chain ${t} ${HOSTPORTS_ALL}`,
          `add chain ${t} prerouting { type nat hook prerouting priority ${DSTNAT} ; }`,
          `add chain ${t} output { type nat hook output priority ${DSTNAT} ; }`,
          ...["prerouting", "output"].flatMap((hook) => [
            `flush chain ${t} ${hook}`,
            `add rule ${t} ${hook} ${
              conditions.join(" ")
            } fib daddr type local jump ${HOSTPORTS_ALL}`,
          ]),
        );
      }
      commands.push(
        tx.addTable(),
        tx.addChain(HOSTPORTS),
        tx.addChain(HOSTIP_HOSTPORTS),
        tx.addChain(HOSTPORTS_ALL),
        tx.flushChain(HOSTPORTS_ALL),
        tx.addRule(HOSTPORTS_ALL, [expr.jump(HOSTIP_HOSTPORTS)]),
        tx.addRule(HOSTPORTS_ALL, [expr.jump(HOSTPORTS)]),
      );
      for (const [hook, type] of [["prerouting", "prerouting"], ["output", "output"]] as const) {
        commands.push(tx.addChain(hook, { type: "nat", hook: type, prio: DSTNAT }));
        if (!conditions.length) {
          commands.push(
            tx.flushChain(hook),
            tx.addRule(hook, [
              expr.match(expr.fibDaddrType(), "local"),
              expr.jump(HOSTPORTS_ALL),
            ]),
          );
        }
      }
      if (spec.snat) {
        commands.push(
          tx.addChain(MASQUERADING, { type: "nat", hook: "postrouting", prio: SRCNAT }),
        );
      }
      // A crashed or repeated ADD of the same container is replaced, not doubled.
      commands.push(...ownRules(table, owner.containerId).map((r) => tx.deleteRule(r)));
      commands.push(...attachmentRules(tx, spec, container, owner.containerId));
    }
    // The text goes first: it declares the table (with its comment) that JSON then fills.
    await nftApplyText(text);
    await nftApply(commands);
  },

  async check(owner, spec) {
    for (const container of spec.containers) {
      const fam = famOf(container.ip.family);
      const table = await listTable(fam, TABLE);
      for (const [chain, want] of Object.entries(expectedCounts(spec, container.ip.family))) {
        if (want === 0) continue;
        const found = table?.rulesOf(chain).filter((r) => r.comment === owner.containerId).length;
        if ((found ?? 0) < want) {
          checkFailed(`missing hostport rules in "${chain}" chain`);
        }
      }
    }
  },

  async teardown(owner) {
    const tables = await readBoth();
    const commands: NftCommand[] = [];
    for (const fam of ["ip", "ip6"] as const) {
      const tx = new NftTx(fam, TABLE);
      commands.push(...ownRules(tables[fam], owner.containerId).map((r) => tx.deleteRule(r)));
    }
    await nftApply(commands);
  },

  // The rules name only the container, not the network (the reference's
  // comment is the bare container ID), so GC of one network cannot tell
  // another network's rules from stale ones: it removes nothing.
  gc() {
    return Promise.resolve();
  },
};
