/**
 * Which host device a host-device config names: by name, by hardware
 * address, by its sysfs device directory, PCI address or auxiliary-bus
 * device; and whether a PCI device is bound to a userspace (DPDK) driver.
 * Everything under /sys is read below a root that tests replace with a
 * fake tree (`CNIKIT_SYSFS`), as the reference's tests replace its paths.
 * @module
 */

import { invalidConfig } from "../../../lib/cni/errors.ts";
import { toHex } from "../../../lib/cni/hash.ts";
import { ipBatch, type LinkInfo } from "../../../lib/net/ip.ts";

/** Drivers that hand a PCI network device to userspace: the device is then used in DPDK mode. */
const USERSPACE_DRIVERS = ["vfio-pci", "uio_pci_generic", "igb_uio"];

/** How the config names the device, in the reference's order of precedence. */
export type Selector =
  | { by: "device"; name: string }
  | { by: "hwaddr"; mac: string }
  | { by: "kernelpath"; path: string }
  | { by: "pciBusID"; pci: string }
  | { by: "auxiliary"; device: string };

/** The selector keys of the config, `runtimeConfig.deviceID` resolved. */
export interface SelectorKeys {
  device?: string;
  hwaddr?: string;
  kernelpath?: string;
  pciBusID?: string;
  deviceID?: string;
}

/** A PCI or auxiliary-bus device id: one path component under the bus's directory. */
function busId(id: string, what: string): string {
  if (id.includes("/") || id === "." || id === "..") {
    throw invalidConfig(`${what} ${JSON.stringify(id)} is not a device id`);
  }
  return id;
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * The selector of `keys` under sysfs `root`, and the PCI address that
 * decides DPDK mode: `runtimeConfig.deviceID` (a PCI address or an
 * auxiliary-bus device) takes the place of `pciBusID`; then `device`,
 * `hwaddr`, `kernelpath`, the PCI address, the auxiliary device win in that
 * order, as in the reference.
 */
export function selectorOf(keys: SelectorKeys, root: string): { selector: Selector; pci?: string } {
  let pci = keys.pciBusID || undefined;
  let auxiliary: string | undefined;
  if (keys.deviceID) {
    const id = busId(keys.deviceID, "runtime config DeviceID");
    if (exists(`${root}/bus/pci/devices/${id}`)) pci = id;
    else if (exists(`${root}/bus/auxiliary/devices/${id}`)) {
      pci = undefined;
      auxiliary = id;
    } else {
      throw invalidConfig(`runtime config DeviceID ${id} not found or unsupported`);
    }
  }
  if (pci) busId(pci, "pciBusID");
  const selector: Selector | undefined = keys.device
    ? { by: "device", name: keys.device }
    : keys.hwaddr
    ? { by: "hwaddr", mac: keys.hwaddr }
    : keys.kernelpath
    ? { by: "kernelpath", path: keys.kernelpath }
    : pci
    ? { by: "pciBusID", pci }
    : auxiliary
    ? { by: "auxiliary", device: auxiliary }
    : undefined;
  if (!selector) {
    throw invalidConfig(`specify either "device", "hwaddr", "kernelpath" or "pciBusID"`);
  }
  return { selector, ...(pci ? { pci } : {}) };
}

/**
 * True when the PCI device `pci` is bound to a userspace driver. Its driver
 * must be readable: a device without one is an error, as in the reference.
 */
export function hasDpdkDriver(pci: string, root: string): boolean {
  try {
    const driver = Deno.realPathSync(`${root}/bus/pci/devices/${pci}/driver`);
    return USERSPACE_DRIVERS.includes(driver.slice(driver.lastIndexOf("/") + 1));
  } catch (e) {
    throw invalidConfig(`error with host device: ${(e as Error).message}`);
  }
}

/**
 * A hardware address in any of Go's `net.ParseMAC` forms (6, 8 or 20 bytes;
 * `:`-, `-`- or `.`-separated) as `ip` prints it, or null.
 */
export function parseHardwareAddr(text: string): string | null {
  let groups: string[] | null = null;
  if (
    /^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2})+$/.test(text) && new Set(text.match(/[:-]/g)).size === 1
  ) {
    groups = text.split(/[:-]/);
  } else if (/^[0-9a-fA-F]{4}(\.[0-9a-fA-F]{4})+$/.test(text)) {
    groups = text.replaceAll(".", "").match(/../g);
  }
  if (!groups || ![6, 8, 20].includes(groups.length)) return null;
  return toHex(groups.map((g) => parseInt(g, 16)), ":");
}

/** The name of the first net device in a sysfs `net` directory, as Go's ReadDir sorts them. */
function firstNetDevice(dir: string): string {
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch (e) {
    throw invalidConfig(
      `failed to find host device: failed to read directory ${dir}: ${(e as Error).message}`,
    );
  }
  if (!names.length) {
    throw invalidConfig(`failed to find host device: failed to find network device in path ${dir}`);
  }
  return names[0]!;
}

/**
 * The host link's name that `selector` names. A name is taken as given (the
 * move checks it exists); a hardware address is looked up among the links
 * of this namespace (one `ip`); the others are read from sysfs under `root`.
 */
export async function deviceName(selector: Selector, root: string): Promise<string> {
  switch (selector.by) {
    case "device":
      return selector.name;
    case "hwaddr": {
      const mac = parseHardwareAddr(selector.mac);
      if (!mac) {
        throw invalidConfig(
          `failed to find host device: failed to parse MAC address ${JSON.stringify(selector.mac)}`,
        );
      }
      const [links] = await ipBatch([["link", "show"]]) as [LinkInfo[]];
      const link = links.find((l) => l.address?.toLowerCase() === mac);
      if (!link) {
        throw invalidConfig("failed to find host device: failed to find physical interface");
      }
      return link.ifname;
    }
    case "kernelpath": {
      const path = selector.path;
      if (!path.startsWith("/sys/devices/") || path.split("/").includes("..")) {
        throw invalidConfig(
          `failed to find host device: kernel device path ${
            JSON.stringify(path)
          } must be absolute and begin with /sys/devices/`,
        );
      }
      return firstNetDevice(`${root}${path.slice("/sys".length).replace(/\/+$/, "")}/net`);
    }
    case "pciBusID": {
      const device = `${root}/bus/pci/devices/${selector.pci}`;
      if (exists(`${device}/net`)) return firstNetDevice(`${device}/net`);
      // A virtio device keeps its net directory one level down.
      let virtio: string[] = [];
      try {
        virtio = [...Deno.readDirSync(device)].map((e) => e.name)
          .filter((n) => n.startsWith("virtio") && exists(`${device}/${n}/net`)).sort();
      } catch { /* no such device: the error below */ }
      if (!virtio.length) {
        throw invalidConfig(
          `failed to find host device: no net directory under pci device ${selector.pci}`,
        );
      }
      return firstNetDevice(`${device}/${virtio[0]}/net`);
    }
    case "auxiliary":
      return firstNetDevice(`${root}/bus/auxiliary/devices/${selector.device}/net`);
  }
}
