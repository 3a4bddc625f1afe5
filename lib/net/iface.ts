/**
 * Configuring the container side of an attachment from a result, as the
 * reference's ConfigureIface does: addresses on the interface the result's
 * IPs point at, the link up, DAD settled for IPv6, then the routes (without
 * a gateway they take the first gateway of their family).
 * @module
 */

import { CniError, ErrorCode } from "../cni/errors.ts";
import { ipBatch, type IpCommand, type LinkInfo } from "./ip.ts";
import { formatIP, type IP, parseCIDR, parseIP } from "../cni/ipnet.ts";
import { withNetnsSync } from "./netns.ts";
import type { Result, Route } from "../cni/spec/schemas.ts";
import { ensureSysctls } from "./sysctl.ts";

const IFA_F_DADFAILED = 0x08;
const IFA_F_TENTATIVE = 0x40;

/** The result's IPs that belong to interface `ifname` (by their index). */
export function ipsOf(result: Result, ifname: string): NonNullable<Result["ips"]> {
  return (result.ips ?? []).filter((ip) => {
    if (ip.interface === undefined) return false;
    if (result.interfaces?.[ip.interface]?.name !== ifname) {
      throw new CniError(
        ErrorCode.internal,
        `failed to add IP addr ${ip.address} to "${ifname}": invalid interface index`,
      );
    }
    return true;
  });
}

/**
 * The `ip addr add` arguments for `cidr` on `dev`. IPv4 gets the broadcast
 * address computed, as netlink's AddrAdd does for the reference.
 */
export function addrCommand(cidr: string, dev: string): IpCommand {
  const net = parseCIDR(cidr);
  const broadcast = net?.ip.family === 4 && net.prefix < 31 ? ["broadcast", "+"] : [];
  return ["addr", "add", cidr, ...broadcast, "dev", dev];
}

/**
 * The `ip route` arguments for a result route on `dev`. `append`, because a
 * second attachment may route the same prefix (the reference adds an ECMP
 * next hop there).
 */
export function routeCommand(route: Route, dev: string, gw?: string): IpCommand {
  const via = route.gw ?? gw;
  return [
    "route",
    "append",
    route.dst,
    ...(via ? ["via", via] : []),
    "dev",
    dev,
    ...(route.priority !== undefined ? ["metric", String(route.priority)] : []),
    ...(route.table !== undefined ? ["table", String(route.table)] : []),
    ...(route.scope !== undefined ? ["scope", String(route.scope)] : []),
    ...(route.mtu !== undefined ? ["mtu", String(route.mtu)] : []),
    ...(route.advmss !== undefined ? ["advmss", String(route.advmss)] : []),
  ];
}

/**
 * Waits until no address of `ifname` (of `only`, when given) is tentative
 * (IPv6 DAD), reading if_inet6 inside the netns: no process per poll.
 * Once DAD is done the kernel has the address's local route too. Past the
 * timeout, addresses still tentative are an error only on a link that is
 * operationally up.
 * thread-self, because /proc/self/net follows the main thread's netns, not
 * this thread's.
 */
export async function settleAddresses(
  netns: string,
  ifname: string,
  timeoutMs = 5000,
  only?: readonly IP[],
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const wanted = only && new Set(only.map((ip) => ip.value));
  for (;;) {
    const flags = withNetnsSync(
      netns,
      () => Deno.readTextFileSync("/proc/thread-self/net/if_inet6"),
    )
      .split("\n").map((line) => line.trim().split(/\s+/))
      .filter((f) => f[5] === ifname && (!wanted || wanted.has(BigInt(`0x${f[0]}`))))
      .map((f) => parseInt(f[4]!, 16));
    if (flags.some((f) => f & IFA_F_DADFAILED)) {
      throw new CniError(
        ErrorCode.internal,
        `failed to settle addresses for "${ifname}": DAD failed`,
      );
    }
    if (!flags.some((f) => f & IFA_F_TENTATIVE)) return;
    if (Date.now() > deadline) {
      // DAD never runs on a link without carrier (a NIC without cable, a
      // veth whose peer is down): as in the reference, that is no failure.
      const [[link]] = await ipBatch([["link", "show", "dev", ifname]], { netns }) as [
        [LinkInfo],
      ];
      if (link.operstate !== "UP") return;
      throw new CniError(
        ErrorCode.internal,
        `failed to settle addresses for "${ifname}": still tentative`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Options for {@link configureInterface}. */
export interface ConfigureOptions {
  /** The link is still called this: it is renamed to `ifname` first, in the same batch. */
  renameFrom?: string;
  /** Commands after the rename, before the addresses (enslaving it to a bridge). */
  before?: IpCommand[];
  /** Commands after the routes, in the same batch (ptp rewrites the subnet routes there). */
  extra?: IpCommand[];
  /** Show the link at the end of the same batch, and return it. */
  show?: boolean;
}

/**
 * Configures `ifname` in `netns` from `result`: its addresses, up, its
 * routes; a result without IPs only brings it up. One `ip` process, two
 * when an IPv6 gateway makes the routes wait for DAD.
 */
export async function configureInterface(
  netns: string,
  ifname: string,
  result: Result,
  options: ConfigureOptions = {},
): Promise<LinkInfo | undefined> {
  const ips = ipsOf(result, ifname);
  const gateways: Partial<Record<4 | 6, string>> = {};
  const hasV6 = ips.some((ip) => parseCIDR(ip.address)?.ip.family === 6);
  if (hasV6) {
    // Before the rename, the keys are under the link's present name.
    const now = options.renameFrom ?? ifname;
    ensureSysctls({
      "net/ipv6/conf/lo/disable_ipv6": "0",
      [`net/ipv6/conf/${now}/disable_ipv6`]: "0",
      [`net/ipv6/conf/${now}/keep_addr_on_down`]: "1",
    }, netns);
  }
  const first: IpCommand[] = [
    ...(options.renameFrom ? [["link", "set", options.renameFrom, "name", ifname]] : []),
    ...(options.before ?? []),
    ...ips.map((ip) => addrCommand(ip.address, ifname)),
    ["link", "set", ifname, "up"],
  ];
  for (const ip of ips) {
    const gw = ip.gateway ? parseIP(ip.gateway) : null;
    if (gw && !gateways[gw.family]) gateways[gw.family] = formatIP(gw);
  }
  const routeCommands = (result.routes ?? []).map((route) =>
    routeCommand(route, ifname, gateways[parseCIDR(route.dst)!.ip.family])
  );
  const last: IpCommand[] = [
    ...routeCommands,
    ...(options.extra ?? []),
    ...(options.show ? [["addr", "show", "dev", ifname]] : []),
  ];
  let outputs: unknown[];
  if (gateways[6]) {
    // Routes with an IPv6 source must wait for DAD on that address.
    await ipBatch(first, { netns });
    await settleAddresses(netns, ifname);
    outputs = await ipBatch(last, { netns });
  } else {
    outputs = await ipBatch([...first, ...last], { netns });
  }
  return options.show ? (outputs.at(-1) as LinkInfo[] | undefined)?.[0] : undefined;
}
