/**
 * bridge: containers on a Linux bridge in the host, each through a veth
 * pair whose host end is a bridge port. With `isGateway` the bridge (or, on
 * an access VLAN, the host link `<bridge>.<vlan>`) carries the subnet's
 * gateway address and the host routes to the containers; without an IPAM
 * type the attachment is plain L2.
 *
 * The host side is one `ip -batch` (bridge, pair, port flags) that runs
 * while IPAM allocates; the container side one more; VLANs one `bridge
 * -batch`; masquerade and spoof checking one transaction each.
 * @module
 */

import * as z from "zod/mini";
import {
  type Attached,
  attachToBridge,
  bridgeBatch,
  collectVlanTrunk,
  defaultPvid,
  gatewayAddressCommands,
  makeGatewayLink,
  vlanCommands,
  waitPortUp,
} from "./kernel.ts";
import { checkContainerLink, checkFailed, containerInterface } from "../../../lib/net/check.ts";
import { parseCniArgs } from "../../../lib/cni/args.ts";
import {
  DnsConf,
  dnsIsSet,
  GoInt,
  goList,
  goStruct,
  NETCONF_FIELDS,
  parseConf,
  toDns,
  unknownKeys,
} from "../../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig, settleAll } from "../../../lib/cni/errors.ts";
import { configureInterface } from "../../../lib/net/iface.ts";
import { delegate } from "../../../lib/cni/invoke.ts";
import { ipBatch, type IpCommand, type LinkInfo } from "../../../lib/net/ip.ts";
import {
  addToIP,
  formatCIDR,
  formatIP,
  type IPNet,
  networkOf,
  parseCIDR,
  parseIP,
} from "../../../lib/cni/ipnet.ts";
import {
  deleteLink,
  deleteVethPair,
  getLink,
  LinkExistsError,
  type MacRequest,
  requestedMac,
  type VethEnd,
} from "../../../lib/net/link.ts";
import {
  checkMasq,
  gcMasq,
  parseMasqBackend,
  setupMasq,
  teardownMasq,
} from "../../../lib/netfilter/masq/mod.ts";
import { requireNetns } from "../../../lib/net/netns.ts";
import { withRollback } from "../../../lib/cni/rollback.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import { ifNameProblem } from "../../../lib/cni/validate.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";
import { setupSpoofCheck, spoofCheckId, teardownSpoofCheck } from "./spoofcheck.ts";
import { enableForwarding, trySysctls } from "../../../lib/net/sysctl.ts";

const DEFAULT_BRIDGE = "cni0";

const TrunkEntry = goStruct({
  minID: z.optional(GoInt),
  maxID: z.optional(GoInt),
  id: z.optional(GoInt),
});

const BRIDGE_FIELDS = {
  ...NETCONF_FIELDS,
  bridge: z.optional(z.string()),
  isGateway: z.optional(z.boolean()),
  isDefaultGateway: z.optional(z.boolean()),
  forceAddress: z.optional(z.boolean()),
  ipMasq: z.optional(z.boolean()),
  ipMasqBackend: z.optional(z.string()),
  mtu: z.optional(GoInt.check(z.nonnegative())),
  hairpinMode: z.optional(z.boolean()),
  promiscMode: z.optional(z.boolean()),
  vlan: z.optional(GoInt),
  vlanTrunk: goList(TrunkEntry),
  preserveDefaultVlan: z.optional(z.boolean()),
  macspoofchk: z.optional(z.boolean()),
  enabledad: z.optional(z.boolean()),
  disableContainerInterface: z.optional(z.boolean()),
  portIsolation: z.optional(z.boolean()),
  args: z.optional(goStruct({ cni: z.optional(goStruct({ mac: z.optional(z.string()) })) })),
  runtimeConfig: z.optional(goStruct({ mac: z.optional(z.string()) })),
};
const BridgeConf = goStruct(BRIDGE_FIELDS);

