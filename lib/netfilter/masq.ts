/**
 * IP masquerade for an attachment, with the reference's kernel objects so
 * that cnikit and the reference plugins clean up each other's rules:
 *
 * - iptables: nat chain `CNI-<hash(net+cid)>` holding `-d <subnet> ACCEPT`
 *   and `! -d <multicast> MASQUERADE`, jumped to from POSTROUTING for the
 *   container's address, every rule commented `name: "<net>" id: "<cid>"`.
 *   Written with one `iptables-restore --noflush` per family after one
 *   `iptables-save` to keep ADD idempotent.
 * - nftables: table `inet cni_plugins_masquerade`, chain `masq_checks` with
 *   one rule per address commented `<hash(net)>-<hash(if:cid)>, net: …`,
 *   in one `nft -f` transaction.
 *
 * Teardown needs no addresses: it finds the rules by chain name and comment,
 * so it works when the netns is already gone (the reference leaks there).
 * @module
 */

import { CniError, ErrorCode } from "../cni/errors.ts";
import { run, toolPath } from "../net/exec.ts";
import { chainComment, chainName, hashedName } from "../cni/hash.ts";
import { formatCIDR, formatIP, type IPNet, networkOf, parseCIDR } from "../cni/ipnet.ts";
import type { GCAttachment } from "../cni/spec/schemas.ts";

/** The netfilter front end used for masquerade rules. */
export type MasqBackend = "iptables" | "nftables";

/** Who the rules are for. */
export interface MasqOwner {
  network: string;
  containerId: string;
  ifname: string;
}

const NFT_TABLE = "cni_plugins_masquerade";
const NFT_CHAIN = "masq_checks";
const NFT_TABLE_COMMENT = "Masquerading for plugins from github.com/containernetworking/plugins";
const NFT_CHAIN_COMMENT =
  "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet";
const COMMENT_MAX = 128;

function available(tool: string): boolean {
  try {
    toolPath(tool);
    return true;
  } catch {
    return false;
  }
}

/** The backend the reference picks when the config names none. */
export function defaultBackend(): MasqBackend {
  return !available("iptables") && available("nft") ? "nftables" : "iptables";
}

/** Validates an `ipMasqBackend` value. */
export function parseBackend(value: unknown): MasqBackend | undefined {
  if (value === undefined || value === null) return undefined;
  if (value === "iptables" || value === "nftables") return value;
  throw new CniError(
    ErrorCode.invalidNetworkConfig,
    `unknown ipmasq backend ${JSON.stringify(value)}`,
  );
}

// ---- iptables ---------------------------------------------------------------

function iptablesTools(family: 4 | 6): { save: string; restore: string } {
  return family === 4
    ? { save: "iptables-save", restore: "iptables-restore" }
    : { save: "ip6tables-save", restore: "ip6tables-restore" };
}

function quoteComment(comment: string): string {
  return `"${comment.replace(/["\\]/g, "\\$&")}"`;
}

async function natRules(family: 4 | 6): Promise<string[]> {
  const { stdout } = await run(iptablesTools(family).save, ["-t", "nat"]);
  return stdout.split("\n");
}

async function restore(family: 4 | 6, lines: string[]): Promise<void> {
  if (lines.length === 0) return;
  await run(iptablesTools(family).restore, ["--noflush", "-w"], {
    stdin: ["*nat", ...lines, "COMMIT", ""].join("\n"),
  });
}

async function setupIptables(owner: MasqOwner, ips: IPNet[]): Promise<void> {
  const chain = await chainName(owner.network, owner.containerId);
  const comment = `-m comment --comment ${
    quoteComment(chainComment(owner.network, owner.containerId))
  }`;
  for (const family of [4, 6] as const) {
    const mine = ips.filter((ip) => ip.ip.family === family);
    if (mine.length === 0) continue;
    const saved = await natRules(family);
    const has = (rule: string) => saved.includes(rule);
    const lines: string[] = [];
    if (!saved.includes(`:${chain} - [0:0]`)) lines.push(`:${chain} - [0:0]`);
    const multicast = family === 4 ? "224.0.0.0/4" : "ff00::/8";
    const hostBits = family === 4 ? 32 : 128;
    for (const ip of mine) {
      // The forms iptables-save prints, so a second ADD adds nothing twice.
      for (
        const rule of [
          `-A ${chain} -d ${formatCIDR(networkOf(ip))} ${comment} -j ACCEPT`,
          `-A ${chain} ! -d ${multicast} ${comment} -j MASQUERADE`,
          `-A POSTROUTING -s ${formatIP(ip.ip)}/${hostBits} ${comment} -j ${chain}`,
        ]
      ) {
        if (!has(rule) && !lines.includes(rule)) lines.push(rule);
      }
    }
    await restore(family, lines);
  }
}

