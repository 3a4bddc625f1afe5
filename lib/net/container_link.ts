/**
 * Links that an interface plugin makes for a container: macvlan, ipvlan,
 * vlan, dummy and tap here; host-device, sbr and vrf build on the same
 * pieces. A link is made under a temporary name `veth<8 hex>` straight
 * inside the container's netns, by one `ip -batch` either here (on a master
 * in this namespace, with `netns <path>` on the creating line) or in the
 * container (a master that lives there, or no master at all), and renamed
 * to CNI_IFNAME there in the same batch that configures it.
 *
 * Why a temporary name: a link made on a master here is named here first,
 * so CNI_IFNAME (`eth0`) could clash with a host link of that name; the
 * reference plugins make theirs the same way.
 *
 * The pieces, from low to high:
 * - {@link linkAddCommand}: the `ip link add` of a link of any kind.
 * - {@link createContainerLink}: runs a {@link LinkRecipe}'s commands under
 *   a fresh temporary name (retried on a clash), with the master shown in the
 *   same batch so the caller can check it (an MTU above the master's);
 *   returns a {@link ContainerLink}.
 * - {@link ContainerLink}: `configure()` renames it and configures it from
 *   a result in one batch, returning the link as the kernel shows it (its
 *   MAC); `remove()` deletes it under whichever name it has. A plugin whose
 *   link is not made but moved in (host-device) subclasses it and gives
 *   `remove()` its own meaning.
 * - {@link attachContainerLink}, {@link detachContainerLink},
 *   {@link checkAttachedLink}: ADD, DEL and CHECK of an interface plugin
 *   around such a link (IPAM delegation, rollback, the result).
 *
 * A plugin's ADD, in outline:
 * ```ts ignore
 * return await attachContainerLink(args, {
 *   make: () => createContainerLink(args.netns, args.ifname, {
 *     what: "macvlan",
 *     inContainer: false,
 *     master: "eth0",
 *     commands: (name, netns) => [
 *       linkAddCommand({ name, kind: "macvlan", typeArgs: ["mode", "bridge"], master: "eth0", netns }),
 *     ],
 *   }),
 *   ipamType: "host-local",
 * });
 * ```
 * @module
 */

import { type DnsConf, dnsIsSet, toDns } from "../cni/conf.ts";
import { CniError, ErrorCode, invalidConfig, settleAll } from "../cni/errors.ts";
import { randomHex } from "../cni/hash.ts";
import { delegate } from "../cni/invoke.ts";
import { withRollback } from "../cni/rollback.ts";
import type { CmdArgs } from "../cni/skel.ts";
import type { Result } from "../cni/spec/schemas.ts";
import { checkContainerLink, checkFailed, containerInterface } from "./check.ts";
import { configureInterface } from "./iface.ts";
import { ipBatch, IpBatchError, type IpCommand, type LinkInfo } from "./ip.ts";
import { deleteLink, getLink, linkExists } from "./link.ts";
import { requireNetns } from "./netns.ts";
import { trySysctls } from "./sysctl.ts";

/** How to make one link for a container. */
export interface LinkRecipe {
  /** What the link is, for messages: "macvlan". */
  what: string;
  /**
   * Run the commands inside the container (the master lives there, or the
   * link has none) instead of here, where they must move the link into the
   * container themselves (`netns <path>`, as {@link linkAddCommand} does).
   */
  inContainer: boolean;
  /**
   * A link the new one hangs on, shown first in the same batch (what
   * `validate` of {@link createContainerLink} gets); missing, the ADD fails
   * with code 7.
   */
  master?: string;
  /** What the master is called in messages; "master" when absent ("bridge" for tap). */
  masterRole?: string;
  /** The commands that make the link called `name` (made here, they also put it into `netns`). */
  commands(name: string, netns: string): IpCommand[];
  /** The SELinux context the creating `ip` runs in (tap's `selinuxContext`). */
  execLabel?: string;
}

