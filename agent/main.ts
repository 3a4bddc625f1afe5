/**
 * `cnikit agent [run] <flags>` starts the node agent; `cnikit agent status`
 * shows what a running one knows. Flags are checked before anything is
 * touched: a bad one exits 2 with the reason.
 * @module
 */

import { formatCIDR, networkOf, parseCIDR, parseIP } from "../lib/cni/ipnet.ts";
import { parseMasqBackend } from "../lib/netfilter/masq/mod.ts";
import { Agent, AgentExit, type AgentOptions, EXIT, log } from "./agent.ts";
import {
  type FlagSpec,
  flagsUsage,
  type FlagValues,
  intFlag,
  parseFlags,
  required,
  UsageError,
} from "./flags.ts";
import { formatStatus, processAlive, readStatus } from "./state.ts";

/** Defaults shared with `cnikit install`. */
export const DEFAULTS = {
  cniConfDir: "/etc/cni/net.d",
  cniConfFile: "10-cnikit.conflist",
  networkName: "cnikit",
  ipamDataDir: "/var/lib/cni/networks",
  stateDir: "/var/lib/cnikit/agent",
} as const;

/** The flags that say where the list and the node's state go (agent and install). */
export const LIST_FLAGS: readonly FlagSpec[] = [
  {
    name: "cni-conf-dir",
    value: "DIR",
    help: "where the node's CNI list is written",
    default: DEFAULTS.cniConfDir,
  },
  {
    name: "cni-conf-file",
    value: "NAME",
    help: "the list's file name",
    default: DEFAULTS.cniConfFile,
  },
  {
    name: "network-name",
    value: "NAME",
    help: "the network's name in the list",
    default: DEFAULTS.networkName,
  },
  {
    name: "ipam-data-dir",
    value: "DIR",
    help: "host-local's store for this node's pods",
    default: DEFAULTS.ipamDataDir,
  },
  {
    name: "state-dir",
    value: "DIR",
    help: "the agent's own files (subnet.json, status.json)",
    default: DEFAULTS.stateDir,
  },
];

/** The flags of `cnikit agent run`. */
export const RUN_FLAGS: readonly FlagSpec[] = [
  { name: "etcd-endpoints", value: "URL,...", help: "etcd client URLs (required)" },
  {
    name: "etcd-prefix",
    value: "KEY",
    help: "where the cluster's keys live in etcd",
    default: "/cnikit/network",
  },
  {
    name: "cluster-cidr",
    value: "CIDR",
    help: "the pods' IPv4 range, shared by all nodes (required)",
  },
  { name: "subnet-len", value: "N", help: "prefix length of each node's subnet", default: "24" },
  { name: "backend", value: "host-gw|vxlan", help: "how nodes reach each other", default: "vxlan" },
  {
    name: "public-ip",
    value: "IP",
    help:
      "this node's address for the other nodes (default: of --iface or the default route's link)",
  },
  {
    name: "iface",
    value: "NAME",
    help: "the link to the other nodes (default: the one holding --public-ip)",
  },
  { name: "node-name", value: "NAME", help: "this node's name (default: the host name)" },
  ...LIST_FLAGS,
  {
    name: "lease-ttl",
    value: "SECONDS",
    help: "TTL of the node's lease; a node gone this long is removed everywhere",
    default: "60",
  },
  { name: "vxlan-vni", value: "N", help: "VXLAN network identifier", default: "1" },
  { name: "vxlan-port", value: "PORT", help: "VXLAN UDP port", default: "8472" },
  { name: "mtu", value: "N", help: "the pods' MTU (default: the link's, less 50 with vxlan)" },
  {
    name: "masquerade",
    help: "masquerade pod traffic leaving the cluster CIDR (--masquerade=false: off)",
    default: "true",
  },
  {
    name: "masq-backend",
    value: "iptables|nftables",
    help: "netfilter front end for the masquerade (default: iptables when installed)",
  },
  {
    name: "start-timeout",
    value: "SECONDS",
    help: "how long to keep trying etcd at start",
    default: "30",
  },
  { name: "help", help: "show this help" },
];

const STATUS_FLAGS: readonly FlagSpec[] = [
  LIST_FLAGS.find((f) => f.name === "state-dir")!,
  { name: "json", help: "print the status file as it is" },
  { name: "help", help: "show this help" },
];

function usage(): string {
  return `Usage:
  cnikit agent [run] --etcd-endpoints URL[,URL...] --cluster-cidr CIDR [flags]
  cnikit agent status [--state-dir DIR] [--json]

Leases a subnet of the cluster CIDR for this node in etcd, writes the node's
CNI list for it and routes to every other node's subnet (host-gw or vxlan).

Flags of run:
${flagsUsage(RUN_FLAGS)}

Flags of status:
${flagsUsage(STATUS_FLAGS)}

Exit codes: 0 stopped by SIGTERM/SIGINT (subnet released), 1 failure,
2 bad flags or a cluster configured otherwise, 3 etcd unreachable at start,
4 cluster CIDR exhausted. See agent/README.md.`;
}

