/**
 * Names that a command-line parser can misread: interface names, bridge
 * names and netns paths with `#`, quotes, backslashes and blanks. The kernel
 * and the reference accept them all; cnikit must create, check and delete
 * exactly the named objects (an `ip -batch` line once read `e\0` as `e\\0`,
 * and DEL then left a live pair whose address was handed out again).
 * Each case runs through the reference first, to show it accepts the names.
 * @module
 */

import { assert, assertEquals } from "../../helpers/assert.ts";
import {
  assertSuccess,
  haveReference,
  type HostRunner,
  type PluginRun,
  REFERENCE_BIN,
  withPrev,
} from "../../helpers/applet.ts";
import { assertNothingLeft, bridge, bridgeConf } from "../../helpers/bridge.ts";
import { hostLocal, leases } from "../../helpers/ipam.ts";
import { addresses, link, veths } from "../../helpers/kernel.ts";
import {
  canNetns,
  sh,
  type TestNetns,
  uniqueName,
  withDataDirAndNamespaces,
} from "../../helpers/netns.ts";
import { ptp, ptpConf } from "../../helpers/ptp.ts";

const cannotRun = !canNetns || !haveReference;

interface Case {
  /** CNI_IFNAME. */
  ifname: string;
  /** The last part of a bind mount of the container's netns used as CNI_NETNS, if any. */
  netnsName?: string;
  /** A suffix of the bridge's name (bridge only). */
  bridgeSuffix?: string;
}

const CASES: Case[] = [
  { ifname: "e\\0" },
  { ifname: "e#0", bridgeSuffix: "#" },
  { ifname: 'e"0', bridgeSuffix: '"' },
  { ifname: "'e0", bridgeSuffix: "\\" },
  { ifname: "e\\", netnsName: "ns #1" },
  { ifname: `"e'`, netnsName: `a"b'c #d` },
];

/**
 * Runs `fn` with CNI_NETNS = a bind mount of `ctr` at a path ending in
 * `name` (or `ctr`'s own path when there is no name), unmounted afterwards.
 */
async function withNetnsPath(
  ctr: TestNetns,
  dir: string,
  name: string | undefined,
  fn: (path: string) => Promise<void>,
): Promise<void> {
  if (name === undefined) return await fn(ctr.path);
  const path = `${dir}/${name}`;
  await Deno.writeTextFile(path, "");
  await sh("mount", ["--bind", ctr.path, path]);
  try {
    await fn(path);
  } finally {
    await sh("umount", [path]);
  }
}

function hostVethOf(add: PluginRun, index: number): string {
  return (add.json!.interfaces as { name: string }[])[index]!.name;
}

for (const [plugin, runner] of [["bridge", bridge], ["ptp", ptp]] as [string, HostRunner][]) {
  for (const c of CASES) {
    for (const impl of ["reference", "cnikit"]) {
      const what = [
        `ifname ${JSON.stringify(c.ifname)}`,
        ...(c.netnsName ? [`netns path …/${JSON.stringify(c.netnsName)}`] : []),
        ...(plugin === "bridge" && c.bridgeSuffix ? [`bridge …${c.bridgeSuffix}`] : []),
      ].join(", ");
      Deno.test({
        name: `${plugin} (${impl}) ADD/CHECK/DEL with ${what} touches exactly the named objects`,
        ignore: cannotRun,
        fn: () =>
          withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
            const bin = impl === "reference" ? REFERENCE_BIN : undefined;
            const brName = uniqueName("ckb").slice(0, 14) + (c.bridgeSuffix ?? "");
            const conf = plugin === "bridge"
              ? bridgeConf("1.0.0", brName, hostLocal("v4", dataDir), { isGateway: true })
              : ptpConf("1.0.0", "v4", dataDir);
            await withNetnsPath(ctr, dataDir, c.netnsName, async (netns) => {
              const at = { netns, ifname: c.ifname };
              const add = assertSuccess(await runner("ADD", host, at, conf, bin));
              const eth = await link(ctr, c.ifname);
              assert(eth, `no link named ${JSON.stringify(c.ifname)} in the container`);
              const ips = (add.json!.ips as { address: string }[]).map((ip) => ip.address);
              assertEquals(addresses(eth).map((a) => a.replace(/ brd .*/, "")), ips);
              const hostVeth = hostVethOf(add, plugin === "bridge" ? 1 : 0);
              assert((await veths(host)).some((l) => l.ifname === hostVeth));
              if (plugin === "bridge") {
                const br = await link(host, brName);
                assertEquals(br?.linkinfo?.info_kind, "bridge", `bridge ${brName}`);
              }
              assertSuccess(await runner("CHECK", host, at, withPrev(conf, add), bin));
              assertSuccess(await runner("DEL", host, at, withPrev(conf, add), bin));
              await assertNothingLeft(host, [ctr], dataDir);
              assertEquals(await leases(dataDir), []);
            });
          }),
      });
    }
  }
}