/** Options for {@link linkAddCommand}. */
export interface LinkAdd {
  name: string;
  /** `type <kind>`: "macvlan", "ipvlan", "vlan", "dummy". */
  kind: string;
  /** Arguments after `type <kind>`: `["mode", "bridge"]`, `["id", "100"]`. */
  typeArgs?: string[];
  /** The parent link (`link <master>`). */
  master?: string;
  mtu?: number;
  mac?: string;
  /** Put it straight into this netns (when it is made here). */
  netns?: string;
}

/** The `ip link add` for {@link LinkAdd}. */
export function linkAddCommand(o: LinkAdd): IpCommand {
  return [
    "link",
    "add",
    ...(o.master ? ["link", o.master] : []),
    "name",
    o.name,
    ...(o.mtu !== undefined && o.mtu !== 0 ? ["mtu", String(o.mtu)] : []),
    ...(o.mac ? ["address", o.mac] : []),
    ...(o.netns ? ["netns", o.netns] : []),
    "type",
    o.kind,
    ...(o.typeArgs ?? []),
  ];
}

/** Tries before a clash of the random temporary name is an error. */
const NAME_TRIES = 10;

/** A temporary link name in the reference's form: `veth` and 8 hex digits. */
export function temporaryName(): string {
  return `veth${randomHex(4)}`;
}

/**
 * Makes the link of `recipe` inside `netns` under a temporary name, to be
 * called `ifname`. `validate` gets the master as shown by the same batch,
 * also when the kernel refused the link (so that "MTU above the master's"
 * explains the refusal); when it throws, or anything fails after the link
 * was made, the link is removed again before the error is thrown.
 * Requires CAP_NET_ADMIN (and CAP_SYS_ADMIN to enter the netns).
 */
export async function createContainerLink(
  netns: string,
  ifname: string,
  recipe: LinkRecipe,
  validate?: (master: LinkInfo) => void,
): Promise<ContainerLink> {
  const showLines = recipe.master ? 1 : 0;
  for (let attempt = 1;; attempt++) {
    const name = temporaryName();
    const commands = [
      ...(recipe.master ? [["addr", "show", "dev", recipe.master]] : []),
      ...recipe.commands(name, netns),
    ];
    let outputs: unknown[];
    try {
      outputs = await ipBatch(commands, {
        ...(recipe.inContainer ? { netns } : {}),
        ...(recipe.execLabel !== undefined ? { execLabel: recipe.execLabel } : {}),
      });
    } catch (e) {
      if (!(e instanceof IpBatchError)) throw e;
      const failed = e.line ?? commands.length;
      // Past its first command the link exists (tap: set up in a second one).
      if (failed > showLines + 1) await deleteLink(name, netns).catch(() => {});
      if (failed <= showLines) {
        throw invalidConfig(
          `failed to lookup ${recipe.masterRole ?? "master"} "${recipe.master}": ${e.said}`,
          e.details,
        );
      }
      const master = recipe.master ? (e.outputs[0] as LinkInfo[] | undefined)?.[0] : undefined;
      if (master && validate) validate(master);
      if (
        failed === showLines + 1 && /File exists/.test(e.said) && attempt < NAME_TRIES &&
        await linkExists(name, netns)
      ) continue;
      throw new CniError(
        ErrorCode.ioFailure,
        `failed to create ${recipe.what}: ${e.said}`,
        e.details,
      );
    }
    const master = recipe.master ? (outputs[0] as LinkInfo[] | undefined)?.[0] : undefined;
    if (master && validate) {
      try {
        validate(master);
      } catch (e) {
        await deleteLink(name, netns).catch(() => {});
        throw e;
      }
    }
    return new ContainerLink(recipe.what, netns, ifname, name, master);
  }
}

/**
 * The kernel's name of a link's configured mode: `modes[0]` when unset or
 * empty, as the reference defaults it; code 7 for one the kind has not.
 */
export function linkMode(kind: string, modes: readonly string[], configured?: string): string {
  const mode = configured || modes[0]!;
  if (!modes.includes(mode)) {
    throw invalidConfig(`unknown ${kind} mode: ${JSON.stringify(configured)}`);
  }
  return mode;
}

/**
 * A CHECK `verify` for {@link checkAttachedLink}: the link's kernel mode
 * must be `mode`. `what` starts the failure as the reference words it
 * (`container macvlan mode`, `Container IPVlan mode`).
 */