/** Keys of the common IPAM plugins, to hint that they belong inside `ipam`. */
const IPAM_KEYS = new Set([
  "subnet",
  "rangeStart",
  "rangeEnd",
  "gateway",
  "routes",
  "ranges",
  "dataDir",
  "resolvConf",
  "addresses",
]);

/** A config with defaults applied and everything cross-checked that DEL needs too. */
interface Conf {
  name: string;
  bridge: string;
  isGateway: boolean;
  isDefaultGateway: boolean;
  forceAddress: boolean;
  ipMasq: boolean;
  ipMasqBackend: string | undefined;
  mtu: number;
  hairpinMode: boolean;
  promiscMode: boolean;
  vlan: number;
  /** Tagged VLANs, sorted and unique. */
  trunk: number[];
  /** `vlanTrunk` was given (even empty): a new bridge filters VLANs. */
  trunkGiven: boolean;
  preserveDefaultVlan: boolean;
  macspoofchk: boolean;
  enabledad: boolean;
  disableContainerInterface: boolean;
  portIsolation: boolean;
  /** The container MAC as configured (CNI_ARGS < args < runtimeConfig), and where from. */
  mac?: MacRequest;
  ipamType: string;
  dns: DnsConf | undefined;
}

function loadConf(args: CmdArgs): Conf {
  const raw = parseConf(BridgeConf, args.config);
  const vlan = raw.vlan ?? 0;
  if (vlan < 0 || vlan > 4094) {
    throw invalidConfig(`invalid VLAN ID ${vlan} (must be between 0 and 4094)`);
  }
  const trunk = collectVlanTrunk(raw.vlanTrunk ?? []);
  const bridge = raw.bridge ?? DEFAULT_BRIDGE;
  if (ifNameProblem(bridge)) throw invalidConfig(`invalid bridge name ${JSON.stringify(bridge)}`);
  let mac: Conf["mac"];
  const envMac = parseCniArgs(args.args, ["MAC"]).MAC;
  if (envMac) mac = { value: envMac, from: "CNI_ARGS" };
  if (raw.args?.cni?.mac) mac = { value: raw.args.cni.mac, from: "args" };
  if (raw.runtimeConfig?.mac) mac = { value: raw.runtimeConfig.mac, from: "runtimeConfig" };
  const isDefaultGateway = raw.isDefaultGateway ?? false;
  return {
    name: raw.name,
    bridge,
    isGateway: (raw.isGateway ?? false) || isDefaultGateway,
    isDefaultGateway,
    forceAddress: raw.forceAddress ?? false,
    ipMasq: raw.ipMasq ?? false,
    ipMasqBackend: raw.ipMasqBackend,
    mtu: raw.mtu ?? 0,
    hairpinMode: raw.hairpinMode ?? false,
    promiscMode: raw.promiscMode ?? false,
    vlan,
    trunk,
    trunkGiven: raw.vlanTrunk !== undefined && raw.vlanTrunk !== null,
    preserveDefaultVlan: raw.preserveDefaultVlan ?? false,
    macspoofchk: raw.macspoofchk ?? false,
    enabledad: raw.enabledad ?? false,
    disableContainerInterface: raw.disableContainerInterface ?? false,
    portIsolation: raw.portIsolation ?? false,
    ...(mac ? { mac } : {}),
    ipamType: raw.ipam?.type ?? "",
    dns: raw.dns,
  };
}

/** The checks only ADD makes (DEL must clean up after any config). */
function validateForAdd(conf: Conf): { mac?: string } {
  if (conf.ipamType && conf.disableContainerInterface) {
    throw invalidConfig("cannot use IPAM when DisableContainerInterface flag is set");
  }
  if (conf.hairpinMode && conf.promiscMode) {
    throw invalidConfig("cannot set hairpin mode and promiscuous mode at the same time");
  }
  parseMasqBackend(conf.ipMasqBackend);
  if (conf.isGateway && conf.vlan && conf.ipamType && ifNameProblem(vlanLinkName(conf))) {
    throw invalidConfig(`VLAN gateway interface name "${vlanLinkName(conf)}" is too long`);
  }
  const mac = requestedMac(conf.mac);
  return mac ? { mac } : {};
}

