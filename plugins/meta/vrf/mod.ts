/**
 * vrf: puts the container interface a main plugin made into a VRF inside
 * the container (made on first use, removed with its last member), so that
 * attachments with overlapping addresses can live side by side. The
 * interface keeps its IPv6 addresses (re-added when enslaving dropped them)
 * and its routes, which move into the VRF's table.
 *
 * The namespace's file is locked (flock) while this runs, so two
 * attachments joining one VRF do not both try to make it. An ADD costs two
 * `ip` processes inside the container (three when IPv6 addresses had to be
 * re-added and DAD awaited), a DEL two, a CHECK one.
 * @module
 */

import * as z from "zod/mini";
import { GoInt, goStruct, NETCONF_FIELDS, parseConf } from "../../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig } from "../../../lib/cni/errors.ts";
import { type IP, parseIP } from "../../../lib/cni/ipnet.ts";
import { type Rollback, withRollback } from "../../../lib/cni/rollback.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";
import { versionsFrom } from "../../../lib/cni/spec/version.ts";
import { checkFailed } from "../../../lib/net/check.ts";
import { requireTools } from "../../../lib/net/exec.ts";
import { settleAddresses } from "../../../lib/net/iface.ts";
import {
  type AddrInfo,
  ipBatch,
  IpBatchError,
  type IpCommand,
  type IpStep,
  ipSteps,
  type LinkInfo,
} from "../../../lib/net/ip.ts";
import { netnsExists, requireNetns, withNetnsLock } from "../../../lib/net/netns.ts";
import { routeArgs, type RouteInfo, SHOW_ALL_ROUTES } from "../../../lib/net/route.ts";

const VrfConf = goStruct({
  ...NETCONF_FIELDS,
  vrfname: z.optional(z.string()),
  table: z.optional(GoInt.check(z.nonnegative(), z.lte(0xffffffff))),
});

/** The config with the VRF's name required, as the reference wants it for every verb. */
function loadConf(args: CmdArgs): { vrfname: string; table: number } {
  const conf = parseConf(VrfConf, args.config);
  if (!conf.vrfname) throw invalidConfig("configuration is expected to have a valid vrf name");
  return { vrfname: conf.vrfname, table: conf.table ?? 0 };
}

function requirePrev(args: CmdArgs): Result {
  if (!args.prevResult) throw invalidConfig("missing prevResult from earlier plugin");
  return args.prevResult;
}

/** An address as `ip -j -d addr` shows it, with the flags `ip addr add` takes back. */
type Address = AddrInfo & Partial<Record<(typeof ADDR_FLAGS)[number], boolean>> & {
  valid_life_time?: number;
  preferred_life_time?: number;
};

const ADDR_FLAGS = ["nodad", "noprefixroute", "home", "mngtmpaddr", "optimistic"] as const;
const FOREVER = 0xffffffff;

/** The `ip addr` arguments that make `a` on `dev` again, flags and lifetimes kept. */
function addrArgs(a: Address, dev: string): string[] {
  const args = [`${a.local}/${a.prefixlen}`, "dev", dev, ...ADDR_FLAGS.filter((f) => a[f])];
  if (a.valid_life_time !== undefined && a.valid_life_time !== FOREVER) {
    args.push("valid_lft", String(a.valid_life_time));
    args.push("preferred_lft", String(a.preferred_life_time ?? a.valid_life_time));
  }
  return args;
}

/** The VRF device `name` among `links` with its table; undefined when there is no such link. */
function vrfOf(links: LinkInfo[], name: string): { link: LinkInfo; table: number } | undefined {
  const link = links.find((l) => l.ifname === name);
  if (!link) return undefined;
  if (link.linkinfo?.info_kind !== "vrf") {
    throw new CniError(ErrorCode.invalidNetworkConfig, `Netlink ${name} is not a VRF`);
  }
  return { link, table: Number(link.linkinfo.info_data?.table ?? 0) };
}

/** The lowest table from 1 on that no VRF of the namespace uses, as the reference picks it. */
function freeTable(links: LinkInfo[]): number {
  const taken = new Set(
    links.filter((l) => l.linkinfo?.info_kind === "vrf").map((l) =>
      Number(l.linkinfo!.info_data?.table)
    ),
  );
  let table = 1;
  while (taken.has(table)) table++;
  return table;
}

const sameAddress = (a: Address) => (b: Address) =>
  b.local === a.local && b.prefixlen === a.prefixlen;

/**
 * Enslaves `ifname` to the VRF (made first when missing), re-adds the
 * global IPv6 addresses that enslaving dropped (the interface goes down and
 * up) and waits for their DAD, then puts the interface's routes of global
 * scope from the main table into the VRF's table. Every step is undone on a
 * later failure, the interface's main routes and addresses put back.
 */
