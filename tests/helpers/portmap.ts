/**
 * Fixtures for the portmap tests: configs chained after a ptp result, the
 * plugin run inside a fake host, and the port-mapping state of the fake
 * host's netfilter in both backends, as short comparable strings.
 * @module
 */

import { hostRunner, type PluginRun } from "./applet.ts";
import type { TestNetns } from "./netns.ts";

/** Runs `portmap` (cnikit's, or the one in `bin`) inside `host`. */
export const portmap = hostRunner("portmap");

/** One `runtimeConfig.portMappings` entry. */
export interface Mapping {
  hostPort: number;
  containerPort: number;
  protocol: string;
  hostIP?: string;
}

/** A portmap config named `network`, chained after `prev` (an ADD's output), with `mappings`. */
export function portmapConf(
  version: string,
  prev: PluginRun | Record<string, unknown> | undefined,
  mappings: Mapping[] | undefined,
  extra: Record<string, unknown> = {},
  network = "ptpnet",
): Record<string, unknown> {
  const prevResult = prev && "json" in prev ? prev.json : prev;
  return {
    cniVersion: version,
    name: network,
    type: "portmap",
    ...(mappings ? { runtimeConfig: { portMappings: mappings } } : {}),
    ...(prevResult ? { prevResult } : {}),
    ...extra,
  };
}

/** The nat tables of both families as iptables-save prints them, comments and counters left out. */
export async function natTables(ns: TestNetns): Promise<{ 4: string[]; 6: string[] }> {
  const read = async (tool: string) =>
    (await ns.exec(tool, ["-t", "nat"])).split("\n").filter((l) =>
      l && !l.startsWith("#") && l !== "COMMIT" && l !== "*nat"
    ).map((l) => l.replace(/ \[\d+:\d+\]$/, ""));
  return { 4: await read("iptables-save"), 6: await read("ip6tables-save") };
}

/** The nat lines (both families, `4:`/`6:` prefixed) that mention a CNI- chain. */
export async function cniNat(ns: TestNetns): Promise<string[]> {
  const t = await natTables(ns);
  return ([4, 6] as const).flatMap((f) =>
    t[f].filter((l) => l.includes("CNI-")).map((l) => `${f}: ${l}`)
  );
}

/** The per-attachment iptables objects: CNI-DN- chains and every line naming one. */
export async function dnatChains(ns: TestNetns): Promise<string[]> {
  return (await cniNat(ns)).filter((l) => /CNI-(DN|SN)-/.test(l));
}

interface NftItem {
  chain?: { family: string; name: string };
  rule?: { family: string; chain: string; comment?: string; expr: unknown[] };
}

/**
 * The rules of the nftables `cni_hostport` tables as `family chain: <expr
 * json> # comment`, both families.
 */
export async function nftHostportRules(ns: TestNetns): Promise<string[]> {
  const out: string[] = [];
  for (const family of ["ip", "ip6"]) {
    const text = await ns.exec("nft", ["-j", "list", "table", family, "cni_hostport"]).catch(() =>
      ""
    );
    if (!text) continue;
    for (const i of (JSON.parse(text) as { nftables: NftItem[] }).nftables) {
      if (i.rule) {
        out.push(
          `${family} ${i.rule.chain}: ${JSON.stringify(i.rule.expr)} # ${i.rule.comment ?? ""}`,
        );
      }
    }
  }
  return out;
}

/** The nftables rules of one container (commented with its ID). */
export async function nftAttachmentRules(ns: TestNetns, containerId: string): Promise<string[]> {
  return (await nftHostportRules(ns)).filter((r) => r.endsWith(` # ${containerId}`));
}

/** Everything per-attachment portmap keeps in either backend; empty once every DEL ran. */
export async function portmapLeftovers(ns: TestNetns): Promise<string[]> {
  return [
    ...await dnatChains(ns),
    ...(await nftHostportRules(ns)).filter((r) => !/ # $/.test(r)),
  ];
}
