/**
 * Links: veth pairs between the host and a container, lookups and deletion.
 * A pair is made by one `ip -batch` in the host namespace, with the container
 * end created straight inside the container's namespace and both MAC
 * addresses chosen here, so no second process is needed to learn them.
 * @module
 */

import { CniError, ErrorCode } from "../cni/errors.ts";
import { randomHex, toHex } from "../cni/hash.ts";
import { ipBatch, type IpCommand, type LinkInfo } from "./ip.ts";
import { run } from "./exec.ts";
import { netnsExists } from "./netns.ts";
import type { Result } from "../cni/spec/schemas.ts";
import { trySysctls } from "./sysctl.ts";

/** A random locally administered unicast MAC, as the kernel makes them. */
export function randomMac(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  bytes[0] = (bytes[0]! & 0xfe) | 0x02;
  return toHex(bytes, ":");
}

/** `aa:bb:cc:dd:ee:ff` (also with `-`, or `aabb.ccdd.eeff`) as lower-case colon form, if unicast. */
export function parseMac(text: string): string | null {
  const groups = /^[0-9a-fA-F]{4}(\.[0-9a-fA-F]{4}){2}$/.test(text)
    ? text.replaceAll(".", "").match(/../g)!
    : /^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$/.test(text) &&
        new Set(text.match(/[:-]/g)).size === 1
    ? text.split(/[:-]/)
    : null;
  if (!groups) return null;
  const bytes = groups.map((g) => parseInt(g, 16));
  if (bytes[0]! & 1 || bytes.every((b) => b === 0)) return null;
  return toHex(bytes, ":");
}

/** One end of a veth pair. */
export interface VethEnd {
  name: string;
  mac: string;
}

/** Options for {@link createVeth}. */
export interface VethOptions {
  /** The container's netns path. */
  netns: string;
  /** The container end's name (CNI_IFNAME). */
  ifname: string;
  mtu?: number;
  /** MAC of the container end; random when absent. */
  containerMac?: string;
  /** Extra `ip` commands to run in the host namespace in the same batch (e.g. enslaving). */
  hostCommands?: (hostName: string) => IpCommand[];
}

/** Throws code 3 when a container netns path does not exist. */
export function requireNetns(netns: string): void {
  if (!netnsExists(netns)) {
    throw new CniError(
      ErrorCode.unknownContainer,
      `failed to open netns "${netns}": no such file or directory`,
    );
  }
}

/**
 * The `ip link add` that makes a veth pair with both MACs chosen: `host` in
 * this namespace, `container` straight inside `netns` (or here too, when
 * `netns` is undefined).
 */
export function vethAddCommand(
  host: VethEnd,
  container: VethEnd,
  netns: string | undefined,
  mtu?: number,
): IpCommand {
  const mtuArgs = mtu ? ["mtu", String(mtu)] : [];
  return [
    "link",
    "add",
    host.name,
    ...mtuArgs,
    "address",
    host.mac,
    "type",
    "veth",
    "peer",
    "name",
    container.name,
    ...mtuArgs,
    "address",
    container.mac,
    ...(netns ? ["netns", netns] : []),
  ];
}

/**
 * Creates a veth pair: `veth<8 hex>` up in the host namespace (accept_ra off)
 * and `ifname` down inside the container. Requires CAP_NET_ADMIN.
 */
export async function createVeth(
  options: VethOptions,
): Promise<{ host: VethEnd; container: VethEnd }> {
  requireNetns(options.netns);
  const container = { name: options.ifname, mac: options.containerMac ?? randomMac() };
  for (let attempt = 0;; attempt++) {
    const host = { name: `veth${randomHex(4)}`, mac: randomMac() };
    try {
      await ipBatch([
        vethAddCommand(host, container, options.netns, options.mtu),
        ["link", "set", host.name, "up"],
        ...(options.hostCommands?.(host.name) ?? []),
      ]);
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      // `ip -batch` names the failing line: past line 1 the pair exists.
      const pairMade = !/Command failed -:1\b/.test(message);
      if (pairMade) await deleteLink(host.name).catch(() => {});
      const nameTaken = !pairMade && /File exists/.test(message);
      // A random host name can clash; the reference tries ten names.
      if (nameTaken && attempt < 9 && await linkExists(host.name)) continue;
      if (nameTaken) {
        throw new CniError(
          ErrorCode.internal,
          `container veth name "${container.name}" peer provided ("${host.name}") already exists`,
        );
      }
      throw new CniError(ErrorCode.internal, `failed to make veth pair: ${(e as Error).message}`);
    }
    // Best effort as in the reference: the key is missing when IPv6 is disabled.
    trySysctls({ [`net/ipv6/conf/${host.name}/accept_ra`]: "0" });
    return { host, container };
  }
}

/** The link called `name` (in `netns`, or here), or undefined. */
export async function getLink(name: string, netns?: string): Promise<LinkInfo | undefined> {
  const { code, stdout } = await run("ip", ["-j", "-d", "addr", "show", "dev", name], {
    allowFailure: true,
    ...(netns ? { netns } : {}),
  });
  if (code !== 0) return undefined;
  return (JSON.parse(stdout) as LinkInfo[])[0];
}

/** True when a link called `name` exists here. */
export async function linkExists(name: string, netns?: string): Promise<boolean> {
  return (await getLink(name, netns)) !== undefined;
}

/**
 * Deletes link `name` (in `netns`, or here). Returns false when it was not
 * there, or the netns is gone: DEL must succeed on what is already gone.
 */
export async function deleteLink(name: string, netns?: string): Promise<boolean> {
  if (netns && !netnsExists(netns)) return false;
  const { code, stderr } = await run("ip", ["link", "del", "dev", name], {
    allowFailure: true,
    ...(netns ? { netns } : {}),
  });
  if (code === 0) return true;
  if (/Cannot find device|does not exist/i.test(stderr)) return false;
  throw new CniError(ErrorCode.ioFailure, `failed to delete "${name}": ${stderr.trim()}`);
}

/**
 * Removes an attachment's veth pair for DEL: from inside the container when
 * its netns is there, else through the host end that `prev` names (matched
 * by kind and MAC). A runtime may send DEL with an empty CNI_NETNS while the
 * namespace still lives; without this the pair and its routes stay behind.
 */
export async function deleteVethPair(
  netns: string,
  ifname: string,
  prev: Result | undefined,
): Promise<void> {
  if (netns && netnsExists(netns)) {
    await deleteLink(ifname, netns);
    return;
  }
  const candidates = (prev?.interfaces ?? []).filter((i) =>
    !i.sandbox && i.name.startsWith("veth")
  );
  for (const host of candidates) {
    const link = await getLink(host.name);
    if (link?.linkinfo?.info_kind === "veth" && (!host.mac || link.address === host.mac)) {
      await deleteLink(host.name);
    }
  }
}
