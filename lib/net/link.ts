/**
 * Links: veth pairs between the host and a container, lookups and deletion.
 * A pair is made by one `ip -batch` in the host namespace ({@link createVeth},
 * the only place that makes one), with the container end created straight
 * inside the container's namespace and both MAC addresses chosen here, so no
 * second process is needed to learn them.
 * @module
 */

import { CniError, ErrorCode, invalidConfig } from "../cni/errors.ts";
import { randomHex, toHex } from "../cni/hash.ts";
import { ipBatch, IpBatchError, type IpCommand, type LinkInfo } from "./ip.ts";
import { run } from "./exec.ts";
import { netnsExists, requireNetns } from "./netns.ts";
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

/** Where a requested MAC came from: CNI_ARGS, the config's key, `args`, `runtimeConfig`. */
export type MacSource = "CNI_ARGS" | "config" | "args" | "runtimeConfig";

/** A MAC address a config or runtime asked for. */
export interface MacRequest {
  value: string;
  from: MacSource;
}

/**
 * The MAC that `request` asks for, in canonical form; a bad one is an error
 * of the environment (code 4) when it came from CNI_ARGS, of the config
 * (code 7) otherwise.
 */
export function requestedMac(request: MacRequest | undefined): string | undefined {
  if (!request) return undefined;
  const mac = parseMac(request.value);
  if (!mac) {
    throw new CniError(
      request.from === "CNI_ARGS" ? ErrorCode.invalidEnvironment : ErrorCode.invalidNetworkConfig,
      `invalid MAC address ${JSON.stringify(request.value)} (from ${request.from})`,
    );
  }
  return mac;
}

/** One end of a veth pair. */
export interface VethEnd {
  name: string;
  mac: string;
}

/** Options for {@link createVeth}. */
export interface VethOptions {
  /** The netns of the end named `ifname`; absent: both ends stay here. */
  netns?: string;
  /** The name of the end that is not the host end (CNI_IFNAME in the container). */
  ifname: string;
  /** MTU of both ends. */
  mtu?: number;
  /** MAC of the `ifname` end; random when absent. */
  containerMac?: string;
  /** `ip` commands for this namespace that run first in the same batch (a bridge made, brought up). */
  before?: IpCommand[];
  /** `ip` commands for this namespace after the pair is made and its host end up, given that end's name. */
  after?: (hostName: string) => IpCommand[];
  /** Global `ip` flags for the batch, e.g. `["-d"]` for details in the `show` outputs. */
  flags?: string[];
  /**
   * A failure of the batch's last line whose message matches this is no
   * failure: a `show` of a link that may not exist. `ip` stops at the first
   * failing line, so only the last one can be optional.
   */
  optionalLast?: RegExp;
}

/** What {@link createVeth} made, and what the `show` commands of its batch printed. */
export interface Veth {
  /** `veth<8 hex>`, up, here. */
  host: VethEnd;
  /** The `ifname` end, down, in the netns (or here). */
  container: VethEnd;
  /** The parsed outputs of the `show` commands in `before` and `after`, in order. */
  outputs: unknown[];
}

/**
 * A failure of one of the caller's own lines (`before` or `after`) in the
 * batch of {@link createVeth}; the pair is gone again. `index` is the line's
 * 0-based position in its list, `outputs` what the `show` lines before it
 * printed.
 */
export class VethBatchError extends CniError {
  readonly part: "before" | "after";
  readonly index: number;
  readonly outputs: unknown[];
  /** What `ip` said, without the batch bookkeeping. */
  readonly said: string;

  constructor(part: "before" | "after", index: number, cause: IpBatchError) {
    super(cause.code, cause.message, cause.details);
    this.part = part;
    this.index = index;
    this.outputs = cause.outputs;
    this.said = cause.said;
  }
}

/** The end named `ifname` already exists where it was to be made. */
export class LinkExistsError extends CniError {
  /** The name that is taken. */
  readonly ifname: string;

  constructor(ifname: string, hostName: string) {
    super(
      ErrorCode.internal,
      `container veth name "${ifname}" peer provided ("${hostName}") already exists`,
    );
    this.ifname = ifname;
  }
}

/**
 * The `ip link add` that makes a veth pair with both MACs chosen: `host` in
 * this namespace, `peer` straight inside `netns` (or here too).
 */
function vethAddCommand(
  host: VethEnd,
  peer: VethEnd,
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
    peer.name,
    ...mtuArgs,
    "address",
    peer.mac,
    ...(netns ? ["netns", netns] : []),
  ];
}