function commaList(text: string): string[] {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    return "";
  }
}

/** The agent's options from its flags; {@link UsageError} for anything wrong. */
export function agentOptions(values: FlagValues): AgentOptions {
  const endpoints = commaList(required(values, "etcd-endpoints"));
  for (const endpoint of endpoints) {
    if (!/^https?:\/\/[^/\s]+\/?$/.test(endpoint)) {
      throw new UsageError(`--etcd-endpoints: "${endpoint}" is not an http(s)://host:port URL`);
    }
  }
  const cidrText = required(values, "cluster-cidr");
  const cluster = parseCIDR(cidrText);
  if (!cluster || cluster.ip.family !== 4) {
    throw new UsageError(`--cluster-cidr: "${cidrText}" is not an IPv4 CIDR`);
  }
  if (networkOf(cluster).ip.value !== cluster.ip.value) {
    throw new UsageError(
      `--cluster-cidr: "${cidrText}" has host bits set (did you mean ${
        formatCIDR(networkOf(cluster))
      }?)`,
    );
  }
  const subnetLen = intFlag(values, "subnet-len", 1, 28);
  if (subnetLen < cluster.prefix) {
    throw new UsageError(
      `--subnet-len ${subnetLen} is shorter than the cluster CIDR's /${cluster.prefix}`,
    );
  }
  const backend = required(values, "backend");
  if (backend !== "host-gw" && backend !== "vxlan") {
    throw new UsageError(`--backend must be host-gw or vxlan, not "${backend}"`);
  }
  const publicIP = values.get("public-ip");
  if (publicIP !== undefined && parseIP(publicIP)?.family !== 4) {
    throw new UsageError(`--public-ip: "${publicIP}" is not an IPv4 address`);
  }
  const nodeName = values.get("node-name") ?? hostName();
  if (!/^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$/.test(nodeName)) {
    throw new UsageError(`--node-name: "${nodeName}" is not a valid node name`);
  }
  let masqBackend;
  try {
    masqBackend = parseMasqBackend(values.get("masq-backend"));
  } catch {
    throw new UsageError(`--masq-backend must be iptables or nftables`);
  }
  const options: AgentOptions = {
    etcdEndpoints: endpoints,
    etcdPrefix: required(values, "etcd-prefix"),
    clusterCIDR: cluster,
    subnetLen,
    backend,
    nodeName,
    cniConfDir: required(values, "cni-conf-dir"),
    cniConfFile: required(values, "cni-conf-file"),
    networkName: required(values, "network-name"),
    ipamDataDir: required(values, "ipam-data-dir"),
    stateDir: required(values, "state-dir"),
    leaseTTL: intFlag(values, "lease-ttl", 2, 86400),
    vxlanVNI: intFlag(values, "vxlan-vni", 1, 16777215),
    vxlanPort: intFlag(values, "vxlan-port", 1, 65535),
    masquerade: values.get("masquerade") === "true",
    startTimeout: intFlag(values, "start-timeout", 0, 3600),
  };
  if (!options.etcdPrefix.startsWith("/")) {
    throw new UsageError(`--etcd-prefix must start with "/"`);
  }
  if (!/^[A-Za-z0-9._-]+$/.test(options.cniConfFile) || !/\.conflist$/.test(options.cniConfFile)) {
    throw new UsageError(`--cni-conf-file must be a plain file name ending in .conflist`);
  }
  if (publicIP !== undefined) options.publicIP = publicIP;
  const iface = values.get("iface");
  if (iface !== undefined) options.iface = iface;
  if (values.has("mtu")) options.mtu = intFlag(values, "mtu", 576, 65535);
  if (masqBackend) options.masqBackend = masqBackend;
  return options;
}

async function status(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags(STATUS_FLAGS, args);
  if (values.get("help") === "true") {
    console.log(usage());
    return EXIT.ok;
  }
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  const stateDir = required(values, "state-dir");
  const current = await readStatus(stateDir);
  if (!current) {
    console.error(`cnikit agent: no status in ${stateDir} (has the agent run on this node?)`);
    return EXIT.failure;
  }
  const alive = current.running && processAlive(current.pid);
  console.log(
    values.get("json") === "true"
      ? JSON.stringify({ ...current, running: alive }, null, 2)
      : formatStatus(current, alive),
  );
  return alive ? EXIT.ok : EXIT.failure;
}

async function runAgent(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags(RUN_FLAGS, args);
  if (values.get("help") === "true") {
    console.log(usage());
    return EXIT.ok;
  }
  if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
  return await new Agent(agentOptions(values)).run();
}

/** `cnikit agent …`: returns the exit code. */
export async function agentMain(args: string[]): Promise<number> {
  const [first, ...rest] = args;
  try {
    if (first === "status") return await status(rest);
    return await runAgent(first === "run" ? rest : args);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`cnikit agent: ${e.message}\nRun "cnikit agent --help" for the flags.`);
      return EXIT.usage;
    }
    if (e instanceof AgentExit) {
      log(e.message);
      return e.code;
    }
    throw e;
  }
}
