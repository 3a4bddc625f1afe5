/**
 * Port mapping with iptables, in the reference's nat chains so that either
 * side removes the other's rules:
 *
 * - `PREROUTING` and `OUTPUT`: `-m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT`
 * - `CNI-HOSTPORT-DNAT`: per attachment and protocol, `-p <proto> -m comment
 *   --comment 'dnat name: "<net>" id: "<cid>"' -m multiport --dports <≤15
 *   ports> [conditions] -j CNI-DN-<hash(net+cid)>`
 * - `CNI-DN-<hash>`: per mapping, the hairpin mark (`-s <container subnet>`),
 *   the localhost mark (`-s 127.0.0.1`, IPv4), then the DNAT
 * - `CNI-HOSTPORT-SETMARK` sets mark bit `markMasqBit`, `CNI-HOSTPORT-MASQ`
 *   (first in POSTROUTING) masquerades what carries it.
 *
 * Each family is one iptables-save and one iptables-restore. Setup replaces
 * the attachment's chain and entry rules; teardown finds them by the chain
 * name, so it needs no mappings. The shared chains are never removed.
 * @module
 */

import { checkFailed } from "../../../lib/net/check.ts";
import { formatCIDR, formatIP, type IPNet, networkOf } from "../../../lib/cni/ipnet.ts";
import type { GCAttachment } from "../../../lib/cni/spec/schemas.ts";
import {
  eachIptablesFamily,
  type NetfilterBackend,
  type Owner,
} from "../../../lib/netfilter/backend.ts";
import {
  appendRule,
  comment,
  createChains,
  deleteSavedLine,
  ensureRule,
  type Family,
  removeChains,
  type RuleSpec,
  type SavedTable,
  saveTable,
  updateTable,
} from "../../../lib/netfilter/iptables.ts";
import { chainName } from "../../../lib/netfilter/names.ts";
import { hostAddress, mappingsFor, type PortmapSpec } from "./spec.ts";

/** The shared chains; their names must never change (the reference's too). */
export const DNAT_CHAIN = "CNI-HOSTPORT-DNAT";
export const SETMARK_CHAIN = "CNI-HOSTPORT-SETMARK";
export const MASQ_CHAIN = "CNI-HOSTPORT-MASQ";

const TO_LOCAL: RuleSpec = ["-m", "addrtype", "--dst-type", "LOCAL", "-j", DNAT_CHAIN];
const MASQ_ENTRY: RuleSpec = [...comment("CNI portfwd requiring masquerade"), "-j", MASQ_CHAIN];

/** `0x2000/0x2000` for bit 13, as iptables prints a mark. */
function markDef(bit: number): string {
  const value = `0x${(2 ** bit).toString(16)}`;
  return `${value}/${value}`;
}

/** iptables caps comments at 256 bytes; the reference cuts longer ones to 253 + "...". */
function trimComment(text: string): string {
  return text.length <= 255 ? text : `${text.slice(0, 253)}...`;
}

/** The entry comment of an attachment. */
function entryComment(owner: Owner): string {
  return trimComment(`dnat name: "${owner.network}" id: "${owner.containerId}"`);
}

/**
 * The names of an attachment's chains: the DNAT chain, and the SNAT chain
 * that portmap before 0.7 hung off CNI-HOSTPORT-SNAT (teardown removes it too).
 */
async function chainsOf(owner: Owner): Promise<{ dnat: string; oldSnat: string }> {
  return {
    dnat: await chainName(owner.network, owner.containerId, "DN-"),
    oldSnat: await chainName(owner.network, owner.containerId, "SN-"),
  };
}

/** Splits ports into the comma lists multiport takes (at most 15 each). */
function portLists(ports: number[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < ports.length; i += 15) out.push(ports.slice(i, i + 15).join(","));
  return out;
}

/** The entry rules of an attachment in CNI-HOSTPORT-DNAT, for one family. */
function entryRules(owner: Owner, spec: PortmapSpec, family: Family, dnat: string): RuleSpec[] {
  // All mappings count here, whatever their hostIP family, as in the reference.
  const byProto = new Map<string, number[]>();
  for (const m of spec.mappings) {
    byProto.set(m.protocol, [...byProto.get(m.protocol) ?? [], m.hostPort]);
  }
  return [...byProto.keys()].sort().flatMap((proto) =>
    portLists(byProto.get(proto)!).map((ports) => [
      "-p",
      proto,
      ...comment(entryComment(owner)),
      "-m",
      "multiport",
      "--dports",
      ports,
      ...spec.conditions[family],
      "-j",
      dnat,
    ])
  );
}

/** The rules of the attachment's CNI-DN chain for `container`, in order. */
function dnatRules(spec: PortmapSpec, container: IPNet): RuleSpec[] {
  const family = container.ip.family;
  const setMark = spec.externalSetMarkChain ?? SETMARK_CHAIN;
  const to = family === 4 ? `${formatIP(container.ip)}` : `[${formatIP(container.ip)}]`;
  return mappingsFor(spec, family).flatMap((m) => {
    const host = hostAddress(m);
    const dst = host ? ["-d", `${host}/${family === 4 ? 32 : 128}`] : [];
    const match = [...dst, "-p", m.protocol, "-m", m.protocol, "--dport", String(m.hostPort)];
    const rules: RuleSpec[] = [];
    if (spec.snat) {
      // iptables prints no source for 0.0.0.0/0 (masqAll).
      const hairpin = spec.masqAll ? [] : ["-s", formatCIDR(networkOf(container))];
      rules.push([...hairpin, ...match, "-j", setMark]);
      if (family === 4 && !spec.masqAll) {
        rules.push(["-s", "127.0.0.1/32", ...match, "-j", setMark]);
      }
    }
    rules.push([...match, "-j", "DNAT", "--to-destination", `${to}:${m.containerPort}`]);
    return rules;
  });
}

