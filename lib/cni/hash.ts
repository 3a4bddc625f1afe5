/**
 * Hex encoding and SHA-512 name hashes: the reference plugins name kernel
 * objects after hashes (see lib/netfilter/names.ts), the result cache and
 * random link names use the hex.
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

/** Random bytes as lower-case hex. */
export function randomHex(bytes: number): string {
  return toHex(crypto.getRandomValues(new Uint8Array(bytes)));
}