/** The host link that carries the gateway address on an access VLAN. */
function vlanLinkName(conf: Conf): string {
  return `${conf.bridge}.${conf.vlan}`;
}

/** Names the top-level keys the bridge plugin does not know, on one stderr line. */
function warnIgnoredKeys(config: Record<string, unknown>): void {
  const ignored = unknownKeys(config, BRIDGE_FIELDS);
  if (ignored.length === 0) return;
  const hint = ignored.some((k) => IPAM_KEYS.has(k)) ? ` (IPAM settings belong inside "ipam")` : "";
  console.error(
    `cnikit bridge: warning: ignoring unknown top-level config keys: ${ignored.join(", ")}${hint}`,
  );
}

type Gateways = Record<4 | 6, IPNet[]>;

function defaultDst(family: 4 | 6): string {
  return family === 4 ? "0.0.0.0/0" : "::/0";
}

/**
 * Fills in what the reference's calcGateways does: every IP points at the
 * container interface; with isGateway an IP without a gateway gets the
 * subnet's first address; with isDefaultGateway each family gets a default
 * route via its gateway unless IPAM gave one with a gateway. Returns the
 * gateway addresses (with the subnet's prefix) per family.
 */
function calcGateways(result: Result, conf: Conf): Gateways {
  const gateways: Gateways = { 4: [], 6: [] };
  const defaultFound = { 4: false, 6: false };
  const routes = result.routes ??= [];
  for (const ip of result.ips ?? []) {
    const net = parseCIDR(ip.address)!;
    const family = net.ip.family;
    ip.interface = 2;
    if (!ip.gateway && conf.isGateway) ip.gateway = formatIP(addToIP(networkOf(net).ip, 1n));
    if (conf.isDefaultGateway && !defaultFound[family]) {
      defaultFound[family] = routes.some((r) => {
        const dst = parseCIDR(r.dst);
        return r.gw !== undefined && dst !== null && formatCIDR(dst) === defaultDst(family);
      });
      if (!defaultFound[family]) {
        routes.push({ dst: defaultDst(family), ...(ip.gateway ? { gw: ip.gateway } : {}) });
        defaultFound[family] = true;
      }
    }
    if (conf.isGateway) gateways[family].push({ ip: parseIP(ip.gateway!)!, prefix: net.prefix });
  }
  return gateways;
}

/**
 * Gives the VLAN gateway link its addresses, making the link first when it
 * does not exist. Returns it, and its new bridge port if one was made.
 */
async function ensureVlanGateway(
  conf: Conf,
  attached: Attached,
  gateways: IPNet[],
): Promise<{ link: VethEnd; newPort?: VethEnd }> {
  const name = vlanLinkName(conf);
  let current: LinkInfo | undefined = attached.other;
  for (let attempt = 1;; attempt++) {
    let addrs;
    try {
      addrs = gatewayAddressCommands(name, current?.addr_info ?? [], gateways, conf.forceAddress);
    } catch (e) {
      throw new CniError(
        (e as CniError).code,
        `failed to set vlan interface for bridge with addr: ${(e as Error).message}`,
      );
    }
    if (current) {
      const commands: IpCommand[] = [
        ...(current.flags.includes("UP") ? [] : [["link", "set", name, "up"]]),
        ...addrs.commands,
      ];
      try {
        if (commands.length) await ipBatch(commands);
      } catch (e) {
        throw new CniError(
          ErrorCode.ioFailure,
          `failed to create vlan interface: ${(e as Error).message}`,
          e instanceof CniError ? e.details : "",
        );
      }
      return { link: { name, mac: current.address ?? "" } };
    }
    try {
      const made = await makeGatewayLink(conf.bridge, name, attached.bridge.mtu, addrs.commands);
      return { link: made.link, newPort: made.port };
    } catch (e) {
      // A concurrent ADD made it first.
      if (!(e instanceof LinkExistsError) || attempt >= 3) throw e;
      current = await getLink(name);
      if (!current) throw e;
    }
  }
}

