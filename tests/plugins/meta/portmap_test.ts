/**
 * portmap chained after ptp inside a fake host: ADD/CHECK/DEL/DEL per spec
 * version and backend against the kernel's state, DEL without mappings or
 * netns, CHECK of an IPv4-only container, repeated ADD, options, refused
 * configs, GC, STATUS and the backend auto-detection.
 * @module
 */

import { assert, assertEquals } from "../../helpers/assert.ts";
import {
  ALL_TEST_VERSIONS,
  assertSuccess,
  cniEnv,
  currentResult,
  DIST_BIN,
  haveReference,
  type PluginRun,
  runApplet,
} from "../../helpers/applet.ts";
import { sha512Hex } from "../../../lib/cni/hash.ts";
import { versionAtLeast } from "../../../lib/cni/spec/version.ts";
import { type Families } from "../../helpers/ipam.ts";
import { sysctl, veths } from "../../helpers/kernel.ts";
import { canNetns, TestNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import {
  cniNat,
  dnatChains,
  type Mapping,
  nftAttachmentRules,
  portmap,
  portmapConf,
  portmapLeftovers,
} from "../../helpers/portmap.ts";
import { ptp, ptpConf } from "../../helpers/ptp.ts";

const MAPPINGS: Mapping[] = [
  { hostPort: 8080, containerPort: 80, protocol: "tcp" },
  { hostPort: 5353, containerPort: 53, protocol: "udp" },
  { hostPort: 9090, containerPort: 90, protocol: "tcp", hostIP: "10.88.0.1" },
  { hostPort: 9091, containerPort: 91, protocol: "tcp", hostIP: "fd00:88::1" },
];
const BACKENDS = ["iptables", "nftables"] as const;
const ignore = !canNetns || !haveReference;

async function dnChain(network: string, containerId: string): Promise<string> {
  return `CNI-DN-${(await sha512Hex(network + containerId)).slice(0, 21)}`;
}

/** The container's addresses (without prefix) in a ptp ADD's output, by family. */
function addressesOf(add: PluginRun, version: string): { 4?: string; 6?: string } {
  const out: { 4?: string; 6?: string } = {};
  for (const ip of currentResult(add, version).ips ?? []) {
    const addr = ip.address.split("/")[0]!;
    out[addr.includes(":") ? 6 : 4] = addr;
  }
  return out;
}

/** A ptp attachment in `ctr` with portmap chained on top; returns both outputs. */
async function attach(
  host: TestNetns,
  ctr: TestNetns,
  dataDir: string,
  opts: {
    version?: string;
    families?: Families;
    mappings?: Mapping[];
    extra?: Record<string, unknown>;
    containerId?: string;
  } = {},
): Promise<{ add: PluginRun; conf: Record<string, unknown> }> {
  const version = opts.version ?? "1.0.0";
  const at = { netns: ctr.path, containerId: opts.containerId ?? "ctr1" };
  const add = assertSuccess(
    await ptp("ADD", host, at, ptpConf(version, opts.families ?? "dual", dataDir)),
  );
  const conf = portmapConf(version, add, opts.mappings ?? MAPPINGS, opts.extra);
  const pm = assertSuccess(await portmap("ADD", host, at, conf));
  assertEquals(pm.json, add.json, "portmap passes the previous result through");
  return { add, conf };
}

for (const version of ALL_TEST_VERSIONS) {
  Deno.test({
    name: `portmap iptables ADD/CHECK/DEL/DEL dual-stack (cniVersion ${version})`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { add, conf } = await attach(host, ctr, dataDir, { version });
        const ip = addressesOf(add, version);
        const chain = await dnChain("ptpnet", "ctr1");
        const lines = await cniNat(host);
        for (
          const want of [
            `4: -A ${chain} -p tcp -m tcp --dport 8080 -j DNAT --to-destination ${ip[4]}:80`,
            `4: -A ${chain} -s 10.88.0.0/24 -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK`,
            `4: -A ${chain} -s 127.0.0.1/32 -p udp -m udp --dport 5353 -j CNI-HOSTPORT-SETMARK`,
            `4: -A ${chain} -d 10.88.0.1/32 -p tcp -m tcp --dport 9090 -j DNAT --to-destination ${
              ip[4]
            }:90`,
            `6: -A ${chain} -p udp -m udp --dport 5353 -j DNAT --to-destination [${ip[6]}]:53`,
            `6: -A ${chain} -d fd00:88::1/128 -p tcp -m tcp --dport 9091 -j DNAT --to-destination [${
              ip[6]
            }]:91`,
          ]
        ) assert(lines.includes(want), `missing ${want} in\n${lines.join("\n")}`);
        // A hostIP of the other family makes no rule in this one.
        assert(!lines.some((l) => l.startsWith("4:") && l.includes("--dport 9091 -j DNAT")));
        const [hostVeth] = await veths(host);
        assertEquals(await sysctl(host, `net/ipv4/conf/${hostVeth!.ifname}/route_localnet`), "1");
        const at = { netns: ctr.path };
        if (versionAtLeast(version, "0.4.0")) assertSuccess(await portmap("CHECK", host, at, conf));
        for (let i = 0; i < 2; i++) {
          assertSuccess(await portmap("DEL", host, at, conf));
          assertEquals(await dnatChains(host), []);
        }
        assertSuccess(await ptp("DEL", host, at, ptpConf(version, "dual", dataDir)));
      }),
  });
}

