/**
 * The names and comments the reference plugins give their netfilter
 * objects, computed exactly as they compute them, so that cnikit and the
 * reference find (and remove) each other's rules on the same node.
 * @module
 */

import { hashedName } from "../cni/hash.ts";
import type { GCAttachment } from "../cni/spec/schemas.ts";

/**
 * The reference's per-attachment iptables chain: `CNI-` + `prefix` +
 * hex SHA-512 of network name + container ID, cut to 28 characters
 * (`CNI-<24 hex>` for masquerade, `CNI-DN-<21 hex>` for portmap).
 */
export function chainName(network: string, containerId: string, prefix = ""): Promise<string> {
  return hashedName(`CNI-${prefix}`, network + containerId, 28);
}

/** The reference's iptables rule comment for an attachment: `name: "<net>" id: "<cid>"`. */
export function chainComment(network: string, containerId: string): string {
  return `name: ${JSON.stringify(network)} id: ${JSON.stringify(containerId)}`;
}

/** The nftables masquerade table (family `inet`) and its chains. */
export const MASQ_NFT = {
  table: "cni_plugins_masquerade",
  chain: "masq_checks",
  tableComment: "Masquerading for plugins from github.com/containernetworking/plugins",
  chainComment:
    "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet",
} as const;

/** nftables' limit on a rule comment, in bytes, which the reference cuts to. */
export const NFT_COMMENT_MAX = 128;

/**
 * The first 16 hex digits of SHA-512 of the network name: the network tag
 * that starts the comment of the reference's nftables masquerade rules
 * (cnikit's nftables firewall comments its rules the same way).
 */
export function networkHash(network: string): Promise<string> {
  return hashedName("", network, 16);
}

/** `<hash16(net)>-<hash16(ifname:cid)>`: the prefix of one attachment's rule comments. */
export async function instanceHash(
  network: string,
  ifname: string,
  containerId: string,
): Promise<string> {
  return `${await networkHash(network)}-${await hashedName(
    "",
    `${ifname}:${containerId}`,
    16,
  )}`;
}

/**
 * The reference's nftables masquerade comment (and cnikit's firewall's):
 * the instance hash, then the names without double quotes (the reference's
 * text transactions cannot carry them), cut to {@link NFT_COMMENT_MAX}.
 */
export async function instanceComment(
  network: string,
  ifname: string,
  containerId: string,
): Promise<string> {
  const clean = (s: string) => s.replaceAll('"', "");
  return `${await instanceHash(network, ifname, containerId)}, net: ${clean(network)}, if: ${
    clean(ifname)
  }, id: ${clean(containerId)}`.slice(0, NFT_COMMENT_MAX);
}

/** A rule that may carry a comment (an nftables rule as `nft -j list` prints it). */
interface Commented {
  comment?: string;
}

/**
 * Those of `rules` that belong to one attachment: their comment starts with
 * its {@link instanceHash}, whatever follows (the reference's or cnikit's).
 */
export async function attachmentRules<R extends Commented>(
  rules: readonly R[],
  network: string,
  ifname: string,
  containerId: string,
): Promise<R[]> {
  const prefix = await instanceHash(network, ifname, containerId);
  return rules.filter((r) => r.comment?.startsWith(prefix));
}

/**
 * Those of `rules` that belong to an attachment of `network` that is not in
 * `valid` (GC): commented with the network's hash and another instance's.
 */
export async function staleAttachmentRules<R extends Commented>(
  rules: readonly R[],
  network: string,
  valid: readonly GCAttachment[],
): Promise<R[]> {
  const keep = new Set(
    await Promise.all(valid.map((a) => instanceHash(network, a.ifname, a.containerID))),
  );
  const tag = `${await networkHash(network)}-`;
  return rules.filter((r) => {
    const hash = r.comment?.startsWith(tag) ? r.comment.slice(0, tag.length + 16) : undefined;
    return hash !== undefined && !keep.has(hash);
  });
}