async function add(args: CmdArgs): Promise<Result> {
  const conf = loadConf(args);
  const { mac } = validateForAdd(conf);
  warnIgnoredKeys(args.config);
  requireNetns(args.netns);
  const l3 = conf.ipamType !== "";
  const vlanGateway = conf.isGateway && conf.vlan !== 0 && l3;
  return await withRollback(async (rollback) => {
    // The host batch and the IPAM allocation do not depend on each other.
    const attaching = attachToBridge({
      bridge: {
        name: conf.bridge,
        ...(conf.mtu ? { mtu: conf.mtu } : {}),
        promisc: conf.promiscMode,
        vlanFiltering: conf.vlan !== 0 || conf.trunkGiven,
        ownMac: conf.isGateway && l3 && conf.vlan === 0,
      },
      port: { hairpin: conf.hairpinMode, isolated: conf.portIsolation },
      netns: args.netns,
      ifname: args.ifname,
      ...(conf.mtu ? { mtu: conf.mtu } : {}),
      ...(mac ? { containerMac: mac } : {}),
      ...(vlanGateway ? { alsoShow: vlanLinkName(conf) } : {}),
    });
    const allocating = l3 ? delegate(conf.ipamType, "ADD", args) : Promise.resolve(undefined);
    // Masquerade needs only the addresses: it starts as soon as IPAM answers.
    const owner = { network: conf.name, containerId: args.containerId, ifname: args.ifname };
    let masquerading = false;
    const masquerade = l3 && conf.ipMasq
      ? allocating.then((ipam) => {
        masquerading = true;
        const nets = (ipam?.ips ?? []).map((ip) => parseCIDR(ip.address)!);
        return setupMasq(owner, nets, parseMasqBackend(conf.ipMasqBackend));
      })
      : undefined;
    const [attachedOutcome, ipamOutcome, masqOutcome] = await Promise.allSettled([
      attaching,
      allocating,
      masquerade,
    ]);
    // Undone newest first: masquerade, then the pair, then the lease.
    if (ipamOutcome.status === "fulfilled" && l3) {
      rollback.defer("IPAM reservation", () => delegate(conf.ipamType, "DEL", args));
    }
    if (attachedOutcome.status === "fulfilled") {
      const hostName = attachedOutcome.value.host.name;
      rollback.defer("veth pair", () => deleteLink(hostName));
    }
    if (masquerading) rollback.defer("masquerade rules", () => teardownMasq(owner));
    if (attachedOutcome.status === "rejected") throw attachedOutcome.reason;
    if (ipamOutcome.status === "rejected") throw ipamOutcome.reason;
    if (masqOutcome.status === "rejected") throw masqOutcome.reason;
    const attached = attachedOutcome.value;
    const ipam = ipamOutcome.value;

    const result: Result = {
      cniVersion: "1.1.0",
      interfaces: [
        { name: conf.bridge, mac: attached.bridge.address ?? "" },
        { name: attached.host.name, mac: attached.host.mac },
        { name: attached.container.name, mac: attached.container.mac, sandbox: args.netns },
      ],
    };
    let gateways: Gateways = { 4: [], 6: [] };
    if (ipam) {
      if (!ipam.ips?.length) {
        throw new CniError(ErrorCode.internal, "IPAM plugin returned missing IP config");
      }
      result.ips = ipam.ips.map((ip) => ({ ...ip }));
      result.routes = (ipam.routes ?? []).map((r) => ({ ...r }));
      result.dns = ipam.dns ?? {};
      gateways = calcGateways(result, conf);
    }
    if (dnsIsSet(conf.dns)) result.dns = toDns(conf.dns);

    const portVlans = {
      vlan: conf.vlan,
      trunk: conf.trunk,
      preserveDefaultVlan: conf.preserveDefaultVlan,
    };
    const pvid = defaultPvid(attached.bridge);
    const allGateways = [...gateways[4], ...gateways[6]];

    // Host: gateway addresses (and VLAN gateway link), then port VLANs.
    const hostSide = async () => {
      const vlans = vlanCommands(attached.host.name, portVlans, pvid);
      if (allGateways.length && vlanGateway) {
        const gw = await ensureVlanGateway(conf, attached, allGateways);
        result.interfaces!.push({ name: gw.link.name, mac: gw.link.mac });
        if (gw.newPort) {
          vlans.push(
            ...vlanCommands(gw.newPort.name, { ...portVlans, trunk: [] }, pvid),
          );
        }
      } else if (allGateways.length) {
        let planned;
        try {
          planned = gatewayAddressCommands(
            conf.bridge,
            attached.bridge.addr_info ?? [],
            allGateways,
            conf.forceAddress,
          );
        } catch (e) {
          throw new CniError(
            (e as CniError).code,
            `failed to set bridge addr: ${(e as Error).message}`,
          );
        }
        const commands = planned.commands;
        // Keep the MAC the bridge had before the port joined, as the reference
        // does; a bridge whose ports have all left has none (all zeros), and
        // keeps the one it has now.
        const pin = [attached.macBefore, attached.bridge.address].find((m) =>
          m && m !== "00:00:00:00:00:00"
        );
        if (planned.added && pin) {
          commands.push(["link", "set", conf.bridge, "address", pin]);
          result.interfaces![0]!.mac = pin;
        }
        if (commands.length) await ipBatch(commands);
      }
      if (allGateways.length) {
        enableForwarding(([4, 6] as const).filter((f) => gateways[f].length));
      }
      await bridgeBatch(vlans);
    };

    const containerSide = async () => {
      if (ipam) {
        trySysctls({
          ...(conf.enabledad
            ? {
              [`net/ipv6/conf/${args.ifname}/enhanced_dad`]: "1",
              [`net/ipv6/conf/${args.ifname}/accept_dad`]: "1",
            }
            : { [`net/ipv6/conf/${args.ifname}/accept_dad`]: "0" }),
          [`net/ipv4/conf/${args.ifname}/arp_notify`]: "1",
        }, args.netns);
        await configureInterface(args.netns, args.ifname, result);
      } else if (!conf.disableContainerInterface) {
        await ipBatch([["link", "set", args.ifname, "up"]], { netns: args.netns });
      }
    };

    const tasks: Promise<unknown>[] = [];
    if (conf.vlan || conf.trunk.length) {
      // The port must be in its VLANs before the container can send a frame.
      tasks.push(hostSide().then(containerSide));
    } else {
      tasks.push(hostSide(), containerSide());
    }
    if (conf.macspoofchk) {
      const id = spoofCheckId(args.containerId, args.ifname);
      rollback.defer("spoof check", () => teardownSpoofCheck(id));
      tasks.push(setupSpoofCheck(attached.host.name, attached.container.mac, id));
    }
    await settleAll(tasks);

    if (!conf.disableContainerInterface) await waitPortUp(attached.host.name);
    return result;
  });
}

