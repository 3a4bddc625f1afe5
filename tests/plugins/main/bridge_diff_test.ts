/**
 * cnikit's bridge against Debian's reference build (v1.1.1) for the options
 * that build has: the same config in two identical fake hosts gives results
 * that are equal once random names and MACs are replaced by their roles, and
 * equivalent kernel state; an attachment made by one is removed completely
 * by the other.
 */

import { assert, assertEquals, assertMatch, assertNotEquals } from "../../helpers/assert.ts";
import {
  assertSuccess,
  haveReference,
  type PluginRun,
  REFERENCE_BIN,
  withPrev,
} from "../../helpers/applet.ts";
import { withTempDir } from "../../helpers/tempdir.ts";
import { type Families, hostLocal, leases } from "../../helpers/ipam.ts";
import {
  addresses,
  iptablesMasq,
  type LinkJ,
  links,
  routes,
  sysctl,
  veths,
} from "../../helpers/kernel.ts";
import {
  assertNothingLeft,
  bridge,
  bridgeConf,
  bridgeName,
  portFlag,
  spoofCheck,
} from "../../helpers/bridge.ts";
import { canNetns, TestNetns, waitFor, withDataDirAndNamespaces } from "../../helpers/netns.ts";

const ready = !canNetns || !haveReference;

/** Replaces every MAC and host veth name by a label in order of appearance, so equal values stay equal. */
class Labels {
  #seen = new Map<string, string>();
  #count = { mac: 0, veth: 0 };

  label(text: string): string {
    return text.replace(/\b(?:[0-9a-f]{2}:){5}[0-9a-f]{2}\b|\bveth[0-9a-f]{8}\b/g, (m) => {
      let l = this.#seen.get(m);
      if (!l) {
        const kind = m.startsWith("veth") ? "veth" : "mac";
        l = `<${kind}${++this.#count[kind]}>`;
        this.#seen.set(m, l);
      }
      return l;
    });
  }
}

/** A result with random names, MACs and the sandbox path replaced, and an empty dns dropped. */
function normalizeResult(run: PluginRun, labels: Labels, sandbox: string): unknown {
  const json = structuredClone(run.json!) as Record<string, unknown>;
  const dns = json.dns as Record<string, unknown> | undefined;
  // libcni 1.x prints `"dns": {}`; cnikit leaves an empty dns out of 1.x results.
  if (dns && Object.keys(dns).length === 0) delete json.dns;
  return JSON.parse(labels.label(JSON.stringify(json)).replaceAll(sandbox, "<sandbox>"));
}

function linkState(l: LinkJ): Record<string, unknown> {
  return {
    name: l.ifname,
    mac: l.address,
    kind: l.linkinfo?.info_kind,
    up: l.flags.includes("UP"),
    promisc: l.flags.includes("PROMISC"),
    mtu: l.mtu,
    master: l.master,
    addresses: addresses(l),
    ...(l.linkinfo?.info_kind === "bridge"
      ? { vlanFiltering: l.linkinfo.info_data?.vlan_filtering }
      : {}),
    ...(l.master ? { hairpin: portFlag(l, "hairpin"), isolated: portFlag(l, "isolated") } : {}),
  };
}

/** What one side's kernel looks like, labelled. */
async function kernelState(
  host: TestNetns,
  ctr: TestNetns,
  labels: Labels,
): Promise<Record<string, unknown>> {
  const hostLinks = (await links(host)).sort((a, b) =>
    (a.linkinfo?.info_kind ?? "").localeCompare(b.linkinfo?.info_kind ?? "")
  );
  const ctrLinks = await links(ctr);
  const state = {
    host: hostLinks.map(linkState),
    hostSysctls: [
      await sysctl(host, "net/ipv4/ip_forward"),
      await sysctl(host, "net/ipv6/conf/all/forwarding"),
      ...await Promise.all(
        hostLinks.map((l) => sysctl(host, `net/ipv6/conf/${l.ifname}/accept_ra`)),
      ),
    ],
    container: ctrLinks.map(linkState),
    containerRoutes: await routes(ctr),
    containerSysctls: await Promise.all(
      ctrLinks.flatMap((l) =>
        [
          `net/ipv6/conf/${l.ifname}/accept_dad`,
          `net/ipv6/conf/${l.ifname}/enhanced_dad`,
          `net/ipv4/conf/${l.ifname}/arp_notify`,
        ].map((k) => sysctl(ctr, k))
      ),
    ),
    masquerade: (await iptablesMasq(host)).sort(),
    spoofCheck: await spoofCheck(host),
  };
  return JSON.parse(labels.label(JSON.stringify(state)));
}

interface Side {
  host: TestNetns;
  ctr: TestNetns;
  bin?: string;
  dataDir: string;
}