for (const version of ["0.3.1", "0.4.0", "1.1.0"]) {
  Deno.test({
    name: `portmap nftables ADD/CHECK/DEL/DEL dual-stack (cniVersion ${version})`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { add, conf } = await attach(host, ctr, dataDir, {
          version,
          extra: { backend: "nftables" },
        });
        const ip = addressesOf(add, version);
        const rules = await nftAttachmentRules(host, "ctr1");
        const dnat = (fam: string, addr: string, port: number) =>
          rules.filter((r) =>
            r.startsWith(`${fam} hostports:`) &&
            r.includes(`"dnat":{"addr":"${addr}","port":${port}}`)
          );
        assertEquals(dnat("ip", ip[4]!, 80).length, 1);
        assertEquals(dnat("ip", ip[4]!, 90).length, 1);
        assertEquals(dnat("ip6", ip[6]!, 91).length, 1);
        assertEquals(rules.filter((r) => r.startsWith("ip hostports:")).length, 3);
        assertEquals(rules.filter((r) => r.startsWith("ip6 hostports:")).length, 3);
        // Hairpin and localhost for IPv4, hairpin for IPv6.
        assertEquals(rules.filter((r) => r.startsWith("ip masquerading:")).length, 2);
        assertEquals(rules.filter((r) => r.startsWith("ip6 masquerading:")).length, 1);
        const table = await host.exec("nft", ["list", "table", "ip", "cni_hostport"]);
        for (
          const line of [
            'comment "CNI portmap plugin"',
            "fib daddr type local jump hostports_all",
            "type nat hook prerouting priority dstnat; policy accept;",
          ]
        ) assert(table.includes(line), `missing ${line} in\n${table}`);
        assertEquals(await dnatChains(host), []);
        const at = { netns: ctr.path };
        if (versionAtLeast(version, "0.4.0")) assertSuccess(await portmap("CHECK", host, at, conf));
        for (let i = 0; i < 2; i++) {
          assertSuccess(await portmap("DEL", host, at, conf));
          assertEquals(await portmapLeftovers(host), []);
        }
        assertSuccess(await ptp("DEL", host, at, ptpConf(version, "dual", dataDir)));
      }),
  });
}

for (const backend of BACKENDS) {
  Deno.test({
    name: `portmap ${backend}: CHECK passes for an IPv4-only container (plugins#819)`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { conf } = await attach(host, ctr, dataDir, {
          families: "v4",
          extra: { backend },
        });
        assertSuccess(await portmap("CHECK", host, { netns: ctr.path }, conf));
        assertSuccess(await portmap("DEL", host, { netns: ctr.path }, conf));
        assertEquals(await portmapLeftovers(host), []);
      }),
  });

  Deno.test({
    name: `portmap ${backend}: CHECK fails when a rule is gone`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { conf } = await attach(host, ctr, dataDir, { families: "v4", extra: { backend } });
        if (backend === "iptables") {
          const chain = await dnChain("ptpnet", "ctr1");
          await host.exec("iptables", ["-t", "nat", "-F", chain]);
        } else {
          await host.exec("nft", ["flush", "chain", "ip", "cni_hostport", "hostports"]);
        }
        const check = await portmap("CHECK", host, { netns: ctr.path }, conf);
        assert(check.code !== 0, check.stdout);
        assertSuccess(await portmap("DEL", host, { netns: ctr.path }, conf));
      }),
  });

  for (const how of ["without mappings", "with CNI_NETNS empty", "after the netns is gone"]) {
    Deno.test({
      name: `portmap ${backend}: DEL ${how} removes what ADD made`,
      ignore,
      fn: () =>
        withDataDirAndNamespaces(0, async (dataDir, host) => {
          const ctr = await TestNetns.create("ckc");
          try {
            const { conf } = await attach(host, ctr, dataDir, { extra: { backend } });
            assert((await portmapLeftovers(host)).length > 0);
            let delConf = conf;
            let netns = ctr.path;
            if (how === "without mappings") {
              delConf = portmapConf("1.0.0", undefined, undefined, { backend });
            } else if (how === "with CNI_NETNS empty") {
              netns = "";
            } else {
              await ctr.remove();
            }
            assertSuccess(await portmap("DEL", host, { netns }, delConf));
            assertEquals(await portmapLeftovers(host), []);
          } finally {
            await ctr.remove();
          }
        }),
    });
  }

  Deno.test({
    name: `portmap ${backend}: a second ADD of the same container replaces its rules`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { add } = await attach(host, ctr, dataDir, { extra: { backend } });
        const before = await portmapLeftovers(host);
        const fewer = portmapConf("1.0.0", add, [MAPPINGS[0]!], { backend });
        assertSuccess(await portmap("ADD", host, { netns: ctr.path }, fewer));
        const after = await portmapLeftovers(host);
        assert(after.length > 0 && after.length < before.length, after.join("\n"));
        assertSuccess(await portmap("ADD", host, { netns: ctr.path }, fewer));
        assertEquals(await portmapLeftovers(host), after);
        assertSuccess(await portmap("DEL", host, { netns: ctr.path }, fewer));
        assertEquals(await portmapLeftovers(host), []);
      }),
  });
}