export function expectMode(what: string, mode: string): (link: LinkInfo) => void {
  return (link) => {
    const have = link.linkinfo?.info_data?.mode;
    if (have !== mode) checkFailed(`${what} ${have} does not match expected value: ${mode}`);
  };
}

/** Options for {@link ContainerLink.configure}. */
export interface LinkSetup {
  /** Commands after the rename, before the addresses (`link set <ifname> master <bridge>`). */
  before?: IpCommand[];
  /** sysctls of the link written before it comes up, given its present name (`arp_notify`). */
  sysctls?: (name: string) => Record<string, string>;
}

/**
 * The {@link LinkSetup} of a link with its own addresses on a shared segment
 * (macvlan, ipvlan): gratuitous ARP and unsolicited neighbour advertisements
 * when it comes up, so the segment learns the addresses at once, as the
 * reference sets them.
 */
export const ANNOUNCE_ADDRESSES: LinkSetup = {
  sysctls: (name) => ({
    [`net/ipv4/conf/${name}/arp_notify`]: "1",
    [`net/ipv6/conf/${name}/ndisc_notify`]: "1",
  }),
};

/** A link made for a container, not yet renamed: what {@link createContainerLink} returns. */
export class ContainerLink {
  /** What the link is, for messages. */
  readonly what: string;
  /** The container's netns path. */
  readonly netns: string;
  /** The name it gets (CNI_IFNAME). */
  readonly ifname: string;
  /** The name it has until {@link configure} renames it. */
  readonly temporaryName: string;
  /** The master as the creating batch showed it, when there is one. */
  readonly master: LinkInfo | undefined;
  #renaming = false;

  constructor(
    what: string,
    netns: string,
    ifname: string,
    temporaryName: string,
    master?: LinkInfo,
  ) {
    this.what = what;
    this.netns = netns;
    this.ifname = ifname;
    this.temporaryName = temporaryName;
    this.master = master;
  }

  /**
   * Renames the link to its CNI_IFNAME and configures it from `result`
   * (addresses, up, routes; without IPs only up), in the container's batch
   * (two with an IPv6 gateway), and returns it as the kernel shows it then.
   */
  async configure(result: Result, setup: LinkSetup = {}): Promise<LinkInfo> {
    if (setup.sysctls) trySysctls(setup.sysctls(this.temporaryName), this.netns);
    this.#renaming = true;
    const rename = ["link", "set", this.temporaryName, "name", this.ifname].join(" ");
    let shown: LinkInfo | undefined;
    try {
      shown = await configureInterface(this.netns, this.ifname, result, {
        renameFrom: this.temporaryName,
        ...(setup.before ? { before: setup.before } : {}),
        show: true,
      });
    } catch (e) {
      if (e instanceof IpBatchError && e.command?.join(" ") === rename) {
        throw new CniError(
          ErrorCode.internal,
          /File exists/.test(e.said)
            ? `failed to rename ${this.what} to "${this.ifname}": "${this.ifname}" already exists in the container`
            : `failed to rename ${this.what} to "${this.ifname}": ${e.said}`,
          e.details,
        );
      }
      throw e;
    }
    if (!shown) throw new CniError(ErrorCode.ioFailure, `failed to refetch ${this.what}`);
    return shown;
  }

