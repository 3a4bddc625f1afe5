/**
 * firewall chained after bridge inside a fake host: ADD/CHECK/DEL/DEL per
 * spec version in the iptables and nftables backends against the kernel,
 * DEL without prevResult, ingress-policy chains, refused configs and
 * versions, GC, STATUS; differential against Debian's reference
 * (iptables) and mixed ADD/DEL; and the firewalld backend against a real
 * firewalld on a private D-Bus, auto-selected as the reference selects it.
 * @module
 */

import { assert, assertEquals } from "../../helpers/assert.ts";
import {
  assertSuccess,
  cniEnv,
  currentResult,
  DIST_BIN,
  haveReference,
  type PluginRun,
  REFERENCE_BIN,
  runApplet,
} from "../../helpers/applet.ts";
import { bridge, bridgeConf, bridgeName } from "../../helpers/bridge.ts";
import {
  addressRules,
  filterTables,
  firewall,
  firewallConf,
  haveFirewalld,
  nftAddressRules,
  nftFirewall,
  withFirewalld,
} from "../../helpers/firewall.ts";
import { type Families, hostLocal } from "../../helpers/ipam.ts";
import { canNetns, type TestNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";

const ignore = !canNetns || !haveReference;

/** A bridge attachment in `ctr`; returns the bridge's ADD output and name. */
async function attach(
  host: TestNetns,
  ctr: TestNetns,
  dataDir: string,
  version = "1.0.0",
  families: Families = "dual",
  containerId = "ctr1",
): Promise<{ add: PluginRun; br: string }> {
  const br = bridgeName();
  const conf = bridgeConf(version, br, hostLocal(families, dataDir), { isGateway: true });
  const add = assertSuccess(await bridge("ADD", host, { netns: ctr.path, containerId }, conf));
  return { add, br };
}

function ipsOf(add: PluginRun, version: string): { 4?: string; 6?: string } {
  const out: { 4?: string; 6?: string } = {};
  for (const ip of currentResult(add, version).ips ?? []) {
    const a = ip.address.split("/")[0]!;
    out[a.includes(":") ? 6 : 4] = a;
  }
  return out;
}

for (const version of ["0.4.0", "1.0.0", "1.1.0"]) {
  Deno.test({
    name: `firewall iptables ADD/CHECK/DEL/DEL dual-stack (cniVersion ${version})`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { add } = await attach(host, ctr, dataDir, version);
        const ip = ipsOf(add, version);
        const conf = firewallConf(version, add, dataDir, { backend: "iptables" });
        const at = { netns: ctr.path };
        const out = assertSuccess(await firewall("ADD", host, at, conf));
        assertEquals(out.json, add.json, "firewall passes the previous result through");
        const t = await filterTables(host);
        for (const [family, addr, bits] of [[4, ip[4], 32], [6, ip[6], 128]] as const) {
          const lines = t[family];
          assertEquals(lines.filter((l) => l.startsWith("-A FORWARD ")), [
            '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD',
          ]);
          assertEquals(lines.filter((l) => l.startsWith("-A CNI-FORWARD ")), [
            '-A CNI-FORWARD -m comment --comment "CNI firewall plugin admin overrides" -j CNI-ADMIN',
            `-A CNI-FORWARD -d ${addr}/${bits} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`,
            `-A CNI-FORWARD -s ${addr}/${bits} -j ACCEPT`,
          ]);
        }
        assertSuccess(await firewall("CHECK", host, at, conf));
        for (let i = 0; i < 2; i++) {
          assertSuccess(await firewall("DEL", host, at, conf));
          assertEquals(await addressRules(host), []);
        }
      }),
  });

  Deno.test({
    name: `firewall nftables ADD/CHECK/DEL/DEL dual-stack (cniVersion ${version})`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { add } = await attach(host, ctr, dataDir, version);
        const ip = ipsOf(add, version);
        const conf = firewallConf(version, add, dataDir, { backend: "nftables" });
        const at = { netns: ctr.path };
        assertSuccess(await firewall("ADD", host, at, conf));
        const rules = await nftFirewall(host);
        const comment = rules.find((r) => r.includes(ip[4]!))!.match(/comment (".*")$/)![1];
        assert(
          /^"[0-9a-f]{16}-[0-9a-f]{16}, net: brnet, if: eth0, id: ctr1"$/.test(comment!),
          comment,
        );
        assertEquals(rules, [
          "forward: jump admin",
          `forward: ip daddr ${ip[4]} ct state established,related accept comment ${comment}`,
          `forward: ip saddr ${ip[4]} accept comment ${comment}`,
          `forward: ip6 daddr ${ip[6]} ct state established,related accept comment ${comment}`,
          `forward: ip6 saddr ${ip[6]} accept comment ${comment}`,
        ]);
        assertEquals(await addressRules(host), []);
        assertSuccess(await firewall("CHECK", host, at, conf));
        for (let i = 0; i < 2; i++) {
          assertSuccess(await firewall("DEL", host, at, conf));
          assertEquals(await nftAddressRules(host), []);
        }
      }),
  });
}