/** The shared chains and their rules that `spec` needs, as [chain, rule, first?] triples. */
function sharedRules(spec: PortmapSpec): [string, RuleSpec, boolean][] {
  const rules: [string, RuleSpec, boolean][] = [];
  if (spec.snat && spec.externalSetMarkChain === undefined) {
    const mark = markDef(spec.markBit);
    rules.push(
      [SETMARK_CHAIN, [
        ...comment("CNI portfwd masquerade mark"),
        "-j",
        "MARK",
        "--set-xmark",
        mark,
      ], false],
      [MASQ_CHAIN, ["-m", "mark", "--mark", mark, "-j", "MASQUERADE"], false],
      // First in POSTROUTING: the masquerade rules of bridge and ptp would stomp on it.
      ["POSTROUTING", MASQ_ENTRY, true],
    );
  }
  rules.push(["PREROUTING", TO_LOCAL, false], ["OUTPUT", TO_LOCAL, false]);
  return rules;
}

/** The plan that makes `saved` hold the attachment's rules for `container`. */
function setupPlan(
  saved: SavedTable,
  owner: Owner,
  spec: PortmapSpec,
  container: IPNet,
  dnat: string,
): string[] {
  const family = container.ip.family;
  const lines: string[] = [];
  const shared = sharedRules(spec);
  lines.push(...createChains(saved, [DNAT_CHAIN, ...shared.map(([c]) => c)]));
  for (const [chain, rule, first] of shared) lines.push(...ensureRule(saved, chain, rule, first));
  // The attachment's own chain is rewritten whole, so a repeated ADD replaces it.
  if (saved.hasChain(dnat)) {
    lines.push(...saved.jumpsTo(dnat).map(deleteSavedLine), `-F ${dnat}`);
  } else {
    lines.push(`-N ${dnat}`);
  }
  lines.push(...dnatRules(spec, container).map((r) => appendRule(dnat, r)));
  lines.push(...entryRules(owner, spec, family, dnat).map((r) => appendRule(DNAT_CHAIN, r)));
  return lines;
}

/**
 * Whether the entry rule `rule` is in `saved` when conditions make an exact
 * compare impossible (iptables prints them in its own order): a rule of
 * CNI-HOSTPORT-DNAT with the protocol and ports that jumps to `dnat`.
 */
function entryPresent(saved: SavedTable, rule: RuleSpec, dnat: string): boolean {
  const proto = rule[1]!;
  const ports = rule[rule.indexOf("--dports") + 1]!;
  return saved.rulesOf(DNAT_CHAIN).some((l) =>
    l.includes(` -p ${proto} `) && l.includes(` --dports ${ports} `) && l.endsWith(` -j ${dnat}`)
  );
}

/** Port mapping through iptables. */
export const portmapIptables: NetfilterBackend<PortmapSpec> = {
  name: "iptables",

  async setup(owner, spec) {
    const { dnat } = await chainsOf(owner);
    await Promise.all(spec.containers.map((container) =>
      updateTable(
        container.ip.family,
        "nat",
        (saved) => setupPlan(saved, owner, spec, container, dnat),
      )
    ));
  },

  async check(owner, spec) {
    const { dnat } = await chainsOf(owner);
    for (const container of spec.containers) {
      const family = container.ip.family;
      const saved = await saveTable(family, "nat");
      const where = `iptables (IPv${family}) table nat`;
      if (!saved.hasChain(dnat)) {
        checkFailed(`chain ${dnat} not found in ${where}`);
      }
      const missing = (chain: string, rule: RuleSpec) =>
        checkFailed(`rule ${rule.join(" ")} in chain ${chain} not found in ${where}`);
      for (const [chain, rule] of sharedRules(spec)) {
        if (!saved.has(chain, rule)) missing(chain, rule);
      }
      for (const rule of dnatRules(spec, container)) {
        if (!saved.has(dnat, rule)) missing(dnat, rule);
      }
      for (const rule of entryRules(owner, spec, family, dnat)) {
        const found = spec.conditions[family].length
          ? entryPresent(saved, rule, dnat)
          : saved.has(DNAT_CHAIN, rule);
        if (!found) missing(DNAT_CHAIN, rule);
      }
    }
  },

  async teardown(owner) {
    const { dnat, oldSnat } = await chainsOf(owner);
    await eachIptablesFamily((family) =>
      updateTable(family, "nat", (saved) => removeChains(saved, [dnat, oldSnat]))
    );
  },

  async gc(network, valid: readonly GCAttachment[]) {
    const keep = new Set(valid.map((a) => a.containerID));
    const prefix = `-A ${DNAT_CHAIN} `;
    const marker = `--comment ${JSON.stringify(`dnat name: "${network}" id: "`).slice(0, -1)}`;
    await eachIptablesFamily((family) =>
      updateTable(family, "nat", (saved) => {
        const stale = new Set<string>();
        for (const line of saved.rulesOf(DNAT_CHAIN)) {
          const at = line.indexOf(marker);
          if (!line.startsWith(prefix) || at < 0) continue;
          const id = line.slice(at + marker.length).match(/^([^\\"]+)\\""/)?.[1];
          const target = line.match(/ -j (CNI-DN-[0-9a-f]{21})$/)?.[1];
          if (id !== undefined && target && !keep.has(id)) stale.add(target);
        }
        return removeChains(saved, [...stale]);
      })
    );
  },
};