async function teardownIptables(chains: Set<string>, family: 4 | 6): Promise<void> {
  const saved = await natRules(family);
  const lines: string[] = [];
  for (const line of saved) {
    const jump = line.match(/^-A (\S+) .*-j (CNI-\S+)$/);
    if (jump && chains.has(jump[2]!) && !chains.has(jump[1]!)) {
      lines.push(line.replace(/^-A/, "-D"));
    }
  }
  for (const chain of chains) {
    if (saved.some((l) => l.startsWith(`:${chain} `))) {
      lines.push(`-F ${chain}`, `-X ${chain}`);
    }
  }
  await restore(family, lines);
}

/** The per-attachment chains of `network` found in iptables-save output, keyed by container ID. */
function chainsByContainer(saved: string[], network: string): Map<string, string> {
  const found = new Map<string, string>();
  const pattern = new RegExp(
    `^-A (CNI-[0-9a-f]{24}) .*--comment "name: \\\\"${
      network.replace(/[.]/g, "\\.")
    }\\\\" id: \\\\"([^"\\\\]+)\\\\""`,
  );
  for (const line of saved) {
    const m = line.match(pattern);
    if (m) found.set(m[2]!, m[1]!);
  }
  return found;
}

// ---- nftables ---------------------------------------------------------------

async function networkHash(network: string): Promise<string> {
  return await hashedName("", network, 16);
}

async function instanceHash(owner: MasqOwner): Promise<string> {
  return `${await networkHash(owner.network)}-${await hashedName(
    "",
    `${owner.ifname}:${owner.containerId}`,
    16,
  )}`;
}

async function instanceComment(owner: MasqOwner): Promise<string> {
  const clean = (s: string) => s.replaceAll('"', "");
  return `${await instanceHash(owner)}, net: ${clean(owner.network)}, if: ${
    clean(owner.ifname)
  }, id: ${clean(owner.containerId)}`.slice(0, COMMENT_MAX);
}

interface NftRule {
  handle: number;
  comment?: string;
}

async function nftRules(): Promise<NftRule[]> {
  const { code, stdout } = await run("nft", ["-j", "list", "chain", "inet", NFT_TABLE, NFT_CHAIN], {
    allowFailure: true,
  });
  if (code !== 0) return [];
  const items = (JSON.parse(stdout) as { nftables: { rule?: NftRule }[] }).nftables;
  return items.flatMap((item) => (item.rule ? [item.rule] : []));
}

async function nft(lines: string[]): Promise<void> {
  if (lines.length) await run("nft", ["-f", "-"], { stdin: lines.join("\n") + "\n" });
}

function deleteRule(rule: NftRule): string {
  return `delete rule inet ${NFT_TABLE} ${NFT_CHAIN} handle ${rule.handle}`;
}

async function setupNftables(owner: MasqOwner, ips: IPNet[]): Promise<void> {
  const prefix = await instanceHash(owner);
  const comment = await instanceComment(owner);
  const stale = (await nftRules()).filter((r) => r.comment?.startsWith(prefix));
  const t = `inet ${NFT_TABLE}`;
  // The comments are the reference's: they only take effect when this
  // creates the objects, so either side may come first.
  await nft([
    `add table ${t} { comment ${JSON.stringify(NFT_TABLE_COMMENT)} ; }`,
    `add chain ${t} ${NFT_CHAIN} { comment ${JSON.stringify(NFT_CHAIN_COMMENT)} ; }`,
    `add chain ${t} postrouting { type nat hook postrouting priority srcnat ; }`,
    `flush chain ${t} postrouting`,
    `add rule ${t} postrouting ip daddr == 224.0.0.0/4 return`,
    `add rule ${t} postrouting ip6 daddr == ff00::/8 return`,
    `add rule ${t} postrouting goto ${NFT_CHAIN}`,
    ...stale.map(deleteRule),
    ...ips.map((ip) => {
      const family = ip.ip.family === 4 ? "ip" : "ip6";
      return `add rule ${t} ${NFT_CHAIN} ${family} saddr == ${formatIP(ip.ip)} ${family} daddr != ${
        formatCIDR(networkOf(ip))
      } masquerade comment ${JSON.stringify(comment)}`;
    }),
  ]);
}

// ---- the API ----------------------------------------------------------------

/** Installs masquerade for `ips` (addresses with their subnet prefix). Requires root. */
export async function setupMasq(
  owner: MasqOwner,
  ips: IPNet[],
  backend?: MasqBackend,
): Promise<void> {
  if ((backend ?? defaultBackend()) === "iptables") await setupIptables(owner, ips);
  else await setupNftables(owner, ips);
}

async function collect(tasks: [string, Promise<void>][]): Promise<void> {
  const errors: string[] = [];
  for (const [tool, task] of tasks) {
    await task.catch((e) => {
      if (available(tool)) errors.push((e as Error).message);
    });
  }
  if (errors.length) throw new CniError(ErrorCode.ioFailure, errors.join("\n"));
}

