/**
 * sysctls under /proc/sys, read and written synchronously so that inside a
 * namespace they hit that namespace (see lib/netns.ts for why async would
 * not). Requires root.
 * @module
 */

import { CniError, ErrorCode } from "./errors.ts";
import { withNetnsSync } from "./netns.ts";

function inNetns<T>(netns: string | undefined, fn: () => T): T {
  return netns ? withNetnsSync(netns, fn) : fn();
}

/** Writes each `key → value` whose current value differs, in one netns entry. */
export function ensureSysctls(values: Record<string, string>, netns?: string): void {
  inNetns(netns, () => {
    for (const [key, value] of Object.entries(values)) {
      const path = `/proc/sys/${key}`;
      try {
        if (Deno.readTextFileSync(path).trim() === value) continue;
        Deno.writeTextFileSync(path, value);
      } catch (e) {
        throw new CniError(
          ErrorCode.ioFailure,
          `failed to set sysctl ${key}=${value}: ${(e as Error).message}`,
        );
      }
    }
  });
}

/** Enables forwarding for the families that have addresses ("4", "6"). */
export function enableForwarding(families: Iterable<4 | 6>): void {
  const values: Record<string, string> = {};
  for (const family of families) {
    values[family === 4 ? "net/ipv4/ip_forward" : "net/ipv6/conf/all/forwarding"] = "1";
  }
  ensureSysctls(values);
}

/**
 * Writes each `key → value` that differs and ignores the ones that fail (a
 * key that does not exist with IPv6 disabled, say), for tuning that the
 * reference applies on a best-effort basis.
 */
export function trySysctls(values: Record<string, string>, netns?: string): void {
  inNetns(netns, () => {
    for (const [key, value] of Object.entries(values)) {
      const path = `/proc/sys/${key}`;
      try {
        if (Deno.readTextFileSync(path).trim() !== value) Deno.writeTextFileSync(path, value);
      } catch { /* best effort */ }
    }
  });
}