for (const backend of ["iptables", "nftables"] as const) {
  Deno.test({
    name: `firewall ${backend}: DEL without prevResult removes the container's rules`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { add } = await attach(host, ctr, dataDir);
        const at = { netns: ctr.path };
        assertSuccess(
          await firewall("ADD", host, at, firewallConf("1.0.0", add, dataDir, { backend })),
        );
        const before = [...await addressRules(host), ...await nftAddressRules(host)];
        assertEquals(before.length, 4);
        const bare = firewallConf("1.0.0", undefined, dataDir, { backend });
        assertSuccess(await firewall("DEL", host, { netns: "" }, bare));
        assertEquals([...await addressRules(host), ...await nftAddressRules(host)], []);
      }),
  });

  Deno.test({
    name: `firewall ${backend}: CHECK fails when a rule is gone`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { add } = await attach(host, ctr, dataDir, "1.0.0", "v4");
        const at = { netns: ctr.path };
        const conf = firewallConf("1.0.0", add, dataDir, { backend });
        assertSuccess(await firewall("ADD", host, at, conf));
        if (backend === "iptables") await host.exec("iptables", ["-F", "CNI-FORWARD"]);
        else await host.exec("nft", ["flush", "chain", "inet", "cni_firewall", "forward"]);
        const check = await firewall("CHECK", host, at, conf);
        assertEquals(check.json?.code, 999, check.stdout);
        assertSuccess(await firewall("DEL", host, at, conf));
      }),
  });

  Deno.test({
    name: `firewall ${backend}: ingressPolicy chains for two bridges, kept after DEL`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(2, async (dataDir, host, c1, c2) => {
        const a = await attach(host, c1, dataDir, "1.0.0", "v4", "c1");
        const b = await attach(host, c2, dataDir, "1.0.0", "v4", "c2");
        const confA = firewallConf("1.0.0", a.add, dataDir, {
          backend,
          ingressPolicy: "same-bridge",
        });
        const confB = firewallConf("1.0.0", b.add, dataDir, { backend, ingressPolicy: "isolated" });
        assertSuccess(await firewall("ADD", host, { netns: c1.path, containerId: "c1" }, confA));
        assertSuccess(await firewall("ADD", host, { netns: c2.path, containerId: "c2" }, confB));
        const same = "(ingressPolicy: same-bridge)";
        const iso = "(ingressPolicy: isolated)";
        const both = "(ingressPolicy: same-bridge|isolated)";
        let expected: string[];
        let actual: string[];
        if (backend === "iptables") {
          const t = (await filterTables(host))[4];
          actual = t.filter((l) => /^-A (FORWARD|CNI-ISOLATION)/.test(l));
          const c = (s: string) => `-m comment --comment "CNI firewall plugin rules ${s}"`;
          expected = [
            `-A FORWARD ${c(both)} -j CNI-ISOLATION-STAGE-1`,
            '-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD',
            `-A CNI-ISOLATION-STAGE-1 -i ${b.br} -o ${b.br} ${c(iso)} -j DROP`,
            `-A CNI-ISOLATION-STAGE-1 -i ${b.br} ! -o ${b.br} ${c(iso)} -j CNI-ISOLATION-STAGE-2`,
            `-A CNI-ISOLATION-STAGE-1 -i ${a.br} ! -o ${a.br} ${c(same)} -j CNI-ISOLATION-STAGE-2`,
            `-A CNI-ISOLATION-STAGE-1 ${c(both)} -j RETURN`,
            `-A CNI-ISOLATION-STAGE-2 -o ${b.br} ${c(both)} -j DROP`,
            `-A CNI-ISOLATION-STAGE-2 -o ${a.br} ${c(both)} -j DROP`,
            `-A CNI-ISOLATION-STAGE-2 ${c(both)} -j RETURN`,
          ];
        } else {
          actual = (await nftFirewall(host)).filter((r) => !/ [sd]addr /.test(r));
          const c = (s: string) => `comment "CNI firewall plugin rules ${s}"`;
          expected = [
            `forward: jump isolation_stage_1 ${c(both)}`,
            "forward: jump admin",
            `isolation_stage_1: iifname "${a.br}" oifname != "${a.br}" jump isolation_stage_2 ${
              c(same)
            }`,
            `isolation_stage_1: iifname "${b.br}" oifname != "${b.br}" jump isolation_stage_2 ${
              c(iso)
            }`,
            `isolation_stage_1: iifname "${b.br}" oifname "${b.br}" drop ${c(iso)}`,
            `isolation_stage_2: oifname "${a.br}" drop ${c(both)}`,
            `isolation_stage_2: oifname "${b.br}" drop ${c(both)}`,
          ];
        }
        assertEquals(actual, expected);
        assertSuccess(await firewall("DEL", host, { netns: c1.path, containerId: "c1" }, confA));
        assertSuccess(await firewall("DEL", host, { netns: c2.path, containerId: "c2" }, confB));
        // The isolation rules belong to the bridges, not to a container: they stay (as in the reference).
        const after = backend === "iptables"
          ? (await filterTables(host))[4].filter((l) => /^-A (FORWARD|CNI-ISOLATION)/.test(l))
          : (await nftFirewall(host)).filter((r) => !/ [sd]addr /.test(r));
        assertEquals(after, expected);
        assertEquals([...await addressRules(host), ...await nftAddressRules(host)], []);
      }),
  });

  Deno.test({
    name:
      `firewall ${backend}: GC removes the rules of attachments not listed, in its network only`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(3, async (dataDir, host, c1, c2, c3) => {
        const adds: Record<string, string> = {};
        for (const [id, ns] of [["c1", c1], ["c2", c2], ["c3", c3]] as const) {
          const { add } = await attach(host, ns, dataDir, "1.1.0", "v4", id);
          adds[id] = ipsOf(add, "1.1.0")[4]!;
          const conf = {
            ...firewallConf("1.1.0", add, dataDir, { backend }),
            ...(id === "c3" ? { name: "othernet" } : {}),
          };
          assertSuccess(await firewall("ADD", host, { netns: ns.path, containerId: id }, conf));
        }
        assertSuccess(
          await runApplet("firewall", {
            env: cniEnv("GC", { containerId: "", ifname: "", path: DIST_BIN }),
            stdin: {
              ...firewallConf("1.1.0", undefined, dataDir, { backend }),
              "cni.dev/valid-attachments": [{ containerID: "c1", ifname: "eth0" }],
            },
            host,
          }),
        );
        const left = [...await addressRules(host), ...await nftAddressRules(host)].join("\n");
        assert(left.includes(adds.c1!) && left.includes(adds.c3!), left);
        assert(!left.includes(`${adds.c2!}/`) && !left.includes(`${adds.c2!} `), left);
      }),
  });
}

