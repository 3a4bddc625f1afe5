/**
 * Moving a host device into a container and back, through a temporary
 * namespace of this process's own where nothing can clash with a name.
 *
 * In: the device goes from the host into the temporary namespace, gets a
 * temporary name and its host name as its alias there, and moves on into
 * the container, where {@link ContainerLink.configure} renames it to
 * CNI_IFNAME in the batch that configures it (the mechanism every interface
 * plugin's link uses). Out: from the container into the temporary
 * namespace, its alias back as its name, the alias cleared, into the host,
 * left down as the reference leaves it. Each way is one `ip -batch` per
 * namespace; a failing step puts the device back where it came from, up
 * again if it was.
 * @module
 */

import { CniError, ErrorCode, invalidConfig } from "../../../lib/cni/errors.ts";
import { ContainerLink, temporaryName } from "../../../lib/net/container_link.ts";
import { ipBatch, IpBatchError, type IpCommand, type LinkInfo } from "../../../lib/net/ip.ts";
import { TempNetns } from "../../../lib/net/netns.ts";

/** A link as `ip -j link show` prints it, with what host-device reads too. */
type Device = LinkInfo & { ifalias?: string; permaddr?: string };

const isUp = (link: Device) => link.flags.includes("UP");

/** Runs `commands` in `netns` as far as they go, reporting rather than throwing: an undo. */
async function undo(commands: IpCommand[], netns?: string): Promise<void> {
  if (!commands.length) return;
  try {
    await ipBatch(commands, { ...(netns ? { netns } : {}), force: true });
  } catch (e) {
    console.error(`host-device: undoing a failed step: ${(e as Error).message}`);
  }
}

const said = (e: unknown) => (e instanceof IpBatchError ? e.said : (e as Error).message);

/**
 * A host device moved into a container under a temporary name. Removing it
 * (a failed ADD) returns it to the host under its name, up if it was.
 */
export class HostDeviceLink extends ContainerLink {
  /** Its name in the host, kept in its alias while in the container. */
  readonly hostName: string;
  /** Whether it was up in the host. */
  readonly wasUp: boolean;

  constructor(netns: string, ifname: string, tmpName: string, hostName: string, wasUp: boolean) {
    super("host device", netns, ifname, tmpName);
    this.hostName = hostName;
    this.wasUp = wasUp;
  }

  /**
   * Back to the host, from under the temporary name or CNI_IFNAME (only
   * the link that carries this device's alias: a rename that failed on the
   * container's own CNI_IFNAME leaves that link alone).
   */
  override async remove(): Promise<void> {
    const [links] = await ipBatch([["link", "show"]], { netns: this.netns }) as [Device[]];
    const link = links.find((l) => l.ifname === this.temporaryName) ??
      links.find((l) => l.ifname === this.ifname && l.ifalias === this.hostName);
    if (!link) return;
    const temp = TempNetns.create();
    try {
      await ipBatch([["link", "set", "dev", link.ifname, "netns", temp.path]], {
        netns: this.netns,
      });
      await fromTemp(temp, link, this.netns);
    } finally {
      temp.close();
    }
    if (this.wasUp) await undo([["link", "set", this.hostName, "up"]]);
  }
}

/**
 * Moves host device `name` into `netns` under a temporary name, its name
 * kept in its alias, for {@link ContainerLink.configure} to rename to
 * `ifname` there. On failure the device is back in the host as it was.
 */
export async function moveIn(netns: string, ifname: string, name: string): Promise<HostDeviceLink> {
  const temp = TempNetns.create();
  try {
    let shown: Device;
    try {
      [[shown]] = await ipBatch([
        ["link", "show", "dev", name],
        ["link", "set", "dev", name, "netns", temp.path],
      ]) as [[Device]];
    } catch (e) {
      if (e instanceof IpBatchError && e.line === 1) {
        throw invalidConfig(`failed to find host device: ${e.said}`, e.details);
      }
      throw new CniError(
        ErrorCode.ioFailure,
        `failed to move link failed to move ${JSON.stringify(name)} to tempNS: ${said(e)}`,
      );
    }
    const tmpName = temporaryName();
    const steps: IpCommand[] = [
      ["link", "set", "dev", name, "name", tmpName],
      ["link", "set", "dev", tmpName, "alias", name],
      ["link", "set", "dev", tmpName, "netns", netns],
    ];
    try {
      await ipBatch(steps, { netns: temp.path });
    } catch (e) {
      const done = e instanceof IpBatchError && e.line ? e.line - 1 : 0;
      await undo([
        ...(done >= 2 ? [["link", "set", "dev", tmpName, "alias", ""]] : []),
        ...(done >= 1 ? [["link", "set", "dev", tmpName, "name", name]] : []),
        ["link", "set", "dev", name, "netns", temp.homePath],
      ], temp.path);
      // Moving between namespaces took it down.
      if (isUp(shown)) await undo([["link", "set", name, "up"]]);
      throw new CniError(
        ErrorCode.ioFailure,
        `failed to move link failed to move ${JSON.stringify(name)} to container NS: ${said(e)}`,
      );
    }
    return new HostDeviceLink(netns, ifname, tmpName, name, isUp(shown));
  } finally {
    temp.close();
  }
}

