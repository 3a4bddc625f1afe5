/**
 * sbr: source-based routing for a container interface that a main plugin
 * made. Each of the interface's IPs gets a policy rule `from <ip> lookup N`
 * and a table N of its own with the default route via its gateway and the
 * interface's routes, which leave the main table; so replies leave through
 * the interface their source address belongs to. With `table` only the
 * rules are made, to a table the admin fills.
 *
 * The namespace's file is locked (flock) while its rules and routes are
 * read and changed, as the reference does. One `ip` process reads what is
 * there (a second for the IPv6 rules, in parallel), one changes it (a
 * second for the IPv6 rules, which `ip` takes only with `-6`).
 * @module
 */

import * as z from "zod/mini";
import { GoInt, goList, goStruct, NETCONF_FIELDS, parseConf } from "../../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig } from "../../../lib/cni/errors.ts";
import {
  contains,
  formatCIDR,
  formatIP,
  hostPrefix,
  type IP,
  type IPNet,
  networkOf,
  parseCIDR,
  parseGoIP,
  parseIP,
} from "../../../lib/cni/ipnet.ts";
import { type Rollback, withRollback } from "../../../lib/cni/rollback.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";
import { requireTools } from "../../../lib/net/exec.ts";
import { ipBatch, IpBatchError, type IpStep, ipSteps, type LinkInfo } from "../../../lib/net/ip.ts";
import { netnsExists, requireNetns, withNetnsLock } from "../../../lib/net/netns.ts";
import {
  routeArgs,
  type RouteInfo,
  type RuleInfo,
  SHOW_ALL_ROUTES,
  tableNumber,
} from "../../../lib/net/route.ts";

/** Where the search for free tables starts, as in the reference. */
const FIRST_TABLE = 100;

const SbrConf = goStruct({
  ...NETCONF_FIELDS,
  table: z.optional(GoInt),
  gateways: goList(z.string()),
  addSourceHints: z.optional(z.boolean()),
});
type SbrConf = z.infer<typeof SbrConf>;

/** An IP of the interface: its address with prefix, and its gateway. */
interface SourceIP {
  net: IPNet;
  gateway: IP | undefined;
}

/**
 * The prevResult's IPs of `ifname`: those whose interface is `ifname`, and
 * those that name no interface (or an index past the list), as the
 * reference takes them.
 */
function sourceIPs(prev: Result, ifname: string): SourceIP[] {
  const ips = prev.ips ?? [];
  if (!ips.length) throw invalidConfig(`No IP addresses supplied on interface: ${ifname}`);
  const interfaces = prev.interfaces ?? [];
  return ips.filter((ip) =>
    ip.interface === undefined || ip.interface >= interfaces.length ||
    interfaces[ip.interface]!.name === ifname
  ).map((ip) => {
    const gw = ip.gateway ? parseIP(ip.gateway) : null;
    return { net: parseCIDR(ip.address)!, gateway: gw ?? undefined };
  });
}

/** The static `gateways`: at most one per family. */
function staticGateways(list: string[]): Partial<Record<4 | 6, IP>> {
  if (list.length > 2) {
    throw invalidConfig("gateways list cannot contain more than 2 entries (one IPv4, one IPv6)");
  }
  const out: Partial<Record<4 | 6, IP>> = {};
  for (const text of list) {
    const ip = parseGoIP(text);
    if (!ip) throw invalidConfig(`invalid static gateway IP address: ${text}`);
    const seen = out[ip.family];
    if (seen) {
      throw invalidConfig(
        `gateways list contains multiple IPv${ip.family} addresses: ${formatIP(seen)} and ${text}`,
      );
    }
    out[ip.family] = ip;
  }
  return out;
}

function loadConf(args: CmdArgs): SbrConf {
  return parseConf(SbrConf, args.config);
}

/** `from <ip>/32` (or /128) as a rule selector. */
function fromIP(ip: IP): string[] {
  return ["from", formatCIDR(hostPrefix(ip))];
}

/** The rule steps of `ips` into `tables` (one table for all, or one each), per family. */
function ruleSteps(ips: SourceIP[], tables: number[]): Record<4 | 6, IpStep[]> {
  const out: Record<4 | 6, IpStep[]> = { 4: [], 6: [] };
  ips.forEach(({ net }, i) => {
    const rule = [...fromIP(net.ip), "table", String(tables[i] ?? tables[0])];
    out[net.ip.family].push({ run: ["rule", "add", ...rule], undo: ["rule", "del", ...rule] });
  });
  return out;
}

