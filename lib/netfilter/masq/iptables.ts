/**
 * Masquerade with iptables, the reference's objects: nat chain
 * `CNI-<hash(net+cid)>` holding `-d <subnet> ACCEPT` and
 * `! -d <multicast> MASQUERADE`, jumped to from POSTROUTING for each
 * container address, every rule commented `name: "<net>" id: "<cid>"`.
 * One iptables-save and one iptables-restore per family; teardown finds the
 * chain by name, so it needs no addresses.
 * @module
 */

import { checkFailed } from "../../net/check.ts";
import { formatCIDR, formatIP, type IPNet, networkOf } from "../../cni/ipnet.ts";
import type { GCAttachment } from "../../cni/spec/schemas.ts";
import { eachIptablesFamily, type NetfilterBackend, type Owner } from "../backend.ts";
import {
  comment,
  createChains,
  ensureRule,
  type Family,
  removeChains,
  type RuleSpec,
  type SavedTable,
  saveTable,
  updateTable,
} from "../iptables.ts";
import { chainComment, chainName } from "../names.ts";

const FAMILIES = [4, 6] as const;

/** The rules of one family as [chain, spec] pairs, in the order the reference appends them. */
function rules(owner: Owner, chain: string, ips: IPNet[]): [string, RuleSpec][] {
  const tag = comment(chainComment(owner.network, owner.containerId));
  return ips.flatMap((ip): [string, RuleSpec][] => {
    const family = ip.ip.family;
    return [
      [chain, ["-d", formatCIDR(networkOf(ip)), ...tag, "-j", "ACCEPT"]],
      [chain, ["!", "-d", family === 4 ? "224.0.0.0/4" : "ff00::/8", ...tag, "-j", "MASQUERADE"]],
      ["POSTROUTING", ["-s", `${formatIP(ip.ip)}/${family === 4 ? 32 : 128}`, ...tag, "-j", chain]],
    ];
  });
}

function ofFamily(ips: IPNet[], family: Family): IPNet[] {
  return ips.filter((ip) => ip.ip.family === family);
}

/**
 * The per-attachment chains of `network` in a nat snapshot, keyed by
 * container ID (network names and container IDs hold no quotes or
 * backslashes, so the comment needs no unescaping).
 */
function chainsByContainer(saved: SavedTable, network: string): Map<string, string> {
  const found = new Map<string, string>();
  const pattern = new RegExp(
    `^-A (CNI-[0-9a-f]{24}) .*--comment "name: \\\\"${
      network.replace(/[.]/g, "\\.")
    }\\\\" id: \\\\"([^"\\\\]+)\\\\""`,
  );
  for (const line of saved.rules) {
    const m = line.match(pattern);
    if (m) found.set(m[2]!, m[1]!);
  }
  return found;
}

/** Masquerade through iptables. */
export const masqIptables: NetfilterBackend<IPNet[]> = {
  name: "iptables",

  async setup(owner, ips) {
    const chain = await chainName(owner.network, owner.containerId);
    await Promise.all(FAMILIES.map(async (family) => {
      const mine = ofFamily(ips, family);
      if (mine.length === 0) return;
      const wanted = rules(owner, chain, mine);
      // A Set: two addresses in one subnet want the same ACCEPT and MASQUERADE.
      await updateTable(family, "nat", (saved) => [
        ...createChains(saved, [chain]),
        ...new Set(wanted.flatMap(([c, spec]) => ensureRule(saved, c, spec))),
      ]);
    }));
  },

  async check(owner, ips) {
    const chain = await chainName(owner.network, owner.containerId);
    for (const family of FAMILIES) {
      const mine = ofFamily(ips, family);
      if (mine.length === 0) continue;
      const saved = await saveTable(family, "nat");
      const missing = rules(owner, chain, mine).find(([c, spec]) => !saved.has(c, spec));
      if (missing) {
        checkFailed(`masquerade rule ${missing[1].join(" ")} not found in chain ${missing[0]}`);
      }
    }
  },

  async teardown(owner) {
    const chains = new Set([await chainName(owner.network, owner.containerId)]);
    await eachIptablesFamily((family) =>
      updateTable(family, "nat", (saved) => removeChains(saved, chains))
    );
  },

  async gc(network, valid: readonly GCAttachment[]) {
    const validIds = new Set(valid.map((a) => a.containerID));
    await eachIptablesFamily((family) =>
      updateTable(family, "nat", (saved) => {
        const stale = [...chainsByContainer(saved, network)]
          .filter(([id]) => !validIds.has(id)).map(([, chain]) => chain);
        return removeChains(saved, stale);
      })
    );
  },
};
