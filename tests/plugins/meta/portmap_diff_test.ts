/**
 * portmap against Debian's reference plugin (v1.1.1, iptables only): the
 * same config leaves the same nat tables in both families, on every option
 * v1.1.1 knows; and rules made by one are removed by the other's DEL.
 * v1.1.1's own CHECK fails for every container (an IPv4-only one:
 * plugins#819; a dual-stack one: it looks for the IPv4 rules in ip6tables),
 * so only cnikit's CHECK is asked, of both sides' rules.
 * @module
 */

import { assertEquals } from "../../helpers/assert.ts";
import { assertSuccess, haveReference, REFERENCE_BIN } from "../../helpers/applet.ts";
import { canNetns, type TestNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import {
  dnatChains,
  type Mapping,
  natTables,
  portmap,
  portmapConf,
} from "../../helpers/portmap.ts";
import { ptp, ptpConf } from "../../helpers/ptp.ts";

const MAPPINGS: Mapping[] = [
  { hostPort: 8080, containerPort: 80, protocol: "tcp" },
  { hostPort: 8081, containerPort: 81, protocol: "tcp" },
  { hostPort: 5353, containerPort: 53, protocol: "udp" },
  { hostPort: 3868, containerPort: 3868, protocol: "sctp" },
  { hostPort: 9090, containerPort: 90, protocol: "tcp", hostIP: "10.88.0.1" },
  { hostPort: 9091, containerPort: 91, protocol: "tcp", hostIP: "fd00:88::1" },
  { hostPort: 9092, containerPort: 92, protocol: "tcp", hostIP: "0.0.0.0" },
];
/** More than multiport takes in one rule (15). */
const MANY: Mapping[] = Array.from({ length: 20 }, (_, i) => ({
  hostPort: 10000 + i,
  containerPort: 80,
  protocol: "tcp",
}));

const CASES: [string, Mapping[], Record<string, unknown>][] = [
  ["defaults", MAPPINGS, {}],
  ["snat false", MAPPINGS, { snat: false }],
  ["markMasqBit 5", MAPPINGS, { markMasqBit: 5 }],
  ["externalSetMarkChain", MAPPINGS, { externalSetMarkChain: "KUBE-MARK-MASQ" }],
  ["conditionsV4/V6", MAPPINGS, {
    conditionsV4: ["-s", "192.0.2.0/24"],
    conditionsV6: ["!", "-s", "2001:db8::/32"],
  }],
  ["20 ports", MANY, {}],
];

async function setup(host: TestNetns, ctr: TestNetns, dataDir: string) {
  const at = { netns: ctr.path };
  const add = assertSuccess(await ptp("ADD", host, at, ptpConf("1.0.0", "dual", dataDir)));
  // The mark chain that externalSetMarkChain names exists on a Kubernetes node.
  for (const tool of ["iptables", "ip6tables"]) {
    await host.exec(tool, ["-t", "nat", "-N", "KUBE-MARK-MASQ"]);
  }
  return { at, add };
}

async function clean(host: TestNetns): Promise<void> {
  for (const tool of ["iptables", "ip6tables"]) {
    await host.exec(tool, ["-t", "nat", "-F"]);
    await host.exec(tool, ["-t", "nat", "-X"]);
    await host.exec(tool, ["-t", "nat", "-N", "KUBE-MARK-MASQ"]);
  }
}

for (const [what, mappings, extra] of CASES) {
  Deno.test({
    name: `portmap differential (${what}): the same nat tables as the reference, both families`,
    ignore: !canNetns || !haveReference,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { at, add } = await setup(host, ctr, dataDir);
        const conf = portmapConf("1.0.0", add, mappings, extra);
        const tables: Record<string, unknown> = {};
        for (const [who, bin] of [["reference", REFERENCE_BIN], ["cnikit", undefined]] as const) {
          assertSuccess(await portmap("ADD", host, at, conf, bin));
          tables[who] = await natTables(host);
          assertSuccess(await portmap("CHECK", host, at, conf));
          assertSuccess(await portmap("DEL", host, at, conf, bin));
          assertEquals(await dnatChains(host), []);
          await clean(host);
        }
        assertEquals(tables.cnikit, tables.reference);
      }),
  });
}

for (const [adder, deleter] of [["reference", "cnikit"], ["cnikit", "reference"]] as const) {
  Deno.test({
    name:
      `portmap: rules made by the ${adder} pass cnikit's CHECK and are removed by the ${deleter}`,
    ignore: !canNetns || !haveReference,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { at, add } = await setup(host, ctr, dataDir);
        const bin = (who: string) => (who === "reference" ? REFERENCE_BIN : undefined);
        const conf = portmapConf("1.0.0", add, MAPPINGS);
        assertSuccess(await portmap("ADD", host, at, conf, bin(adder)));
        assertSuccess(await portmap("CHECK", host, at, conf));
        assertSuccess(await portmap("DEL", host, at, conf, bin(deleter)));
        assertEquals(await dnatChains(host), []);
      }),
  });
}