/**
 * Runs the IPv4-or-any batch and the IPv6 rule batch (`ip` parses a rule's
 * address only in the family of `-6`) side by side; what took effect is
 * undone on `rollback` when either fails.
 */
async function applySteps(
  netns: string,
  steps: IpStep[],
  rules6: IpStep[],
  rollback: Rollback,
): Promise<void> {
  const settled = await Promise.allSettled([
    steps.length ? ipSteps(steps, rollback, { netns }) : undefined,
    rules6.length ? ipSteps(rules6, rollback, { netns, flags: ["-6"] }) : undefined,
  ]);
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

/** What a namespace has: the link, every route, every rule of both families. */
interface Snapshot {
  link: LinkInfo;
  routes: RouteInfo[];
  rules: RuleInfo[];
}

async function snapshot(netns: string, ifname: string): Promise<Snapshot> {
  const [main, rules6] = await Promise.allSettled([
    ipBatch([["addr", "show", "dev", ifname], SHOW_ALL_ROUTES, ["rule", "show"]], {
      netns,
      flags: ["-d"],
    }),
    ipBatch([["rule", "show"]], { netns, flags: ["-6"] }),
  ]);
  if (main.status === "rejected") {
    const e = main.reason;
    if (e instanceof IpBatchError && e.line === 1) {
      throw new CniError(
        ErrorCode.ioFailure,
        `Cannot find network interface ${ifname}: ${e.said}`,
        e.details,
      );
    }
    throw e;
  }
  if (rules6.status === "rejected") throw rules6.reason;
  const [[link], routes, rules] = main.value as [LinkInfo[], RouteInfo[], RuleInfo[]];
  return {
    link: link!,
    routes,
    rules: [...rules, ...(rules6.value[0] as RuleInfo[])],
  };
}

/** The first table from `from` on that no rule or route uses and that is not `taken`. */
function freeTable(from: number, used: Set<number>): number {
  let table = from;
  while (used.has(table)) table++;
  return table;
}

function addressOf(route: RouteInfo, key: "prefsrc" | "gateway"): IP | null {
  const text = route[key];
  return text ? parseIP(text) : null;
}

/**
 * The per-IP tables: rule, default route via the gateway (the static one of
 * its family first), the interface's routes that belong to the IP (source
 * or gateway in its subnet, or neither set) copied; then the interface's
 * routes leave the main table, or, with `addSourceHints`, the subnet routes
 * there get the IP as source hint and only the others leave.
 */
async function routeBySource(
  args: CmdArgs,
  ips: SourceIP[],
  gateways: Partial<Record<4 | 6, IP>>,
  sourceHints: boolean,
  rollback: Rollback,
): Promise<void> {
  const { routes, rules } = await snapshot(args.netns, args.ifname);
  const used = new Set([
    ...routes.map((r) => tableNumber(r.table)),
    ...rules.flatMap((r) => (r.table === undefined ? [] : [tableNumber(r.table)])),
  ]);
  const linkRoutes = routes.filter((r) => r.dev === args.ifname && r.table === "main");
  const tables: number[] = [];
  let next = FIRST_TABLE;
  for (let i = 0; i < ips.length; i++) {
    next = freeTable(next, used);
    tables.push(next);
    used.add(next);
  }
  const rulesByFamily = ruleSteps(ips, tables);
  const steps: IpStep[] = [...rulesByFamily[4]];
  ips.forEach(({ net, gateway }, i) => {
    const table = String(tables[i]);
    const gw = gateways[net.ip.family] ?? gateway;
    if (gw) {
      const route = [
        net.ip.family === 4 ? "0.0.0.0/0" : "::/0",
        "via",
        formatIP(gw),
        "dev",
        args.ifname,
        "table",
        table,
      ];
      steps.push({ run: ["route", "add", ...route], undo: ["route", "del", ...route] });
    }
    for (const route of linkRoutes) {
      const src = addressOf(route, "prefsrc");
      const via = addressOf(route, "gateway");
      const generic = !route.prefsrc && !route.gateway && !route.via;
      if ((src && contains(net, src)) || (via && contains(net, via)) || generic) {
        const copy = routeArgs(route, table);
        // replace: the default route just made may be the same route.
        steps.push({ run: ["route", "replace", ...copy], undo: ["route", "del", ...copy] });
      }
    }
  });
  const leaving = sourceHints ? linkRoutes.filter((r) => r.scope !== "link") : linkRoutes;
  if (!sourceHints) {
    // Only now: two IPs of one subnet both need the routes while they are copied.
    for (const route of leaving) {
      const main = routeArgs(route, "main");
      steps.push({ run: ["route", "del", ...main], undo: ["route", "add", ...main] });
    }
  }
  await applySteps(args.netns, steps, rulesByFamily[6], rollback);
  if (sourceHints) await addSourceHints(args, ips, leaving);
}

/**
 * The reference's `addSourceHints`, as best effort as there: the subnet
 * route of each IP in the main table with the IP as source, then the
 * interface's other routes out of the main table; a failure is a warning.
 */
async function addSourceHints(args: CmdArgs, ips: SourceIP[], leaving: RouteInfo[]) {
  const commands = [
    ...ips.map(({ net }) => [
      "route",
      "replace",
      formatCIDR(networkOf(net)),
      "dev",
      args.ifname,
      "src",
      formatIP(net.ip),
      "scope",
      "link",
      "table",
      "main",
    ]),
    ...leaving.map((route) => ["route", "del", ...routeArgs(route, "main")]),
  ];
  try {
    await ipBatch(commands, { netns: args.netns, force: true });
  } catch (e) {
    console.error(`sbr: addSourceHints: ${(e as Error).message}`);
  }
}

async function add(args: CmdArgs): Promise<Result> {
  const conf = loadConf(args);
  const prev = args.prevResult;
  if (!prev) throw invalidConfig("This plugin must be called as chained plugin");
  const ips = sourceIPs(prev, args.ifname);
  const table = conf.table;
  // Only the table-per-IP mode uses the gateways, so only it checks them.
  const gateways = table === undefined ? staticGateways(conf.gateways ?? []) : {};
  requireNetns(args.netns);
  await withNetnsLock(args.netns, () =>
    withRollback(async (rollback) => {
      if (table === undefined) {
        await routeBySource(args, ips, gateways, !!conf.addSourceHints, rollback);
      } else {
        const rules = ruleSteps(ips, [table]);
        await applySteps(args.netns, rules[4], rules[6], rollback);
      }
    }));
  return prev;
}

/**
 * Removes the rules whose source is an address of the interface (only
 * those to `table` when it is set). A namespace or interface that is gone
 * took its rules' meaning with it: success.
 */
async function del(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  if (!args.netns || !netnsExists(args.netns)) return;
  await withNetnsLock(args.netns, async () => {
    let found: [LinkInfo[], RuleInfo[]];
    let rules6: RuleInfo[];
    try {
      [found, [rules6]] = await Promise.all([
        ipBatch([["addr", "show", "dev", args.ifname], ["rule", "show"]], {
          netns: args.netns,
        }) as Promise<[LinkInfo[], RuleInfo[]]>,
        ipBatch([["rule", "show"]], { netns: args.netns, flags: ["-6"] }) as Promise<
          [RuleInfo[]]
        >,
      ]);
    } catch (e) {
      if (e instanceof IpBatchError && e.line === 1 && /does not exist/.test(e.said)) return;
      throw e;
    }
    const [[link], rules4] = found;
    const mine = (addresses: IP[]) => (rule: RuleInfo) => {
      if (conf.table !== undefined && tableNumber(rule.table) !== conf.table) return false;
      const src = rule.src === "all" ? null : parseIP(rule.src);
      return !!src && addresses.some((a) => a.family === src.family && a.value === src.value);
    };
    const addresses = (link?.addr_info ?? []).flatMap((a) => parseIP(a.local) ?? []);
    const ruleDel = (r: RuleInfo) => {
      const len = r.srclen ?? (r.src.includes(":") ? 128 : 32);
      return ["rule", "del", "priority", String(r.priority), "from", `${r.src}/${len}`].concat(
        r.table === undefined ? [] : ["table", r.table],
      );
    };
    const deletions = [
      ipBatch(rules4.filter(mine(addresses)).map(ruleDel), { netns: args.netns, force: true }),
      ipBatch(rules6.filter(mine(addresses)).map(ruleDel), {
        netns: args.netns,
        force: true,
        flags: ["-6"],
      }),
    ];
    const failed = (await Promise.allSettled(deletions)).find((s) => s.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
  });
}

/** CHECK is a success without looking, as in the reference. */
function check(): Promise<void> {
  return Promise.resolve();
}

/** STATUS: the `ip` tool must be at hand. */
function status(): Promise<void> {
  return requireTools("ip");
}

/** The sbr plugin. GC has nothing to collect: every rule lives in its container's namespace. */
export const sbr: Plugin = { name: "sbr", add, del, check, status };
