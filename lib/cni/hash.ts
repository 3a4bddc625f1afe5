/**
 * The name hashes the reference plugins use for kernel objects (chains,
 * comments), so that cnikit and the reference find each other's rules.
 * @module
 */

/** Bytes as lower-case hex, two digits each, joined by `separator`. */
export function toHex(bytes: ArrayLike<number>, separator = ""): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(separator);
}

/** Lower-case hex of SHA-512 of `text`. */
export async function sha512Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-512", new TextEncoder().encode(text));
  return toHex(new Uint8Array(digest));
}

/** `prefix` + hex SHA-512 of `text`, cut to `length` characters. */
export async function hashedName(prefix: string, text: string, length: number): Promise<string> {
  return (prefix + await sha512Hex(text)).slice(0, length);
}

/** The reference's per-attachment chain name: `CNI-` + hash(network + containerID), 28 chars. */
export function chainName(network: string, containerId: string, prefix = ""): Promise<string> {
  return hashedName(`CNI-${prefix}`, network + containerId, 28);
}

/** The reference's iptables rule comment: `name: "<net>" id: "<cid>"`. */
export function chainComment(network: string, containerId: string): string {
  return `name: ${JSON.stringify(network)} id: ${JSON.stringify(containerId)}`;
}

/** Random bytes as lower-case hex. */
export function randomHex(bytes: number): string {
  return toHex(crypto.getRandomValues(new Uint8Array(bytes)));
}