Deno.test({
  name: "portmap ADD without mappings passes the result through and writes nothing",
  ignore,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const { add } = await attach(host, ctr, dataDir, { mappings: [] });
      assertEquals(await cniNat(host), []);
      const none = portmapConf("1.0.0", add, undefined);
      assertEquals(
        assertSuccess(await portmap("ADD", host, { netns: ctr.path }, none)).json,
        add.json,
      );
      assertSuccess(await portmap("CHECK", host, { netns: ctr.path }, none));
    }),
});

Deno.test({
  name: "portmap options: snat off, masqAll, markMasqBit, conditions in both syntaxes",
  ignore,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const at = { netns: ctr.path };
      const chain = await dnChain("ptpnet", "ctr1");
      const cases: [Record<string, unknown>, (lines: string[]) => void][] = [
        [{ snat: false }, (l) => assert(!l.some((x) => x.includes("SETMARK")), l.join("\n"))],
        [{ masqAll: true }, (l) => {
          assert(l.includes(`4: -A ${chain} -p tcp -m tcp --dport 8080 -j CNI-HOSTPORT-SETMARK`));
          assert(!l.some((x) => x.includes("127.0.0.1")), l.join("\n"));
        }],
        [{ markMasqBit: 5 }, (l) =>
          assert(
            l.includes(
              '4: -A CNI-HOSTPORT-SETMARK -m comment --comment "CNI portfwd masquerade mark" -j MARK --set-xmark 0x20/0x20',
            ),
            l.join("\n"),
          )],
        [{ conditionsV4: ["-s", "192.0.2.0/24"] }, (l) =>
          assert(
            l.some((x) => x.startsWith("4: -A CNI-HOSTPORT-DNAT -s 192.0.2.0/24 -p tcp")),
            l.join("\n"),
          )],
      ];
      for (const [extra, verify] of cases) {
        const { conf } = await attach(host, ctr, dataDir, { extra });
        verify(await cniNat(host));
        assertSuccess(await portmap("CHECK", host, at, conf));
        assertSuccess(await portmap("DEL", host, at, conf));
        assertEquals(await dnatChains(host), []);
        assertSuccess(await ptp("DEL", host, at, ptpConf("1.0.0", "dual", dataDir)));
        // The shared chains stay (the reference never removes them): start clean for the next case.
        await host.exec("iptables", ["-t", "nat", "-F"]);
        await host.exec("iptables", ["-t", "nat", "-X"]);
      }
      const nft = { backend: "nftables", conditionsV4: ["iifname", "!=", '"lo"'] };
      const { conf } = await attach(host, ctr, dataDir, { extra: nft });
      const table = await host.exec("nft", ["list", "table", "ip", "cni_hostport"]);
      assert(table.includes('iifname != "lo" fib daddr type local jump hostports_all'), table);
      assertSuccess(await portmap("CHECK", host, at, conf));
      assertSuccess(await portmap("DEL", host, at, conf));
      assertEquals(await portmapLeftovers(host), []);
    }),
});