  /**
   * Removes the link under whichever name it has: the temporary one, or
   * CNI_IFNAME once a rename was tried and the temporary name is gone (so a
   * rename that failed on the container's own `eth0` leaves that alone).
   */
  async remove(): Promise<void> {
    if (await deleteLink(this.temporaryName, this.netns)) return;
    if (this.#renaming) await deleteLink(this.ifname, this.netns);
  }
}

/** Options for {@link attachContainerLink}. */
export interface Attach {
  /**
   * Makes the link; runs while IPAM allocates. It is called first, so a
   * `make` that spawns its `ip` before its first `await` has the kernel
   * working while an in-process IPAM runs.
   */
  make(): Promise<ContainerLink>;
  /** The IPAM plugin to delegate to; "" for none. */
  ipamType: string;
  /** Without IPAM: a result whose IPs and routes to apply (ipvlan's prevResult); none: L2 only. */
  given?: Result;
  /** The config's `dns`: replaces the IPAM's when set. */
  dns?: DnsConf;
  setup?: LinkSetup;
}

/**
 * ADD of an interface plugin: makes the link while IPAM allocates, then
 * configures it from IPAM's result (or `given`) and returns the result,
 * with the link as its only interface. A failure undoes what was made, the
 * link before the lease.
 */
export async function attachContainerLink(args: CmdArgs, o: Attach): Promise<Result> {
  requireNetns(args.netns);
  return await withRollback(async (rollback) => {
    const [made, allocated] = await Promise.allSettled([
      o.make(),
      o.ipamType ? delegate(o.ipamType, "ADD", args) : Promise.resolve(undefined),
    ]);
    if (allocated.status === "fulfilled" && o.ipamType) {
      rollback.defer("IPAM reservation", () => delegate(o.ipamType, "DEL", args));
    }
    if (made.status === "fulfilled") rollback.defer(made.value.what, () => made.value.remove());
    if (made.status === "rejected") throw made.reason;
    if (allocated.status === "rejected") throw allocated.reason;
    const link = made.value;
    const ipam = allocated.value ?? o.given;
    if (o.ipamType && !ipam?.ips?.length) {
      throw new CniError(ErrorCode.internal, "IPAM plugin returned missing IP config");
    }
    const result: Result = {
      cniVersion: "1.1.0",
      interfaces: [{ name: args.ifname, mac: "", sandbox: args.netns }],
    };
    if (ipam) {
      result.ips = (ipam.ips ?? []).map((ip) => ({ ...ip, interface: 0 }));
      result.routes = (ipam.routes ?? []).map((r) => ({ ...r }));
    }
    const dns = dnsIsSet(o.dns) ? toDns(o.dns) : ipam?.dns;
    if (dns && Object.keys(dns).length) result.dns = dns;
    const shown = await link.configure(result, o.setup);
    result.interfaces![0]!.mac = shown.address ?? "";
    return result;
  });
}

/**
 * DEL of an interface plugin: deletes CNI_IFNAME in the container, then
 * releases the lease (so the address is not handed out while still in
 * use). An empty CNI_NETNS, a netns or link already gone count as deleted:
 * the link dies with its namespace.
 */
export async function detachContainerLink(args: CmdArgs, ipamType: string): Promise<void> {
  const link = args.netns ? deleteLink(args.ifname, args.netns) : Promise.resolve(false);
  const lease = ipamType
    ? link.catch(() => {}).then(() => delegate(ipamType, "DEL", args))
    : undefined;
  await settleAll([link, lease]);
}

/** Options for {@link checkAttachedLink}. */
export interface AttachedCheck {
  /** The plugin's name, as CHECK messages start with it. */
  plugin: string;
  /** The link kind the container interface must have (`ip -d`'s `info_kind`). */
  kind: string;
  ipamType: string;
  /** A master that must still exist (here, or in the container). */
  master?: string;
  masterInContainer?: boolean;
  /** Further checks of the container link (mode, VLAN id, MTU), as `ip -j -d` shows it. */
  verify?: (link: LinkInfo) => void;
}

/**
 * CHECK of an interface plugin: IPAM's CHECK, then the prevResult's
 * container interface against the kernel: sandbox, kind, MAC, what `verify`
 * checks, every IP and route; and the master still there.
 */
export async function checkAttachedLink(args: CmdArgs, o: AttachedCheck): Promise<void> {
  requireNetns(args.netns);
  if (o.ipamType) await delegate(o.ipamType, "CHECK", args);
  const prev = args.prevResult;
  if (!prev) checkFailed(`${o.plugin}: Required prevResult missing`);
  const iface = containerInterface(prev, args.ifname, args.netns, o.plugin);
  if (o.master) {
    const master = await getLink(o.master, o.masterInContainer ? args.netns : undefined);
    if (!master) checkFailed(`failed to lookup master "${o.master}": Link not found`);
  }
  await checkContainerLink(args.netns, args.ifname, prev, {
    kind: o.kind,
    plugin: o.plugin,
    ...(iface.mac ? { mac: iface.mac } : {}),
    ...(o.verify ? { verify: o.verify } : {}),
  });
}