/** The reference tries ten random host names before it gives up. */
const HOST_NAME_TRIES = 10;

/**
 * The one way cnikit makes a veth pair: `veth<8 hex>` up in this namespace
 * (accept_ra off) and `ifname` down inside `netns`, both MACs chosen here,
 * in one `ip -batch` together with the caller's `before` and `after`
 * commands (ptp's host routes, bridge's bridge and port flags), so an
 * attachment's whole host side costs one process. A clash of the random
 * host name is retried with another; anything that fails after the pair was
 * made removes it again. Requires CAP_NET_ADMIN.
 *
 * @throws {LinkExistsError} when `ifname` is taken where it was to be made
 * @throws {VethBatchError} when one of the caller's lines fails
 */
export async function createVeth(options: VethOptions): Promise<Veth> {
  if (options.netns !== undefined) requireNetns(options.netns);
  const before = options.before ?? [];
  const container = { name: options.ifname, mac: options.containerMac ?? randomMac() };
  for (let attempt = 1;; attempt++) {
    const host = { name: `veth${randomHex(4)}`, mac: randomMac() };
    const after = options.after?.(host.name) ?? [];
    const vethLine = before.length + 1;
    const commands = [
      ...before,
      vethAddCommand(host, container, options.netns, options.mtu),
      ["link", "set", host.name, "up"],
      ...after,
    ];
    let outputs: unknown[];
    try {
      outputs = await ipBatch(commands, options.flags ? { flags: options.flags } : {});
    } catch (e) {
      if (!(e instanceof IpBatchError)) throw e;
      const failed = e.line ?? commands.length;
      if (e.line === commands.length && after.length && options.optionalLast?.test(e.said)) {
        outputs = e.outputs;
      } else {
        if (failed > vethLine) await deleteLink(host.name).catch(() => {});
        if (failed < vethLine) throw new VethBatchError("before", failed - 1, e);
        if (failed > vethLine + 1) throw new VethBatchError("after", failed - vethLine - 2, e);
        if (failed === vethLine && /File exists/.test(e.said)) {
          if (attempt < HOST_NAME_TRIES && await linkExists(host.name)) continue;
          throw new LinkExistsError(container.name, host.name);
        }
        throw new CniError(ErrorCode.ioFailure, `failed to make veth pair: ${e.said}`, e.details);
      }
    }
    // Best effort as in the reference: the key is missing when IPv6 is disabled.
    trySysctls({ [`net/ipv6/conf/${host.name}/accept_ra`]: "0" });
    return { host, container, outputs };
  }
}

/**
 * The link of the first default route of the main table (IPv4 before
 * IPv6), here or in `netns`: where macvlan and ipvlan attach when no
 * master is configured, as in the reference.
 */
export async function defaultRouteInterface(netns?: string): Promise<string> {
  // `table all`: without it, a batch line selects no IPv6 route.
  const tables = await ipBatch([
    ["route", "show", "table", "all", "exact", "0.0.0.0/0"],
    ["route", "show", "table", "all", "exact", "::/0"],
  ], netns ? { netns } : {}) as { dev?: string; table?: string }[][];
  const route = tables.flat().find((r) => r.table === undefined && r.dev);
  if (!route) throw invalidConfig("no default route interface found");
  return route.dev!;
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
 * The same `ip` process then lists the links, and the deletion counts only
 * when no link of exactly that name is left: a name misread on its way to
 * the kernel must fail the DEL, not release an address still in use.
 */
export async function deleteLink(name: string, netns?: string): Promise<boolean> {
  if (netns && !netnsExists(netns)) return false;
  let found = true;
  let outputs: unknown[];
  try {
    outputs = await ipBatch([["link", "del", "dev", name], ["link", "show"]], {
      force: true,
      ...(netns ? { netns } : {}),
    });
  } catch (e) {
    const gone = e instanceof IpBatchError && e.line === 1 &&
      /Cannot find device|does not exist/i.test(e.message) && !/-:2\b/.test(e.message);
    if (!gone) {
      throw new CniError(
        ErrorCode.ioFailure,
        `failed to delete "${name}": ${(e as Error).message}`,
      );
    }
    found = false;
    outputs = e.outputs;
  }
  const left = outputs[0] as LinkInfo[] | undefined;
  if (!left || left.some((l) => l.ifname === name)) {
    throw new CniError(ErrorCode.ioFailure, `link "${name}" is still there after deleting it`);
  }
  return found;
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
