/**
 * portmap: forwards host ports to a container (`runtimeConfig.portMappings`,
 * capability `portMappings`), chained after the plugin that gave the
 * container its addresses. The rules are the reference's, in iptables
 * (iptables.ts) or nftables (nftables.ts), picked as the reference picks;
 * hairpin and 127.0.0.1 traffic is masqueraded (`snat`), `route_localnet`
 * lets 127.0.0.1 reach the container, and stale UDP flows are flushed on
 * ADD and DEL (conntrack.ts).
 * @module
 */

import * as z from "zod/mini";
import { GoInt, goList, goStruct, NETCONF_FIELDS, parseConf } from "../../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig } from "../../../lib/cni/errors.ts";
import { type IPNet, parseCIDR, parseGoIP } from "../../../lib/cni/ipnet.ts";
import { withRollback } from "../../../lib/cni/rollback.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";
import type { BackendName, NetfilterBackend, Owner } from "../../../lib/netfilter/backend.ts";
import { settleBackends } from "../../../lib/netfilter/backend.ts";
import { backendUsable, defaultBackend } from "../../../lib/netfilter/detect.ts";
import { flushUdpFlows } from "./conntrack.ts";
import { portmapIptables } from "./iptables.ts";
import { enableLocalnetRouting } from "./localnet.ts";
import { portmapNftables } from "./nftables.ts";
import type { PortMapping, PortmapSpec, Protocol } from "./spec.ts";

const PortMapEntry = goStruct({
  hostPort: GoInt,
  containerPort: GoInt,
  protocol: z.optional(z.string()),
  hostIP: z.optional(z.string()),
});

const PortmapConf = goStruct({
  ...NETCONF_FIELDS,
  backend: z.optional(z.string()),
  snat: z.optional(z.boolean()),
  masqAll: z.optional(z.boolean()),
  markMasqBit: z.optional(GoInt),
  externalSetMarkChain: z.optional(z.string()),
  conditionsV4: goList(z.string()),
  conditionsV6: goList(z.string()),
  runtimeConfig: z.optional(goStruct({ portMappings: goList(PortMapEntry) })),
});
type PortmapConf = z.infer<typeof PortmapConf>;

const BACKENDS: Record<BackendName, NetfilterBackend<PortmapSpec>> = {
  iptables: portmapIptables,
  nftables: portmapNftables,
};

/** The kernel's default mark bit for "masquerade me" (Kubernetes uses 14 and 15, Calico 20–31). */
const DEFAULT_MARK_BIT = 13;

function bad(msg: string): CniError {
  return invalidConfig(`failed to parse config: ${msg}`);
}

/** The backend conditions are written for: iptables arguments start with `-` or `!`. */
function conditionsBackend(conditions: string[] | null | undefined): BackendName | undefined {
  const first = conditions?.[0];
  if (!first) return undefined;
  return first.startsWith("-") || first.startsWith("!") ? "iptables" : "nftables";
}

function parseMapping(raw: z.infer<typeof PortMapEntry>): PortMapping {
  if (raw.containerPort <= 0 || raw.containerPort > 65535) {
    throw bad(`Invalid container port number: ${raw.containerPort}`);
  }
  if (raw.hostPort <= 0 || raw.hostPort > 65535) {
    throw bad(`Invalid host port number: ${raw.hostPort}`);
  }
  const protocol = (raw.protocol ?? "").toLowerCase();
  if (protocol !== "tcp" && protocol !== "udp" && protocol !== "sctp") {
    throw bad(`Invalid protocol ${JSON.stringify(raw.protocol ?? "")}: want tcp, udp or sctp`);
  }
  const mapping: PortMapping = {
    hostPort: raw.hostPort,
    containerPort: raw.containerPort,
    protocol: protocol as Protocol,
  };
  if (raw.hostIP) {
    const hostIP = parseGoIP(raw.hostIP);
    if (!hostIP) throw bad(`Invalid hostIP ${JSON.stringify(raw.hostIP)}`);
    mapping.hostIP = hostIP;
  }
  return mapping;
}

/**
 * The container's addresses: the first IPv4 and the first IPv6 of the
 * result that belong to `ifname` in a sandbox (addresses without an
 * interface index count too), as the reference picks them.
 */
export function containerAddresses(result: Result | undefined, ifname: string): IPNet[] {
  const found = new Map<4 | 6, IPNet>();
  const interfaces = result?.interfaces ?? [];
  for (const ip of result?.ips ?? []) {
    const net = parseCIDR(ip.address);
    if (!net || found.has(net.ip.family)) continue;
    const i = ip.interface;
    if (
      i !== undefined && i >= 0 && i < interfaces.length &&
      (interfaces[i]!.name !== ifname || !interfaces[i]!.sandbox)
    ) continue;
    found.set(net.ip.family, net);
  }
  return [...found.values()];
}