/**
 * Finishes a move out: `link` (as it was in the container) is now in
 * `temp`; it gets its alias as name, loses the alias and goes to the host.
 * On failure (a host link holds the name) it goes back into `netns` under
 * its container name, alias kept, up if it was, and the error names why.
 */
async function fromTemp(temp: TempNetns, link: Device, netns: string): Promise<void> {
  const name = link.ifname;
  const hostName = link.ifalias!;
  const steps: IpCommand[] = [
    ["link", "set", "dev", name, "name", hostName],
    ["link", "set", "dev", hostName, "alias", ""],
    ["link", "set", "dev", hostName, "netns", temp.homePath],
  ];
  try {
    await ipBatch(steps, { netns: temp.path });
  } catch (e) {
    const done = e instanceof IpBatchError && e.line ? e.line - 1 : 0;
    await undo([
      ...(done >= 2 ? [["link", "set", "dev", hostName, "alias", hostName]] : []),
      ...(done >= 1 ? [["link", "set", "dev", hostName, "name", name]] : []),
      ["link", "set", "dev", name, "netns", netns],
    ], temp.path);
    if (isUp(link)) await undo([["link", "set", name, "up"]], netns);
    const why = [
      `failed to rename device ${JSON.stringify(name)} to ${JSON.stringify(hostName)}`,
      `failed to unset alias of ${JSON.stringify(hostName)}`,
      `failed to move ${JSON.stringify(hostName)} to hostNS`,
    ][Math.min(done, 2)];
    throw new CniError(ErrorCode.ioFailure, `${why}: ${said(e)}`);
  }
}

/** What tells a host device renamed inside the container from the container's other links. */
export interface Known {
  /** Its MAC: the prevResult's, or the config's `hwaddr`. */
  mac?: string;
  /** Its host name, the config's `device`: the alias it carries. */
  hostName?: string;
}

/**
 * Returns the device that is `ifname` in `netns` to the host (DEL). When
 * `ifname` is not there, the link that carries an alias and has the MAC or
 * the alias `known` names is taken (renamed inside the container:
 * plugins#773); when none is, the device is back already (or died with the
 * namespace): nothing to do. A link without an alias is not known to be a
 * host device: error.
 */
export async function moveOut(netns: string, ifname: string, known: Known): Promise<void> {
  const temp = TempNetns.create();
  try {
    let link: Device | undefined;
    try {
      [[link]] = await ipBatch([
        ["link", "show", "dev", ifname],
        ["link", "set", "dev", ifname, "netns", temp.path],
      ], { netns }) as [[Device]];
    } catch (e) {
      if (!(e instanceof IpBatchError && e.line === 1)) {
        throw new CniError(
          ErrorCode.ioFailure,
          `failed to move ${JSON.stringify(ifname)} to tempNS: ${said(e)}`,
        );
      }
      const { mac, hostName } = known;
      if (!mac && !hostName) return;
      const [links] = await ipBatch([["link", "show"]], { netns }) as [Device[]];
      link = links.find((l) =>
        l.ifalias &&
        ((mac && (l.address === mac || l.permaddr === mac)) || l.ifalias === hostName)
      );
      if (!link) return;
      await ipBatch([["link", "set", "dev", link.ifname, "netns", temp.path]], { netns });
    }
    if (!link.ifalias) {
      await undo([["link", "set", "dev", link.ifname, "netns", netns]], temp.path);
      if (isUp(link)) await undo([["link", "set", link.ifname, "up"]], netns);
      throw new CniError(
        ErrorCode.internal,
        `failed to find original ifname for ${JSON.stringify(link.ifname)} (alias is not set)`,
      );
    }
    await fromTemp(temp, link, netns);
  } finally {
    temp.close();
  }
}
