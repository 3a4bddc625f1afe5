/**
 * firewall: lets a container's traffic through the host's forwarding
 * firewall and, with `ingressPolicy`, fences bridges off from each other.
 * A chained plugin; the rules go through firewalld when it runs (or is
 * asked for), else iptables, or nftables when asked for (cnikit's own
 * backend). Backends: iptables.ts, firewalld.ts, nftables.ts.
 * @module
 */

import * as z from "zod/mini";
import { versionsFrom } from "../../../lib/cni/spec/version.ts";
import { goStruct, NETCONF_FIELDS, parseConf } from "../../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig } from "../../../lib/cni/errors.ts";
import { formatCIDR, type IPNet, parseCIDR } from "../../../lib/cni/ipnet.ts";
import { withRollback } from "../../../lib/cni/rollback.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";
import {
  type NetfilterBackend,
  type Owner,
  settleBackends,
} from "../../../lib/netfilter/backend.ts";
import { iptablesUsable, nftUsable } from "../../../lib/netfilter/detect.ts";
import type { DbusConnection } from "./dbus.ts";
import { connectFirewalld, firewallFirewalld } from "./firewalld.ts";
import { firewallIptables } from "./iptables.ts";
import { firewallNftables } from "./nftables.ts";
import { DEFAULT_DATA_DIR, readRecord, removeRecord, writeRecord } from "./records.ts";
import type { FirewallSpec, IngressPolicy } from "./spec.ts";

const FirewallConf = goStruct({
  ...NETCONF_FIELDS,
  backend: z.optional(z.string()),
  iptablesAdminChainName: z.optional(z.string()),
  firewalldZone: z.optional(z.string()),
  ingressPolicy: z.optional(z.string()),
  dataDir: z.optional(z.string()),
});

const BACKENDS = ["iptables", "firewalld", "nftables"] as const;
type BackendChoice = (typeof BACKENDS)[number] | undefined;

interface Loaded {
  owner: Owner;
  choice: BackendChoice;
  admin: string;
  zone: string;
  policy: IngressPolicy;
  dataDir: string;
}

function load(args: CmdArgs): Loaded {
  const conf = parseConf(FirewallConf, args.config);
  const policy = conf.ingressPolicy || "open";
  if (policy !== "open" && policy !== "same-bridge" && policy !== "isolated") {
    throw invalidConfig(`unknown ingress policy: ${JSON.stringify(conf.ingressPolicy)}`);
  }
  const backend = conf.backend || undefined;
  if (backend !== undefined && !(BACKENDS as readonly string[]).includes(backend)) {
    throw invalidConfig(
      `unknown firewall backend ${JSON.stringify(backend)}: want iptables, firewalld or nftables`,
    );
  }
  return {
    owner: { network: conf.name, containerId: args.containerId, ifname: args.ifname },
    choice: backend as BackendChoice,
    admin: conf.iptablesAdminChainName || "CNI-ADMIN",
    zone: conf.firewalldZone || "trusted",
    policy,
    dataDir: conf.dataDir || DEFAULT_DATA_DIR,
  };
}

/** The addresses of a result (all of them, as the reference takes them). */
function addressesOf(result: Result | undefined): IPNet[] {
  return (result?.ips ?? []).flatMap((ip) => parseCIDR(ip.address) ?? []);
}

/** The spec for ADD and CHECK: the result's addresses and, with a policy, the bridge. */
function specOf(loaded: Loaded, result: Result): FirewallSpec {
  const spec: FirewallSpec = { ips: addressesOf(result) };
  if (loaded.policy === "open") return spec;
  const first = result.interfaces?.[0];
  if (!first) {
    throw invalidConfig(
      `interface needs to be set for ingress policy ${
        JSON.stringify(loaded.policy)
      }, make sure to chain "firewall" plugin with "bridge"`,
    );
  }
  if (!first.name) throw invalidConfig("got empty bridge name");
  spec.isolation = { bridge: first.name, isolated: loaded.policy === "isolated" };
  return spec;
}

