/**
 * 127.0.0.1:hostPort: traffic from the host's loopback is DNATed to the
 * container, but the kernel drops packets with a 127/8 source on any other
 * interface unless that interface has `route_localnet` set. The reference
 * sets it on the host interface that routes to the container.
 * @module
 */

import { CniError, ErrorCode } from "../../../lib/cni/errors.ts";
import type { IP } from "../../../lib/cni/ipnet.ts";
import { ensureSysctls } from "../../../lib/net/sysctl.ts";

interface Route {
  dev: string;
  dest: bigint;
  mask: bigint;
  metric: number;
}

/** `0101A8C0` (the kernel's u32 in host order, little-endian here) as 192.168.1.1. */
function fromProcHex(hex: string): bigint {
  const bytes = hex.match(/../g)!.reverse().join("");
  return BigInt(`0x${bytes}`);
}

/**
 * The interface of the main-table IPv4 route to `ip`: the longest prefix,
 * then the lowest metric, read from /proc/net/route (what `ip route get`
 * answers without policy rules, and without starting a process).
 */
export function routeDevice(ip: IP): string | undefined {
  const lines = Deno.readTextFileSync("/proc/net/route").split("\n").slice(1);
  const routes: Route[] = lines.flatMap((line) => {
    const f = line.trim().split(/\s+/);
    if (f.length < 8 || !(parseInt(f[3]!, 16) & 1)) return [];
    return [{
      dev: f[0]!,
      dest: fromProcHex(f[1]!),
      mask: fromProcHex(f[7]!),
      metric: Number(f[6]),
    }];
  });
  const matching = routes.filter((r) => (ip.value & r.mask) === r.dest);
  matching.sort((a, b) => (a.mask === b.mask ? a.metric - b.metric : a.mask > b.mask ? -1 : 1));
  return matching[0]?.dev;
}

/** Sets `route_localnet` on the host interface that routes to the container address `ip`. */
export function enableLocalnetRouting(ip: IP): void {
  const dev = routeDevice(ip);
  if (!dev) return;
  try {
    ensureSysctls({ [`net/ipv4/conf/${dev}/route_localnet`]: "1" });
  } catch (e) {
    throw new CniError(
      ErrorCode.ioFailure,
      `unable to enable route_localnet: ${(e as Error).message}`,
    );
  }
}
