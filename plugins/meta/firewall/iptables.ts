/**
 * The firewall with iptables, the reference's filter-table objects:
 *
 * - `FORWARD` starts with `-m comment --comment "CNI firewall plugin rules"
 *   -j CNI-FORWARD`; `CNI-FORWARD` starts with a jump to the admin chain
 *   (`CNI-ADMIN` or `iptablesAdminChainName`, for the operator's own rules),
 *   then per container address `-d <ip> -m conntrack --ctstate
 *   RELATED,ESTABLISHED -j ACCEPT` and `-s <ip> -j ACCEPT`;
 * - with `ingressPolicy` same-bridge or isolated, `FORWARD` starts with a
 *   jump to `CNI-ISOLATION-STAGE-1`, which sends traffic leaving the bridge
 *   to `CNI-ISOLATION-STAGE-2`, where traffic into another policed bridge is
 *   dropped (isolated: traffic within the bridge too).
 *
 * One iptables-save and one iptables-restore per family of the container's
 * addresses. The address rules carry no owner (as the reference's), so
 * teardown needs the addresses (prevResult or the record, records.ts); the
 * chains and the isolation rules are shared and stay.
 * @module
 */

import { checkFailed } from "../../../lib/net/check.ts";
import {
  eachIptablesFamily,
  type NetfilterBackend,
  type Owner,
} from "../../../lib/netfilter/backend.ts";
import {
  comment,
  createChains,
  deleteRule,
  ensureRule,
  type Family,
  type RuleSpec,
  type SavedTable,
  saveTable,
  updateTable,
} from "../../../lib/netfilter/iptables.ts";
import { parseCIDR } from "../../../lib/cni/ipnet.ts";
import { collectRecords } from "./records.ts";
import { type FirewallSpec, hostCidr, ISOLATION_COMMENT, policyComment } from "./spec.ts";

/** The chain every container address rule lives in. */
export const FORWARD_CHAIN = "CNI-FORWARD";
const STAGE1 = "CNI-ISOLATION-STAGE-1";
const STAGE2 = "CNI-ISOLATION-STAGE-2";
const FAMILIES = [4, 6] as const;

const FORWARD_JUMP: RuleSpec = [...comment("CNI firewall plugin rules"), "-j", FORWARD_CHAIN];

function adminJump(admin: string): RuleSpec {
  return [...comment("CNI firewall plugin admin overrides"), "-j", admin];
}

/** The two rules of one container address. */
function addressRules(cidr: string): RuleSpec[] {
  return [
    ["-d", cidr, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
    ["-s", cidr, "-j", "ACCEPT"],
  ];
}

function cidrsOf(spec: FirewallSpec, family: Family): string[] {
  return spec.ips.filter((ip) => ip.ip.family === family).map(hostCidr);
}

/**
 * The restore lines that give `saved` the isolation chains for `bridge`
 * (what the reference inserts with -I lands first, so the drop of an
 * isolated bridge comes before its jump to stage 2).
 */
export function isolationPlan(saved: SavedTable, bridge: string, isolated: boolean): string[] {
  const policy = comment(policyComment(isolated));
  const common = comment(ISOLATION_COMMENT);
  const within: [string, RuleSpec, boolean][] = isolated
    ? [[STAGE1, ["-i", bridge, "-o", bridge, ...policy, "-j", "DROP"], true]]
    : [];
  const wanted: [string, RuleSpec, boolean][] = [
    ["FORWARD", [...common, "-j", STAGE1], true],
    [STAGE1, ["-i", bridge, "!", "-o", bridge, ...policy, "-j", STAGE2], true],
    ...within,
    [STAGE1, [...common, "-j", "RETURN"], false],
    [STAGE2, ["-o", bridge, ...common, "-j", "DROP"], true],
    [STAGE2, [...common, "-j", "RETURN"], false],
  ];
  return [
    ...createChains(saved, [STAGE1, STAGE2]),
    ...wanted.flatMap(([chain, rule, first]) => ensureRule(saved, chain, rule, first)),
  ];
}

/** The isolation chains for `isolation` in every family of `families`, with iptables. */
export async function setupIsolation(
  isolation: NonNullable<FirewallSpec["isolation"]>,
  families: Family[],
): Promise<void> {
  await Promise.all(
    families.map((family) =>
      updateTable(
        family,
        "filter",
        (saved) => isolationPlan(saved, isolation.bridge, isolation.isolated),
      )
    ),
  );
}

/** The families of `spec`'s addresses. */
export function familiesOf(spec: FirewallSpec): Family[] {
  return FAMILIES.filter((f) => spec.ips.some((ip) => ip.ip.family === f));
}

function teardownFamilies(cidrs: { 4: string[]; 6: string[] }): Promise<void> {
  return eachIptablesFamily(
    (family) =>
      updateTable(
        family,
        "filter",
        (saved) =>
          cidrs[family].flatMap(addressRules).filter((r) => saved.has(FORWARD_CHAIN, r)).map((r) =>
            deleteRule(FORWARD_CHAIN, r)
          ),
      ),
    FAMILIES.filter((f) => cidrs[f].length),
  );
}

/** The firewall through iptables, with `admin` as the admin chain and records under `dataDir`. */
export function firewallIptables(admin: string, dataDir: string): NetfilterBackend<FirewallSpec> {
  return {
    name: "iptables",

    async setup(_owner, spec) {
      await Promise.all(
        familiesOf(spec).map((family) =>
          updateTable(family, "filter", (saved) => {
            const lines = [
              ...createChains(saved, [FORWARD_CHAIN, admin]),
              ...ensureRule(saved, "FORWARD", FORWARD_JUMP, true),
              ...ensureRule(saved, FORWARD_CHAIN, adminJump(admin), true),
              ...cidrsOf(spec, family).flatMap(addressRules).flatMap((rule) =>
                ensureRule(saved, FORWARD_CHAIN, rule)
              ),
            ];
            // After CNI-FORWARD's jump, so that the isolation jump is inserted before it.
            if (spec.isolation) {
              lines.push(...isolationPlan(saved, spec.isolation.bridge, spec.isolation.isolated));
            }
            return lines;
          })
        ),
      );
    },

    async check(_owner, spec) {
      for (const family of familiesOf(spec)) {
        const saved = await saveTable(family, "filter");
        const missing = (chain: string, rule: RuleSpec) =>
          checkFailed(`expected ${chain} rule ${rule.join(" ")} not found`);
        for (const chain of [FORWARD_CHAIN, admin]) {
          if (!saved.hasChain(chain)) {
            checkFailed(`chain ${chain} not found in the filter table`);
          }
        }
        if (!saved.has("FORWARD", FORWARD_JUMP)) missing("FORWARD", FORWARD_JUMP);
        if (!saved.has(FORWARD_CHAIN, adminJump(admin))) {
          missing(FORWARD_CHAIN, adminJump(admin));
        }
        for (const rule of cidrsOf(spec, family).flatMap(addressRules)) {
          if (!saved.has(FORWARD_CHAIN, rule)) missing(FORWARD_CHAIN, rule);
        }
      }
    },

    async teardown(_owner, spec) {
      await teardownFamilies({
        4: cidrsOf(spec ?? { ips: [] }, 4),
        6: cidrsOf(spec ?? { ips: [] }, 6),
      });
    },

    async gc(network, valid) {
      await collectRecords(dataDir, network, valid, (_owner: Owner, ips) => {
        const nets = ips.flatMap((ip) => parseCIDR(ip) ?? []);
        return teardownFamilies({ 4: cidrsOf({ ips: nets }, 4), 6: cidrsOf({ ips: nets }, 6) });
      });
    },
  };
}