interface Opened {
  backend: NetfilterBackend<FirewallSpec>;
  /** Whether the backend's rules carry no owner, so the addresses are recorded. */
  recorded: boolean;
  usable: () => Promise<boolean>;
  close(): void;
}

/**
 * The backend the config asks for; unset, firewalld when it owns its name
 * on the system bus (as the reference decides), else iptables.
 */
async function open(loaded: Loaded): Promise<Opened> {
  const none = () => {};
  const iptables = (): Opened => ({
    backend: firewallIptables(loaded.admin, loaded.dataDir),
    recorded: true,
    usable: () => iptablesUsable(4),
    close: none,
  });
  const firewalld = (bus: DbusConnection): Opened => ({
    backend: firewallFirewalld(bus, loaded.zone, loaded.dataDir),
    recorded: true,
    usable: () => Promise.resolve(true),
    close: () => bus.close(),
  });
  switch (loaded.choice) {
    case "iptables":
      return iptables();
    case "nftables":
      return { backend: firewallNftables, recorded: false, usable: nftUsable, close: none };
    case "firewalld": {
      const bus = await connectFirewalld();
      if (!bus) {
        throw new CniError(
          ErrorCode.ioFailure,
          "firewalld is not running: its name is not owned on the system bus",
        );
      }
      return firewalld(bus);
    }
    default: {
      const bus = await connectFirewalld();
      return bus ? firewalld(bus) : iptables();
    }
  }
}

async function withBackend<T>(loaded: Loaded, fn: (o: Opened) => Promise<T>): Promise<T> {
  const opened = await open(loaded);
  try {
    return await fn(opened);
  } finally {
    opened.close();
  }
}

async function add(args: CmdArgs): Promise<Result> {
  const loaded = load(args);
  const prev = args.prevResult;
  if (!prev) throw invalidConfig("missing prevResult from earlier plugin");
  const spec = specOf(loaded, prev);
  await withBackend(loaded, (o) =>
    withRollback(async (rollback) => {
      rollback.defer("firewall rules", () => o.backend.teardown(loaded.owner, spec));
      await o.backend.setup(loaded.owner, spec);
      if (o.recorded) {
        await writeRecord(loaded.dataDir, loaded.owner, spec.ips.map(formatCIDR));
      }
    }));
  return prev;
}

async function del(args: CmdArgs): Promise<void> {
  const loaded = load(args);
  // The result's addresses, and those recorded at ADD: DEL works without prevResult.
  const ips = new Map(
    [
      ...addressesOf(args.prevResult),
      ...(await readRecord(loaded.dataDir, loaded.owner)).flatMap((ip) => parseCIDR(ip) ?? []),
    ].map((ip) => [formatCIDR(ip), ip]),
  );
  await withBackend(loaded, async (o) => {
    await settleBackends([[
      o.usable,
      o.backend.teardown(loaded.owner, { ips: [...ips.values()] }),
    ]]);
    await removeRecord(loaded.dataDir, loaded.owner);
  });
}

async function check(args: CmdArgs): Promise<void> {
  const loaded = load(args);
  const prev = args.prevResult;
  if (!prev) throw invalidConfig("missing prevResult from earlier plugin");
  const spec = specOf(loaded, prev);
  await withBackend(loaded, (o) => o.backend.check(loaded.owner, spec));
}

async function gc(args: CmdArgs): Promise<void> {
  const loaded = load(args);
  await withBackend(loaded, (o) => o.backend.gc(loaded.owner.network, args.validAttachments ?? []));
}

async function status(args: CmdArgs): Promise<void> {
  const loaded = load(args);
  await withBackend(loaded, async (o) => {
    if (!await o.usable()) {
      throw new CniError(
        ErrorCode.pluginNotAvailable,
        `firewall: the ${o.backend.name} backend is not usable here`,
      );
    }
  });
}

/** The firewall plugin (spec 0.4.0 and later, as the reference). */
export const firewall: Plugin = {
  name: "firewall",
  versions: versionsFrom("0.4.0"),
  add,
  del,
  check,
  gc,
  status,
};
