/**
 * sysctls under /proc/sys, read and written synchronously so that inside a
 * namespace they hit that namespace (see lib/netns.ts for why async would
 * not). Requires root.
 * @module
 */

import { CniError, ErrorCode } from "../cni/errors.ts";
import { withNetnsSync } from "./netns.ts";

function inNetns<T>(netns: string | undefined, fn: () => T): T {
  return netns ? withNetnsSync(netns, fn) : fn();
}

/**
 * Writes each `key → value` whose current value differs, in one netns entry;
 * `onError` decides what a failed key means.
 */
function writeSysctls(
  values: Record<string, string>,
  netns: string | undefined,
  onError: (key: string, value: string, error: Error) => void,
): void {
  inNetns(netns, () => {
    for (const [key, value] of Object.entries(values)) {
      const path = `/proc/sys/${key}`;
      try {
        if (Deno.readTextFileSync(path).trim() !== value) Deno.writeTextFileSync(path, value);
      } catch (e) {
        onError(key, value, e as Error);
      }
    }
  });
}

/** Writes each `key → value` whose current value differs; a failure is an I/O error. */
export function ensureSysctls(values: Record<string, string>, netns?: string): void {
  writeSysctls(values, netns, (key, value, error) => {
    throw new CniError(
      ErrorCode.ioFailure,
      `failed to set sysctl ${key}=${value}: ${error.message}`,
    );
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
  writeSysctls(values, netns, () => {});
}