interface Loaded {
  owner: Owner;
  backend: BackendName;
  spec: PortmapSpec;
}

async function load(args: CmdArgs): Promise<Loaded> {
  const conf: PortmapConf = parseConf(PortmapConf, args.config);
  if (conf.markMasqBit !== undefined && conf.externalSetMarkChain !== undefined) {
    throw bad("Cannot specify externalSetMarkChain and markMasqBit");
  }
  const markBit = conf.markMasqBit ?? DEFAULT_MARK_BIT;
  if (markBit < 0 || markBit > 31) throw bad("MasqMarkBit must be between 0 and 31");

  const specific: Record<BackendName, string[]> = { iptables: [], nftables: [] };
  if (conf.externalSetMarkChain !== undefined) specific.iptables.push("externalSetMarkChain");
  for (const key of ["conditionsV4", "conditionsV6"] as const) {
    const which = conditionsBackend(conf[key]);
    if (which) specific[which].push(key);
  }
  if (conf.backend !== undefined && conf.backend !== "iptables" && conf.backend !== "nftables") {
    throw bad(`unrecognized backend ${JSON.stringify(conf.backend)}`);
  }
  const backend = conf.backend ?? await defaultBackend();
  const other = backend === "iptables" ? "nftables" : "iptables";
  if (specific[other].length) {
    throw bad(
      `${backend} backend was requested but configuration contains ${other}-specific options [${
        specific[other].join(" ")
      }]`,
    );
  }
  return {
    owner: { network: conf.name, containerId: args.containerId, ifname: args.ifname },
    backend,
    spec: {
      containers: containerAddresses(args.prevResult, args.ifname),
      mappings: (conf.runtimeConfig?.portMappings ?? []).map(parseMapping),
      snat: conf.snat ?? true,
      masqAll: conf.masqAll ?? false,
      markBit,
      ...(conf.externalSetMarkChain !== undefined
        ? { externalSetMarkChain: conf.externalSetMarkChain }
        : {}),
      conditions: { 4: conf.conditionsV4 ?? [], 6: conf.conditionsV6 ?? [] },
    },
  };
}

function udpPorts(spec: PortmapSpec): number[] {
  return spec.mappings.filter((m) => m.protocol === "udp").map((m) => m.hostPort);
}

async function add(args: CmdArgs): Promise<Result> {
  const { owner, backend, spec } = await load(args);
  const prev = args.prevResult;
  if (!prev) throw invalidConfig("must be called as chained plugin");
  if (spec.mappings.length === 0 || spec.containers.length === 0) return prev;
  await withRollback(async (rollback) => {
    rollback.defer("port mapping rules", () => BACKENDS[backend].teardown(owner));
    await BACKENDS[backend].setup(owner, spec);
    const v4 = spec.containers.find((c) => c.ip.family === 4);
    if (v4 && spec.snat) enableLocalnetRouting(v4.ip);
  });
  // After the rules, so that new packets of a stale flow take them.
  await flushUdpFlows(udpPorts(spec), spec.containers.map((c) => c.ip.family));
  return prev;
}

async function del(args: CmdArgs): Promise<void> {
  const { owner, backend, spec } = await load(args);
  // The rules are found by name, so they go without mappings or a netns
  // (the reference needs the mappings resent and removes nothing without).
  await settleBackends([[() => backendUsable(backend), BACKENDS[backend].teardown(owner)]]);
  await flushUdpFlows(udpPorts(spec), [4, 6]);
}

async function check(args: CmdArgs): Promise<void> {
  const { owner, backend, spec } = await load(args);
  if (!args.prevResult) throw invalidConfig("Required prevResult missing");
  if (spec.mappings.length === 0) return;
  await BACKENDS[backend].check(owner, spec);
}

async function gc(args: CmdArgs): Promise<void> {
  const { owner, backend } = await load(args);
  await BACKENDS[backend].gc(owner.network, args.validAttachments ?? []);
}

async function status(args: CmdArgs): Promise<void> {
  const { backend } = await load(args);
  if (!await backendUsable(backend)) {
    throw new CniError(
      ErrorCode.pluginNotAvailable,
      `portmap: the ${backend} backend is not usable here`,
    );
  }
}

/** The portmap plugin. */
export const portmap: Plugin = { name: "portmap", add, del, check, gc, status };