Deno.test({
  name: "firewall refuses bad configs and versions before 0.4.0; needs a prevResult on ADD",
  ignore,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const { add } = await attach(host, ctr, dataDir, "1.0.0", "v4");
      const at = { netns: ctr.path };
      const cases: [Record<string, unknown>, number, RegExp][] = [
        [{ ingressPolicy: "closed" }, 7, /unknown ingress policy: "closed"/],
        [{ backend: "pf" }, 7, /unknown firewall backend "pf"/],
        [{ cniVersion: "0.3.1" }, 1, /incompatible CNI versions/],
      ];
      for (const [extra, code, message] of cases) {
        const run = await firewall("ADD", host, at, {
          ...firewallConf("1.0.0", add, dataDir),
          ...extra,
        });
        assertEquals(run.json?.code, code, run.stdout);
        assert(message.test(String(run.json?.msg)), String(run.json?.msg));
      }
      const bare = await firewall("ADD", host, at, firewallConf("1.0.0", undefined, dataDir));
      assertEquals(bare.json?.msg, "missing prevResult from earlier plugin");
      assertEquals([...await addressRules(host), ...await nftAddressRules(host)], []);
    }),
});

Deno.test({
  name: "firewall STATUS answers for the backend it would use",
  ignore,
  fn: () =>
    withDataDirAndNamespaces(0, async (dataDir, host) => {
      for (const backend of ["iptables", "nftables", undefined]) {
        assertSuccess(
          await runApplet("firewall", {
            env: cniEnv("STATUS", { containerId: "", ifname: "", path: DIST_BIN }),
            stdin: firewallConf("1.1.0", undefined, dataDir, backend ? { backend } : {}),
            host,
          }),
        );
      }
    }),
});

