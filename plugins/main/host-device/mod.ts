/**
 * host-device: moves an existing host device (a NIC, a VF, a veth end) into
 * the container as CNI_IFNAME, its host name kept in its alias, and back
 * to the host under that name on DEL. A PCI device bound to a userspace
 * driver (vfio-pci, uio_pci_generic, igb_uio) is not a netdev to move: in
 * that DPDK mode only the IPAM result is passed on.
 * @module
 */

import * as z from "zod/mini";
import { dnsIsSet, goStruct, NETCONF_FIELDS, parseConf, toDns } from "../../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig, settleAll } from "../../../lib/cni/errors.ts";
import { delegate } from "../../../lib/cni/invoke.ts";
import { withRollback } from "../../../lib/cni/rollback.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";
import { checkContainerLink, containerInterface } from "../../../lib/net/check.ts";
import { attachContainerLink } from "../../../lib/net/container_link.ts";
import { netnsExists, requireNetns } from "../../../lib/net/netns.ts";
import { moveIn, moveOut } from "./move.ts";
import {
  deviceName,
  hasDpdkDriver,
  parseHardwareAddr,
  type Selector,
  selectorOf,
} from "./select.ts";

const HostDeviceConf = goStruct({
  ...NETCONF_FIELDS,
  device: z.optional(z.string()),
  hwaddr: z.optional(z.string()),
  kernelpath: z.optional(z.string()),
  pciBusID: z.optional(z.string()),
  runtimeConfig: z.optional(goStruct({ deviceID: z.optional(z.string()) })),
});
type HostDeviceConf = z.infer<typeof HostDeviceConf>;

/** Where sysfs is read: the runtime's environment may move it (tests use a fake tree). */
function sysfsRoot(args: CmdArgs): string {
  return args.env.CNIKIT_SYSFS || "/sys";
}

interface Loaded {
  conf: HostDeviceConf;
  ipamType: string;
  selector: Selector;
  /** A PCI device with a userspace driver: nothing to move. */
  dpdk: boolean;
}

function load(args: CmdArgs): Loaded {
  const conf = parseConf(HostDeviceConf, args.config);
  const root = sysfsRoot(args);
  const deviceID = conf.runtimeConfig?.deviceID;
  const { selector, pci } = selectorOf({ ...conf, ...(deviceID ? { deviceID } : {}) }, root);
  return {
    conf,
    ipamType: conf.ipam?.type ?? "",
    selector,
    // The driver decides whenever a PCI address is known, even when a name
    // or MAC is what selects the device, as in the reference.
    dpdk: pci !== undefined && hasDpdkDriver(pci, root),
  };
}

/** ADD in DPDK mode: the IPAM result for the device, nothing configured. */
async function addDpdk(args: CmdArgs, loaded: Loaded): Promise<Result> {
  requireNetns(args.netns);
  const iface = { name: args.ifname, sandbox: args.netns };
  if (!loaded.ipamType) return { cniVersion: "1.1.0", interfaces: [iface] };
  return await withRollback(async (rollback) => {
    const ipam = (await delegate(loaded.ipamType, "ADD", args))!;
    rollback.defer("IPAM reservation", () => delegate(loaded.ipamType, "DEL", args));
    if (!ipam.ips?.length) {
      throw new CniError(ErrorCode.internal, "IPAM plugin returned missing IP config");
    }
    const dns = dnsIsSet(loaded.conf.dns) ? toDns(loaded.conf.dns) : ipam.dns;
    return {
      cniVersion: "1.1.0",
      interfaces: [iface],
      ips: ipam.ips.map((ip) => ({ ...ip, interface: 0 })),
      routes: ipam.routes ?? [],
      ...(dns && Object.keys(dns).length ? { dns } : {}),
    };
  });
}

async function add(args: CmdArgs): Promise<Result> {
  const loaded = load(args);
  if (loaded.dpdk) return await addDpdk(args, loaded);
  return await attachContainerLink(args, {
    make: async () =>
      moveIn(args.netns, args.ifname, await deviceName(loaded.selector, sysfsRoot(args))),
    ipamType: loaded.ipamType,
    ...(loaded.ipamType && loaded.conf.dns ? { dns: loaded.conf.dns } : {}),
  });
}

/**
 * The device back to the host, then the lease released: both also when
 * the other fails, and the lease even without a namespace (cni#1167: the
 * reference leaks it then). A namespace that is gone took a virtual device
 * with it and gave a physical one back to the initial namespace.
 */
async function del(args: CmdArgs): Promise<void> {
  const conf = parseConf(HostDeviceConf, args.config);
  const ipamType = conf.ipam?.type ?? "";
  let dpdk = false;
  try {
    dpdk = load(args).dpdk;
  } catch {
    // A PCI device or driver gone since ADD: then it is no netdev in the
    // container either, and what DEL looks for there decides.
  }
  // What finds the device when it was renamed inside (plugins#773): the
  // result's MAC, else what the config selected it by.
  const mac =
    args.prevResult?.interfaces?.find((i) => i.name === args.ifname && i.sandbox === args.netns)
      ?.mac || (conf.hwaddr && parseHardwareAddr(conf.hwaddr)) || undefined;
  const known = { ...(mac ? { mac } : {}), ...(conf.device ? { hostName: conf.device } : {}) };
  const device = !dpdk && args.netns && netnsExists(args.netns)
    ? moveOut(args.netns, args.ifname, known)
    : Promise.resolve();
  const lease = ipamType
    ? device.catch(() => {}).then(() => delegate(ipamType, "DEL", args))
    : undefined;
  await settleAll([device, lease]);
}

async function check(args: CmdArgs): Promise<void> {
  const loaded = load(args);
  requireNetns(args.netns);
  if (loaded.ipamType) await delegate(loaded.ipamType, "CHECK", args);
  const prev = args.prevResult;
  if (!prev) throw invalidConfig("Required prevResult missing");
  if (loaded.dpdk) return;
  const iface = containerInterface(prev, args.ifname, args.netns, "host-device");
  await checkContainerLink(args.netns, args.ifname, prev, {
    plugin: "host-device",
    ...(iface.mac ? { mac: iface.mac } : {}),
  });
}

async function status(args: CmdArgs): Promise<void> {
  const conf = parseConf(HostDeviceConf, args.config);
  if (conf.ipam?.type) await delegate(conf.ipam.type, "STATUS", args);
}

/** GC: the IPAM's (a device needs none: it leaves a container that dies). */
async function gc(args: CmdArgs): Promise<void> {
  const conf = parseConf(HostDeviceConf, args.config);
  if (conf.ipam?.type) await delegate(conf.ipam.type, "GC", args);
}

/** The host-device plugin. */
export const hostDevice: Plugin = { name: "host-device", add, del, check, status, gc };
