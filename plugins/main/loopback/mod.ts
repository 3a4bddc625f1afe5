/**
 * loopback: brings `lo` up in the container (ADD) and down again (DEL).
 * CNI_IFNAME is ignored; the interface is always `lo`.
 * @module
 */

import { CniError, ErrorCode } from "../../../lib/cni/errors.ts";
import { ipBatch, type LinkInfo } from "../../../lib/net/ip.ts";
import { netnsExists } from "../../../lib/net/netns.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";

async function add(args: CmdArgs): Promise<Result> {
  const [links] = await ipBatch([["link", "set", "lo", "up"], ["addr", "show", "dev", "lo"]], {
    netns: args.netns,
  }) as [LinkInfo[]];
  const addrs = links?.[0]?.addr_info ?? [];
  const foreign = addrs.find((a) => a.scope !== "host");
  if (foreign) {
    throw new CniError(
      ErrorCode.internal,
      `loopback interface found with non-loopback address "${foreign.local}"`,
    );
  }
  if (args.prevResult) return args.prevResult;
  const first = (family: string) => addrs.find((a) => a.family === family);
  const ips = [first("inet"), first("inet6")].filter((a) => a !== undefined).map((a) => ({
    address: `${a.local}/${a.prefixlen}`,
    interface: 0,
  }));
  return {
    cniVersion: "1.1.0",
    interfaces: [{ name: "lo", mac: "00:00:00:00:00:00", sandbox: args.netns }],
    ips,
  };
}

async function del(args: CmdArgs): Promise<void> {
  if (!args.netns || !netnsExists(args.netns)) return;
  await ipBatch([["link", "set", "lo", "down"]], { netns: args.netns });
}

async function check(args: CmdArgs): Promise<void> {
  const [links] = await ipBatch([["link", "show", "dev", "lo"]], { netns: args.netns }) as [
    LinkInfo[],
  ];
  if (!links?.[0]?.flags.includes("UP")) {
    throw new CniError(ErrorCode.internal, "loopback interface is down");
  }
}

/** The loopback plugin. */
export const loopback: Plugin = { name: "loopback", add, del, check };