/** Runs ADD, CHECK (0.4.0+), DEL on both sides and compares results and kernels at each step. */
async function compare(
  version: string,
  make: (dataDir: string, bridge: string) => Record<string, unknown>,
  opts: { args?: string; checkDiffers?: boolean } = {},
): Promise<void> {
  await withTempDir((dirA) =>
    withDataDirAndNamespaces(3, async (dirB, hostA, ctrA, hostB) => {
      const ctrB = await TestNetns.create("ckc");
      try {
        const br = bridgeName();
        const sides: Side[] = [
          { host: hostA, ctr: ctrA, dataDir: dirA },
          { host: hostB, ctr: ctrB, bin: REFERENCE_BIN, dataDir: dirB },
        ];
        const run = (s: Side, command: string, conf: Record<string, unknown>) =>
          bridge(
            command,
            s.host,
            {
              netns: s.ctr.path,
              ...(opts.args ? { args: opts.args } : {}),
            },
            conf,
            s.bin,
          );
        const confs = sides.map((s) => make(s.dataDir, br));
        const adds = await Promise.all(sides.map((s, i) => run(s, "ADD", confs[i]!)));
        const labels = sides.map(() => new Labels());
        const results = adds.map((a, i) => normalizeResult(a, labels[i]!, sides[i]!.ctr.path));
        assertEquals(adds.map((a) => a.code), [0, 0], adds.map((a) => a.stdout).join("\n"));
        assertEquals(results[0], results[1]);
        const states = await Promise.all(
          sides.map((s, i) => kernelState(s.host, s.ctr, labels[i]!)),
        );
        assertEquals(states[0], states[1]);
        if (version >= "0.4.0") {
          const checks = await Promise.all(
            sides.map((s, i) => run(s, "CHECK", withPrev(confs[i]!, adds[i]!))),
          );
          if (opts.checkDiffers) {
            assertEquals(checks[0]!.code, 0, checks[0]!.stdout);
            assertNotEquals(checks[1]!.code, 0);
          } else {
            assertEquals(checks.map((c) => c.code), [0, 0], checks.map((c) => c.stdout).join());
          }
        }
        for (let i = 0; i < 2; i++) {
          const dels = await Promise.all(sides.map((s, j) => run(s, "DEL", confs[j]!)));
          assertEquals(dels.map((d) => d.code), [0, 0], dels.map((d) => d.stdout).join());
          const after = await Promise.all(
            sides.map((s, j) => kernelState(s.host, s.ctr, labels[j]!)),
          );
          assertEquals(after[0], after[1]);
        }
        for (const s of sides) await assertNothingLeft(s.host, [s.ctr], s.dataDir);
      } finally {
        await ctrB.remove();
      }
    })
  );
}

const l3 = (families: Families, extra: Record<string, unknown> = {}) =>
(
  version: string,
) =>
(dataDir: string, br: string) => bridgeConf(version, br, hostLocal(families, dataDir), extra);

const SCENARIOS: [
  string,
  string[],
  ReturnType<typeof l3>,
  { args?: string; checkDiffers?: boolean }?,
][] = [
  [
    "v4 gateway + masquerade",
    ["0.2.0", "0.3.1", "0.4.0", "1.0.0"],
    l3("v4", { isGateway: true, ipMasq: true }),
  ],
  ["v6 gateway", ["0.4.0", "1.0.0"], l3("v6", { isGateway: true })],
  [
    "dual-stack default gateway + masquerade",
    ["0.3.1", "1.0.0"],
    l3("dual", { isDefaultGateway: true, ipMasq: true }),
  ],
  ["no gateway", ["1.0.0"], l3("v4")],
  ["hairpin, MTU 1400", ["1.0.0"], l3("v4", { hairpinMode: true, mtu: 1400, isGateway: true })],
  ["promiscuous bridge", ["1.0.0"], l3("v4", { promiscMode: true })],
  ["enabledad", ["1.0.0"], l3("v6", { enabledad: true })],
  ["macspoofchk", ["1.0.0"], l3("v4", { macspoofchk: true, isGateway: true })],
  [
    "MAC from runtimeConfig over args",
    ["1.0.0"],
    l3("v4", {
      capabilities: { mac: true },
      args: { cni: { mac: "0a:58:0a:58:00:02" } },
      runtimeConfig: { mac: "0a:58:0a:58:00:03" },
    }),
  ],
  ["MAC from CNI_ARGS", ["0.4.0"], l3("v4"), { args: "IgnoreUnknown=1;MAC=0a:58:0a:58:00:04" }],
  [
    "L2 (CHECK: cnikit passes, the reference fails)",
    ["0.4.0", "1.0.0"],
    (version) => (_dataDir, br) => bridgeConf(version, br, {}),
    { checkDiffers: true },
  ],
];

for (const [what, versions, make, opts] of SCENARIOS) {
  for (const version of versions) {
    Deno.test({
      name: `bridge vs reference: ${what} (cniVersion ${version})`,
      ignore: ready,
      fn: () => compare(version, make(version), opts),
    });
  }
}