async function del(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  const l3 = conf.ipamType !== "";
  const link = deleteVethPair(args.netns, args.ifname, args.prevResult);
  // The lease goes after the link, so the address is not handed out while still in use.
  const lease = l3
    ? link.catch(() => {}).then(() => delegate(conf.ipamType, "DEL", args))
    : undefined;
  // Both are found by name, so they go even when the netns is gone or not given.
  const spoofCheck = conf.macspoofchk
    ? teardownSpoofCheck(spoofCheckId(args.containerId, args.ifname)).catch((e) =>
      console.error(`cnikit bridge: ${(e as Error).message}`)
    )
    : undefined;
  const masq = l3 && conf.ipMasq
    ? teardownMasq({ network: conf.name, containerId: args.containerId, ifname: args.ifname })
    : undefined;
  await settleAll([link, lease, spoofCheck, masq]);
}

interface HostLink {
  ifindex: number;
  ifname: string;
  link_index?: number;
  master?: string;
  address?: string;
  flags: string[];
}

async function check(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  requireNetns(args.netns);
  // cnikit: an L2 attachment has no IPAM to ask (the reference fails here).
  if (conf.ipamType) await delegate(conf.ipamType, "CHECK", args);
  const prev = args.prevResult;
  if (!prev) checkFailed("Required prevResult missing");
  const [all, bridges, veths] = await ipBatch([
    ["link", "show"],
    ["link", "show", "type", "bridge"],
    ["link", "show", "type", "veth"],
  ]) as HostLink[][];
  const byName = new Map(all!.map((l) => [l.ifname, l]));
  const isBridge = new Set(bridges!.map((l) => l.ifname));
  const isVeth = new Set(veths!.map((l) => l.ifname));
  const host = (name: string, sandboxed: string | undefined): HostLink => {
    if (!name) checkFailed("Interface name missing ");
    const link = byName.get(name) ?? checkFailed(`Interface name ${name} not found`);
    if (sandboxed) checkFailed(`Interface ${name} should not be in sandbox`);
    return link;
  };

  const interfaces = prev.interfaces ?? [];
  const brIface = interfaces.find((i) => i.name === conf.bridge);
  const br = host(brIface?.name ?? "", brIface?.sandbox);
  if (!isBridge.has(br.ifname)) {
    checkFailed(`Interface ${br.ifname} does not have link type of bridge`);
  }
  if (brIface!.mac && brIface!.mac !== br.address) {
    checkFailed(`Bridge interface ${br.ifname} Mac doesn't match: ${brIface!.mac}`);
  }
  const promisc = br.flags.includes("PROMISC");
  if (promisc !== conf.promiscMode) {
    checkFailed(
      `Bridge interface ${br.ifname} configured Promisc Mode ${conf.promiscMode} doesn't match current state: ${promisc} `,
    );
  }

  const contIface = containerInterface(prev, args.ifname, args.netns, "bridge");
  const cont = await checkContainerLink(args.netns, args.ifname, prev, {
    kind: "veth",
    plugin: "bridge",
    ...(contIface.mac ? { mac: contIface.mac } : {}),
  }) as LinkInfo & { link_index?: number };

  let vethFound = false;
  for (const iface of interfaces) {
    if (iface.name === conf.bridge || iface.name === contIface.name) continue;
    const link = host(iface.name, iface.sandbox);
    if (!isVeth.has(link.ifname)) continue;
    if (
      link.ifindex !== cont.link_index || link.link_index !== cont.ifindex ||
      link.master !== br.ifname
    ) continue;
    if (iface.mac && iface.mac !== link.address) {
      checkFailed(`Interface ${iface.name} Mac doesn't match: ${iface.mac} not found`);
    }
    vethFound = true;
    break;
  }
  if (!vethFound) checkFailed(`CNI veth created for bridge ${conf.bridge} was not found`);
  if (conf.ipamType && conf.ipMasq) {
    const owner = { network: conf.name, containerId: args.containerId, ifname: args.ifname };
    const nets = (prev.ips ?? []).map((ip) => parseCIDR(ip.address)!);
    await checkMasq(owner, nets, parseMasqBackend(conf.ipMasqBackend));
  }
}

async function status(args: CmdArgs): Promise<void> {
  const conf = parseConf(BridgeConf, args.config);
  if (conf.ipam?.type) await delegate(conf.ipam.type, "STATUS", args);
}

async function gc(args: CmdArgs): Promise<void> {
  const conf = parseConf(BridgeConf, args.config);
  if (conf.ipam?.type) await delegate(conf.ipam.type, "GC", args);
  if (conf.ipam?.type && conf.ipMasq) await gcMasq(conf.name, args.validAttachments ?? []);
}

/** The bridge plugin. */
export const bridge: Plugin = { name: "bridge", add, del, check, status, gc };