async function join(
  netns: string,
  ifname: string,
  conf: { vrfname: string; table: number },
  rollback: Rollback,
): Promise<void> {
  const [links, routes] = await ipBatch([["addr", "show"], SHOW_ALL_ROUTES], {
    netns,
    flags: ["-d"],
  }) as [LinkInfo[], RouteInfo[]];
  const vrf = vrfOf(links, conf.vrfname);
  if (vrf && conf.table !== 0 && vrf.table !== conf.table) {
    throw invalidConfig(
      `VRF ${conf.vrfname} already exist with different routing table ${vrf.table}`,
    );
  }
  const iface = links.find((l) => l.ifname === ifname);
  if (!iface) throw new CniError(ErrorCode.ioFailure, `could not get link by name ${ifname}`);
  if (iface.master) {
    throw new CniError(
      ErrorCode.internal,
      `interface ${ifname} has already a master set: ${iface.master}`,
    );
  }
  const table = vrf?.table ?? (conf.table || freeTable(links));
  const v6 = (iface.addr_info ?? []).filter((a) =>
    a.family === "inet6" && a.scope === "global"
  ) as Address[];
  const main = routes.filter((r) => r.dev === ifname && r.table === "main");
  const moving = main.filter((r) => r.scope === "global");

  // Registered first so that it runs last: once the interface is out of
  // the VRF again (down and up once more, which flushed its IPv4 routes),
  // its addresses and main routes go back, the link-scope ones before the
  // routes whose gateways they reach.
  const scoped = (r: RouteInfo) => (r.scope === "global" ? 1 : 0);
  rollback.defer("main routes and addresses of the interface", () =>
    ipBatch([
      ...v6.map((a) => ["addr", "replace", ...addrArgs(a, ifname)]),
      ...main.toSorted((a, b) => scoped(a) - scoped(b))
        .map((r) => ["route", "replace", ...routeArgs(r, "main")]),
    ], { netns, force: true }));

  const toTable: IpStep[] = moving.map((r) => ({
    run: ["route", "replace", ...routeArgs(r, table)],
    undo: ["route", "del", ...routeArgs(r, table)],
  }));
  const enslave: IpStep[] = [
    ...(vrf ? [] : [
      {
        run: ["link", "add", conf.vrfname, "type", "vrf", "table", String(table)],
        undo: ["link", "del", conf.vrfname],
      },
      { run: ["link", "set", conf.vrfname, "up"] },
    ]),
    {
      run: ["link", "set", ifname, "master", conf.vrfname],
      undo: ["link", "set", ifname, "nomaster"],
    },
  ];
  if (!v6.length) {
    // Nothing enslaving can drop: one batch does it all.
    await ipSteps([...enslave, ...toTable], rollback, { netns });
    return;
  }
  const shown = await ipSteps([...enslave, { run: ["addr", "show", "dev", ifname] }], rollback, {
    netns,
  });
  const kept = ((shown.at(-1) as LinkInfo[])[0]?.addr_info ?? []) as Address[];
  const lost = v6.filter((a) => !kept.some(sameAddress(a)));
  await ipSteps(
    [
      ...lost.map((a) => ({
        run: ["addr", "add", ...addrArgs(a, ifname)],
        undo: ["addr", "del", `${a.local}/${a.prefixlen}`, "dev", ifname],
      })),
      ...(lost.length ? [] : toTable),
    ],
    rollback,
    { netns },
  );
  if (!lost.length) return;
  const readded = lost.flatMap((a) => parseIP(a.local) ?? []) as IP[];
  await settleAddresses(netns, ifname, 5000, readded);
  await ipSteps(toTable, rollback, { netns });
}

async function add(args: CmdArgs): Promise<Result> {
  const conf = loadConf(args);
  const prev = requirePrev(args);
  requireNetns(args.netns);
  await withNetnsLock(
    args.netns,
    () => withRollback((rollback) => join(args.netns, args.ifname, conf, rollback)),
  );
  return prev;
}

/**
 * Takes the interface out of the VRF and removes the VRF once nothing is
 * in it. Never fails for what is gone: the namespace, the VRF, the
 * interface (plugins#1282: a failing DEL stops the rest of the chain's).
 */
async function del(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  if (!args.netns || !netnsExists(args.netns)) return;
  await withNetnsLock(args.netns, async () => {
    const [links] = await ipBatch([["link", "show"]], {
      netns: args.netns,
      flags: ["-d"],
    }) as [LinkInfo[]];
    const vrf = links.find((l) => l.ifname === conf.vrfname);
    if (vrf?.linkinfo?.info_kind !== "vrf") return;
    const members = links.filter((l) => l.master === conf.vrfname);
    const commands: IpCommand[] = [];
    if (members.some((l) => l.ifname === args.ifname)) {
      commands.push(["link", "set", args.ifname, "nomaster"]);
    }
    if (members.every((l) => l.ifname === args.ifname)) {
      commands.push(["link", "del", conf.vrfname]);
    }
    try {
      await ipBatch(commands, { netns: args.netns, force: true });
    } catch (e) {
      // Gone meanwhile (the namespace being torn down): what DEL wanted.
      if (!(e instanceof IpBatchError && /Cannot find device|does not exist/.test(e.said))) {
        throw e;
      }
    }
  });
}

async function check(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  requirePrev(args);
  requireNetns(args.netns);
  const [links] = await ipBatch([["link", "show"]], {
    netns: args.netns,
    flags: ["-d"],
  }) as [LinkInfo[]];
  if (!vrfOf(links, conf.vrfname)) checkFailed(`VRF ${conf.vrfname}: Link not found`);
  if (!links.some((l) => l.ifname === args.ifname && l.master === conf.vrfname)) {
    checkFailed(`failed to find ${args.ifname} associated to vrf ${conf.vrfname}`);
  }
}

/** STATUS: the `ip` tool must be at hand. */
function status(): Promise<void> {
  return requireTools("ip");
}

/** The vrf plugin; spec 0.3.1 and later, as the reference. GC has nothing to collect. */
export const vrf: Plugin = {
  name: "vrf",
  versions: versionsFrom("0.3.1"),
  add,
  del,
  check,
  status,
};