Deno.test({
  name: "bridge vs reference: the lab-br0 example gives the same result",
  ignore: ready,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, ctrA, ctrB) => {
      const conf = JSON.parse(
        await Deno.readTextFile(new URL("../../../examples/lab-br0.conf", import.meta.url)),
      );
      conf.ipam.dataDir = dataDir;
      const a = await bridge("ADD", host, { netns: ctrA.path, containerId: "a" }, conf);
      const b = await bridge(
        "ADD",
        host,
        { netns: ctrB.path, containerId: "b" },
        conf,
        REFERENCE_BIN,
      );
      assertEquals([a.code, b.code], [0, 0], a.stdout + b.stdout);
      // Both ignore the keys outside ipam; only cnikit says so.
      assertMatch(
        a.stderr,
        /ignoring unknown top-level config keys: routes, rangeStart, rangeEnd, gateway/,
      );
      assertEquals(b.stderr, "");
      const ips = (r: PluginRun) => r.json!.ips;
      assertEquals(ips(a), [{
        version: "4",
        interface: 2,
        address: "10.15.10.2/24",
        gateway: "10.15.10.1",
      }]);
      assertEquals(ips(b), [{
        version: "4",
        interface: 2,
        address: "10.15.10.3/24",
        gateway: "10.15.10.1",
      }]);
      assertEquals([a.json!.routes, b.json!.routes], [undefined, undefined]);
      assertEquals(await routes(ctrA), await routes(ctrB));
      assertSuccess(await bridge("DEL", host, { netns: ctrA.path, containerId: "a" }, conf));
      assertEquals(
        (await bridge("DEL", host, { netns: ctrB.path, containerId: "b" }, conf, REFERENCE_BIN))
          .code,
        0,
      );
      await assertNothingLeft(host, [ctrA, ctrB], dataDir);
    }),
});

Deno.test({
  name: "bridge vs reference: the same invalid options are refused with the same words",
  ignore: ready,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const bad: Record<string, unknown>[] = [
        { vlan: 5000 },
        { vlan: -1 },
        { hairpinMode: true, promiscMode: true },
      ];
      for (const extra of bad) {
        const conf = bridgeConf("1.0.0", bridgeName(), hostLocal("v4", dataDir), extra);
        const [mine, ref] = [
          await bridge("ADD", host, { netns: ctr.path }, conf),
          await bridge("ADD", host, { netns: ctr.path }, conf, REFERENCE_BIN),
        ];
        assertEquals([mine.code, ref.code], [1, 1]);
        // v1.1.1 still ended one of them with a full stop.
        assertEquals(mine.json!.msg, (ref.json!.msg as string).replace(/\.$/, ""));
        // The reference reports every failure as 999; cnikit says invalid config.
        assertEquals([mine.json!.code, ref.json!.code], [7, 999]);
      }
      await assertNothingLeft(host, [ctr], dataDir);
      // A bridge address in the way: the same words after the prefix.
      const br = bridgeName();
      await host.exec("ip", ["link", "add", br, "type", "bridge"]);
      await host.exec("ip", ["addr", "add", "10.99.0.1/24", "dev", br]);
      const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), { isGateway: true });
      const mine = await bridge("ADD", host, { netns: ctr.path }, conf);
      const ref = await bridge("ADD", host, { netns: ctr.path }, conf, REFERENCE_BIN);
      const words =
        `failed to set bridge addr: "${br}" already has an IP address different from 10.88.0.1/24`;
      assertEquals([mine.json!.msg, ref.json!.msg], [words, words]);
      // Both release the lease; the reference leaves its veth pair behind, cnikit nothing.
      assertEquals(await leases(dataDir), []);
      assertEquals((await links(ctr)).map((l) => l.ifname), ["eth0"]);
    }),
});

/** ADD by one implementation, DEL by the other: nothing may be left. */
for (const [adder, deleter] of [["reference", "cnikit"], ["cnikit", "reference"]] as const) {
  for (const netnsAtDel of ["present", "gone"] as const) {
    if (deleter === "reference" && netnsAtDel === "gone") continue;
    Deno.test({
      name: `bridge ADD by ${adder}, DEL by ${deleter} (netns ${netnsAtDel}) leaves nothing`,
      ignore: ready,
      fn: () =>
        withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
          const bin = (who: string) => (who === "reference" ? REFERENCE_BIN : undefined);
          const conf = bridgeConf("1.0.0", bridgeName(), hostLocal("dual", dataDir), {
            isGateway: true,
            ipMasq: true,
            macspoofchk: true,
          });
          const at = { netns: ctr.path };
          const add = assertSuccess(await bridge("ADD", host, at, conf, bin(adder)));
          assert((await iptablesMasq(host)).length > 0);
          assert((await spoofCheck(host)).rules.length > 0);
          assertEquals((await leases(dataDir)).length, 2);
          // Each CHECKs the other's attachment.
          assertSuccess(
            await bridge("CHECK", host, at, withPrev(conf, add), bin(deleter)),
          );
          if (netnsAtDel === "gone") {
            await ctr.remove();
            // The kernel tears a namespace down in the background.
            await waitFor(async () => (await veths(host)).length === 0, "the host veth to go");
          }
          assertSuccess(await bridge("DEL", host, at, conf, bin(deleter)));
          await assertNothingLeft(host, netnsAtDel === "gone" ? [] : [ctr], dataDir);
        }),
    });
  }
}