for (
  const [what, extra] of [
    ["open", {}],
    ["same-bridge", { ingressPolicy: "same-bridge" }],
    ["iptablesAdminChainName", { iptablesAdminChainName: "MY-ADMIN" }],
  ] as const
) {
  Deno.test({
    name: `firewall differential (iptables, ${what}): the filter tables of the reference`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { add } = await attach(host, ctr, dataDir);
        const at = { netns: ctr.path };
        const conf = firewallConf("1.0.0", add, dataDir, extra);
        const tables: Record<string, unknown> = {};
        for (const [who, bin] of [["reference", REFERENCE_BIN], ["cnikit", undefined]] as const) {
          assertSuccess(await firewall("ADD", host, at, conf, bin));
          // v1.1.1 comments every isolation rule with its own policy; newer ones share a comment.
          const t = await filterTables(host);
          tables[who] = ([4, 6] as const).map((f) =>
            t[f].map((l) => l.replace(/\(ingressPolicy: [^)]*\)/, "(ingressPolicy: …)"))
          );
          assertSuccess(await firewall("CHECK", host, at, conf, bin));
          assertSuccess(await firewall("DEL", host, at, conf, bin));
          assertEquals(await addressRules(host), []);
          for (const tool of ["iptables", "ip6tables"]) {
            await host.exec(tool, ["-F"]);
            await host.exec(tool, ["-X"]);
          }
        }
        assertEquals(tables.cnikit, tables.reference);
      }),
  });
}

for (const [adder, deleter] of [["reference", "cnikit"], ["cnikit", "reference"]] as const) {
  Deno.test({
    name: `firewall iptables: rules made by the ${adder} are checked and removed by the ${deleter}`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const { add } = await attach(host, ctr, dataDir);
        const bin = (who: string) => (who === "reference" ? REFERENCE_BIN : undefined);
        const at = { netns: ctr.path };
        const conf = firewallConf("1.0.0", add, dataDir);
        assertSuccess(await firewall("ADD", host, at, conf, bin(adder)));
        assertEquals((await addressRules(host)).length, 4);
        assertSuccess(await firewall("CHECK", host, at, conf, bin(deleter)));
        assertSuccess(await firewall("DEL", host, at, conf, bin(deleter)));
        assertEquals(await addressRules(host), []);
      }),
  });
}

Deno.test({
  name:
    "firewall with a real firewalld on a private bus: picked automatically, sources added, checked, removed; the reference agrees",
  ignore: ignore || !haveFirewalld,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      await withFirewalld(host, async (fwd) => {
        const { add } = await attach(host, ctr, dataDir, "1.0.0", "dual");
        const ip = ipsOf(add, "1.0.0");
        const at = { netns: ctr.path };
        const run = (command: string, conf: Record<string, unknown>, bin?: string) =>
          runApplet("firewall", {
            env: {
              ...cniEnv(command, { ...at, path: bin ?? DIST_BIN }),
              ...fwd.env,
            },
            stdin: conf,
            host,
            ...(bin ? { bin } : {}),
          });
        const conf = firewallConf("1.0.0", add, dataDir, { firewalldZone: "trusted" });
        assertSuccess(await run("ADD", conf));
        // firewalld was picked: no iptables rules, the addresses are sources of the zone.
        assertEquals(await addressRules(host), []);
        assertEquals(await fwd.zone("querySource", "trusted", `${ip[4]}/32`), "boolean true");
        assertEquals(await fwd.zone("querySource", "trusted", `${ip[6]}/128`), "boolean true");
        assertSuccess(await run("CHECK", conf));
        assertSuccess(await run("CHECK", conf, REFERENCE_BIN));
        // Without prevResult: the record has the addresses.
        assertSuccess(await run("DEL", firewallConf("1.0.0", undefined, dataDir)));
        assertEquals(await fwd.zone("querySource", "trusted", `${ip[4]}/32`), "boolean false");
        assertEquals(await fwd.zone("querySource", "trusted", `${ip[6]}/128`), "boolean false");
        const check = await run("CHECK", conf);
        assertEquals(check.json?.code, 999, check.stdout);
        assertSuccess(await run("DEL", conf));
        // The reference adds, cnikit removes.
        assertSuccess(await run("ADD", conf, REFERENCE_BIN));
        assertEquals(await fwd.zone("querySource", "trusted", `${ip[4]}/32`), "boolean true");
        assertSuccess(await run("DEL", conf));
        assertEquals(await fwd.zone("querySource", "trusted", `${ip[4]}/32`), "boolean false");
      });
    }),
});

Deno.test({
  name: "firewall backend firewalld without a firewalld fails with code 5; auto picks iptables",
  ignore,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const { add } = await attach(host, ctr, dataDir, "1.0.0", "v4");
      const env = { DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${dataDir}/no-bus-here` };
      const run = (conf: Record<string, unknown>) =>
        runApplet("firewall", {
          env: { ...cniEnv("ADD", { netns: ctr.path }), ...env },
          stdin: conf,
          host,
        });
      const explicit = await run(firewallConf("1.0.0", add, dataDir, { backend: "firewalld" }));
      assertEquals(explicit.json?.code, 5, explicit.stdout);
      assertSuccess(await run(firewallConf("1.0.0", add, dataDir)));
      assertEquals((await addressRules(host)).length, 2);
    }),
});
