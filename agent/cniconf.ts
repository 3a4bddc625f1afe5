/**
 * The node's CNI network configuration list, kind-style: ptp with
 * host-local on the node's subnet (default route through the node), then
 * portmap. ptp's own masquerade stays off: it exempts only the node's
 * subnet, so it would masquerade pod-to-pod traffic between nodes; the agent
 * masquerades at node level instead, for traffic leaving the cluster CIDR.
 * @module
 */

import { formatCIDR, type IPNet } from "../lib/cni/ipnet.ts";

/** What the list is made of. */
export interface ListParams {
  networkName: string;
  subnet: IPNet;
  /** The pods' MTU (the VXLAN overhead taken off with that backend). */
  mtu: number;
  /** host-local's store. */
  ipamDataDir: string;
}

/** The list as an object, ready for JSON. */
export function renderList(p: ListParams): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name: p.networkName,
    plugins: [
      {
        type: "ptp",
        ipMasq: false,
        mtu: p.mtu,
        ipam: {
          type: "host-local",
          dataDir: p.ipamDataDir,
          ranges: [[{ subnet: formatCIDR(p.subnet) }]],
          routes: [{ dst: "0.0.0.0/0" }],
        },
      },
      { type: "portmap", capabilities: { portMappings: true } },
    ],
  };
}

/**
 * Writes `text` to `path` so that a reader sees the old file or the new
 * one, never a part: a temporary file beside it (a dot name with no
 * .conf/.conflist/.json ending, which runtimes do not load), then a rename.
 * Returns false when the file already held exactly `text`.
 */
export async function writeFileAtomically(
  path: string,
  text: string,
  mode = 0o644,
): Promise<boolean> {
  const current = await Deno.readTextFile(path).catch(() => undefined);
  if (current === text) return false;
  const slash = path.lastIndexOf("/");
  const dir = slash < 0 ? "." : path.slice(0, slash) || "/";
  await Deno.mkdir(dir, { recursive: true });
  const temp = `${dir}/.${path.slice(slash + 1)}.tmp-${Deno.pid}`;
  try {
    const file = await Deno.open(temp, { write: true, create: true, truncate: true, mode });
    try {
      let rest = new TextEncoder().encode(text);
      while (rest.length) rest = rest.subarray(await file.write(rest));
      await file.sync();
    } finally {
      file.close();
    }
    await Deno.rename(temp, path);
  } catch (e) {
    await Deno.remove(temp).catch(() => {});
    throw e;
  }
  return true;
}

/** Writes the list to `path` atomically; false when it was already so. */
export function writeList(path: string, p: ListParams): Promise<boolean> {
  return writeFileAtomically(path, JSON.stringify(renderList(p), null, 2) + "\n");
}