Deno.test({
  name: "portmap refuses bad configs with code 7 and writes nothing",
  ignore,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const at = { netns: ctr.path };
      const add = assertSuccess(await ptp("ADD", host, at, ptpConf("1.0.0", "v4", dataDir)));
      const cases: [Record<string, unknown>, Mapping[], RegExp][] = [
        [{ markMasqBit: 32 }, MAPPINGS, /MasqMarkBit must be between 0 and 31/],
        [{ markMasqBit: 1, externalSetMarkChain: "X" }, MAPPINGS, /Cannot specify/],
        [{ backend: "pf" }, MAPPINGS, /unrecognized backend "pf"/],
        [
          { backend: "iptables", conditionsV4: ["ip", "daddr", "1.2.3.4"] },
          MAPPINGS,
          /nftables-specific options \[conditionsV4\]/,
        ],
        [
          { backend: "nftables", externalSetMarkChain: "X" },
          MAPPINGS,
          /iptables-specific options \[externalSetMarkChain\]/,
        ],
        [{}, [{ hostPort: 0, containerPort: 80, protocol: "tcp" }], /Invalid host port number: 0/],
        [
          {},
          [{ hostPort: 80, containerPort: 70000, protocol: "tcp" }],
          /Invalid container port number: 70000/,
        ],
        [{}, [{ hostPort: 80, containerPort: 80, protocol: "icmp" }], /Invalid protocol "icmp"/],
        [
          {},
          [{ hostPort: 80, containerPort: 80, protocol: "tcp", hostIP: "nope" }],
          /Invalid hostIP "nope"/,
        ],
      ];
      for (const [extra, mappings, message] of cases) {
        const run = await portmap("ADD", host, at, portmapConf("1.0.0", add, mappings, extra));
        assertEquals(run.json?.code, 7, run.stdout);
        assert(message.test(String(run.json?.msg)), `${run.json?.msg} !~ ${message}`);
        assertEquals(await portmapLeftovers(host), []);
      }
      const unchained = await portmap("ADD", host, at, portmapConf("1.0.0", undefined, MAPPINGS));
      assertEquals(unchained.json?.msg, "must be called as chained plugin");
    }),
});

Deno.test({
  name: "portmap GC (iptables) removes the chains of attachments not listed, in its network only",
  ignore,
  fn: () =>
    withDataDirAndNamespaces(3, async (dataDir, host, c1, c2, c3) => {
      const gcConf = (network: string) => ({
        ...portmapConf("1.1.0", undefined, undefined, {}, network),
        "cni.dev/valid-attachments": [{ containerID: "c1", ifname: "eth0" }],
      });
      for (const [id, ns] of [["c1", c1], ["c2", c2], ["c3", c3]] as const) {
        const add = assertSuccess(
          await ptp(
            "ADD",
            host,
            { netns: ns.path, containerId: id },
            ptpConf("1.1.0", "v4", dataDir),
          ),
        );
        const network = id === "c3" ? "othernet" : "ptpnet";
        assertSuccess(
          await portmap(
            "ADD",
            host,
            { netns: ns.path, containerId: id },
            portmapConf("1.1.0", add, MAPPINGS, {}, network),
          ),
        );
      }
      assertSuccess(
        await runApplet("portmap", {
          env: cniEnv("GC", { containerId: "", ifname: "", path: DIST_BIN }),
          stdin: gcConf("ptpnet"),
          host,
        }),
      );
      const left = new Set(
        (await dnatChains(host)).flatMap((l) => l.match(/CNI-DN-[0-9a-f]+/g) ?? []),
      );
      assertEquals(
        [...left].sort(),
        [await dnChain("ptpnet", "c1"), await dnChain("othernet", "c3")].sort(),
      );
    }),
});

Deno.test({
  name:
    "portmap STATUS answers for a usable backend; the backend is nftables when iptables cannot work",
  ignore,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const status = await runApplet("portmap", {
        env: cniEnv("STATUS", { containerId: "", ifname: "", path: DIST_BIN }),
        stdin: portmapConf("1.1.0", undefined, undefined),
        host,
      });
      assertSuccess(status);
      const bin = await Deno.makeTempDir({ prefix: "cnikit-fakebin-" });
      try {
        await Deno.writeTextFile(`${bin}/iptables-save`, "#!/bin/sh\nexit 3\n");
        await Deno.chmod(`${bin}/iptables-save`, 0o755);
        const at = { netns: ctr.path };
        const add = assertSuccess(await ptp("ADD", host, at, ptpConf("1.0.0", "v4", dataDir)));
        const run = (command: string, conf: Record<string, unknown>) =>
          runApplet("portmap", {
            env: { ...cniEnv(command, at), PATH: `${bin}:${Deno.env.get("PATH")}` },
            stdin: conf,
            host,
          });
        const conf = portmapConf("1.0.0", add, MAPPINGS);
        assertSuccess(await run("ADD", conf));
        assertEquals(await dnatChains(host), []);
        assertEquals((await nftAttachmentRules(host, "ctr1")).length, 5);
        assertSuccess(await run("CHECK", conf));
        assertSuccess(await run("DEL", conf));
        assertEquals(await portmapLeftovers(host), []);
      } finally {
        await Deno.remove(bin, { recursive: true });
      }
    }),
});