/** Removes the attachment's masquerade rules from both backends (no addresses needed). */
export async function teardownMasq(owner: MasqOwner): Promise<void> {
  const chains = new Set([await chainName(owner.network, owner.containerId)]);
  const prefix = await instanceHash(owner);
  await collect([
    ["iptables-save", teardownIptables(chains, 4)],
    ["ip6tables-save", teardownIptables(chains, 6)],
    [
      "nft",
      nftRules().then((rules) =>
        nft(rules.filter((r) => r.comment?.startsWith(prefix)).map(deleteRule))
      ),
    ],
  ]);
}

/** Removes masquerade rules of `network` whose attachment is not in `valid`. */
export async function gcMasq(network: string, valid: GCAttachment[]): Promise<void> {
  const validIds = new Set(valid.map((a) => a.containerID));
  const validComments = new Set(
    await Promise.all(
      valid.map((a) => instanceComment({ network, containerId: a.containerID, ifname: a.ifname })),
    ),
  );
  const netPrefix = await networkHash(network);
  const iptablesGc = async (family: 4 | 6) => {
    const stale = [...chainsByContainer(await natRules(family), network)]
      .filter(([id]) => !validIds.has(id)).map(([, chain]) => chain);
    if (stale.length) await teardownIptables(new Set(stale), family);
  };
  await collect([
    ["iptables-save", iptablesGc(4)],
    ["ip6tables-save", iptablesGc(6)],
    [
      "nft",
      nftRules().then((rules) =>
        nft(
          rules.filter((r) => r.comment?.startsWith(netPrefix) && !validComments.has(r.comment))
            .map(deleteRule),
        )
      ),
    ],
  ]);
}

// ---- node-wide masquerade -----------------------------------------------------

/**
 * One masquerade rule set for a whole node (the node agent's): traffic from
 * `source` (the node's pod subnet) to anywhere but `exclude` (the cluster
 * CIDR) and multicast leaves with the node's address. Per-attachment rules
 * ({@link setupMasq}) cannot do this: they exempt only the attachment's own
 * subnet, so pod-to-pod traffic between nodes would be masqueraded too.
 */
export interface NodeMasq {
  /** The iptables chain (nat table) or the nftables table (`ip` family) that holds the rules. */
  name: string;
  source: IPNet;
  exclude: IPNet[];
  /** Put on every rule, so a reader of the ruleset knows whose they are. */
  comment: string;
}

function nodeMasqIptables(spec: NodeMasq, saved: string[]): string[] {
  const comment = `-m comment --comment ${quoteComment(spec.comment)}`;
  const jump = `-A POSTROUTING -s ${formatCIDR(networkOf(spec.source))} ${comment} -j ${spec.name}`;
  // A jump for an earlier subnet of the node goes; the chain is rewritten
  // whole (declaring it in a --noflush restore flushes it).
  const lines = saved.filter((l) =>
    l.startsWith("-A POSTROUTING ") && l.endsWith(` -j ${spec.name}`)
  )
    .filter((l) => l !== jump).map((l) => l.replace(/^-A/, "-D"));
  lines.push(`:${spec.name} - [0:0]`);
  for (const net of [...spec.exclude.map(networkOf), parseCIDR("224.0.0.0/4")!]) {
    lines.push(`-A ${spec.name} -d ${formatCIDR(net)} ${comment} -j RETURN`);
  }
  lines.push(`-A ${spec.name} ${comment} -j MASQUERADE`);
  if (!saved.includes(jump)) lines.push(jump);
  return lines;
}

/** Installs or rewrites a node-wide masquerade rule set (IPv4), atomically. Requires root. */
export async function setupNodeMasq(spec: NodeMasq, backend?: MasqBackend): Promise<void> {
  if ((backend ?? defaultBackend()) === "iptables") {
    await restore(4, nodeMasqIptables(spec, await natRules(4)));
    return;
  }
  const t = `ip ${spec.name}`;
  const exempt = [...spec.exclude.map(networkOf), parseCIDR("224.0.0.0/4")!].map(formatCIDR);
  await nft([
    `add table ${t}`,
    `delete table ${t}`,
    `add table ${t} { comment ${JSON.stringify(spec.comment)} ; }`,
    `add chain ${t} postrouting { type nat hook postrouting priority srcnat ; }`,
    `add rule ${t} postrouting ip saddr ${formatCIDR(networkOf(spec.source))} ip daddr != { ${
      exempt.join(", ")
    } } masquerade comment ${JSON.stringify(spec.comment)}`,
  ]);
}

/** Removes a node-wide masquerade rule set from both backends; absent is fine. */
export async function teardownNodeMasq(name: string): Promise<void> {
  const iptables = async () => {
    const saved = await natRules(4);
    const lines = saved.filter((l) => l.startsWith("-A POSTROUTING ") && l.endsWith(` -j ${name}`))
      .map((l) => l.replace(/^-A/, "-D"));
    if (saved.some((l) => l.startsWith(`:${name} `))) lines.push(`-F ${name}`, `-X ${name}`);
    await restore(4, lines);
  };
  await collect([
    ["iptables-save", iptables()],
    ["nft", nft([`add table ip ${name}`, `delete table ip ${name}`])],
  ]);
}
