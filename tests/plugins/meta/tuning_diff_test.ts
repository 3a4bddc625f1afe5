/**
 * Differential: the same tuning config through Debian's reference tuning
 * (v1.1.1) and cnikit's, each on a fresh veth attachment; results, the
 * link, the sysctls and the backup file must match (random MACs aside), and
 * each must restore what the other changed.
 * @module
 */

import { assertEquals } from "../../helpers/assert.ts";
import { assertSuccess, haveReference, hostRunner, REFERENCE_BIN } from "../../helpers/applet.ts";
import { type LinkState, linkState, prevResultFor, vethAttachment } from "../../helpers/chained.ts";
import { sysctl } from "../../helpers/kernel.ts";
import { canNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";

const tuning = hostRunner("tuning");
const cannotRun = !canNetns || !haveReference;

/** What the reference v1.1.1 knows (no txQLen, which came in v1.4.0). */
const VARIANTS: [string, Record<string, unknown>][] = [
  ["mac promisc mtu allmulti", {
    mac: "c2:11:22:33:44:55",
    promisc: true,
    mtu: 1400,
    allmulti: true,
  }],
  ["sysctls", {
    sysctl: {
      "net.ipv4.conf.IFNAME.arp_filter": "1",
      "net/ipv4/conf/eth0/arp_ignore": "2",
      "net.ipv6.conf.eth0.accept_ra": "0",
    },
  }],
  ["args.cni over the config", {
    mtu: 1300,
    promisc: true,
    args: { cni: { mtu: 1280, mac: "c2:00:00:00:00:04", allmulti: false, promisc: false } },
  }],
  ["runtimeConfig.mac", { runtimeConfig: { mac: "c2:00:00:00:00:03" }, mac: "c2:00:00:00:00:01" }],
];

interface Snapshot {
  result: Record<string, unknown>;
  link: LinkState;
  sysctls: (string | undefined)[];
  backup: Record<string, unknown>;
  restored: boolean;
}

/** ADD (CHECK, DEL) with the tuning in `bin` (cnikit's when undefined) on a fresh attachment. */
async function runSide(
  version: string,
  extra: Record<string, unknown>,
  bin?: string,
): Promise<Snapshot> {
  let snap: Snapshot | undefined;
  await withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
    const veth = await vethAttachment(host, ctr, { subnet: 1 });
    const before = await linkState(ctr, "eth0");
    const conf = {
      cniVersion: version,
      name: "tunet",
      type: "tuning",
      dataDir,
      prevResult: prevResultFor(veth.result, version),
      ...extra,
    };
    const at = { netns: ctr.path };
    const add = assertSuccess(await tuning("ADD", host, at, conf, bin));
    const result = structuredClone(add.json!);
    const ifaces = result.interfaces as { name: string; mac?: string; sandbox?: string }[];
    ifaces[0]!.name = "HOSTVETH";
    ifaces[1]!.sandbox = "SANDBOX";
    ifaces[0]!.mac = "MAC";
    if (ifaces[1]!.mac === before.mac) ifaces[1]!.mac = "MAC";
    // v1.1.1 prints an empty `dns` in 1.x results; cnikit leaves it out.
    delete result.dns;
    const link = await linkState(ctr, "eth0");
    if (link.mac === before.mac) link.mac = "MAC";
    let backup: Record<string, unknown> = {};
    try {
      backup = JSON.parse(await Deno.readTextFile(`${dataDir}/ctr1_eth0.json`));
    } catch { /* no link attribute changed */ }
    delete backup.cnikitNetwork;
    if (backup.mac === before.mac) backup.mac = "MAC";
    // v1.1.1's CHECK does not substitute IFNAME (fixed in v1.3.0).
    const knownBug = bin === REFERENCE_BIN && JSON.stringify(extra).includes("IFNAME");
    if (version !== "0.3.1" && !knownBug) {
      assertSuccess(await tuning("CHECK", host, at, { ...conf, prevResult: add.json }, bin));
    }
    assertSuccess(await tuning("DEL", host, at, conf, bin));
    snap = {
      result,
      link,
      sysctls: await Promise.all(
        ["arp_filter", "arp_ignore"].map((k) => sysctl(ctr, `net/ipv4/conf/eth0/${k}`)),
      ),
      backup,
      restored: JSON.stringify(await linkState(ctr, "eth0")) === JSON.stringify(before),
    };
  });
  return snap!;
}

for (const version of ["0.3.1", "0.4.0", "1.0.0"]) {
  for (const [what, extra] of VARIANTS) {
    Deno.test({
      name: `tuning differential ${what} (cniVersion ${version}): same result, link, backup`,
      ignore: cannotRun,
      fn: async () => {
        const reference = await runSide(version, extra, REFERENCE_BIN);
        const cnikit = await runSide(version, extra);
        assertEquals(cnikit, reference);
        assertEquals(reference.restored, true);
      },
    });
  }
}

Deno.test({
  name: "tuning cross: each DEL restores what the other's ADD changed, each CHECK accepts it",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const veth = await vethAttachment(host, ctr);
      const before = await linkState(ctr, "eth0");
      const conf = {
        cniVersion: "1.0.0",
        name: "tunet",
        type: "tuning",
        dataDir,
        prevResult: prevResultFor(veth.result, "1.0.0"),
        mac: "c2:11:22:33:44:55",
        promisc: true,
        mtu: 1400,
        allmulti: true,
        sysctl: { "net.ipv4.conf.eth0.arp_filter": "1" },
      };
      const at = { netns: ctr.path };
      for (const [adder, other] of [[REFERENCE_BIN, undefined], [undefined, REFERENCE_BIN]]) {
        const add = assertSuccess(await tuning("ADD", host, at, conf, adder));
        assertSuccess(await tuning("CHECK", host, at, { ...conf, prevResult: add.json }, other));
        assertSuccess(await tuning("DEL", host, at, conf, other));
        assertEquals(await linkState(ctr, "eth0"), before);
      }
    }),
});
