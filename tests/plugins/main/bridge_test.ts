import { assert, assertEquals, assertMatch } from "../../helpers/assert.ts";
import {
  ALL_TEST_VERSIONS,
  assertSuccess,
  currentResult,
  haveReference,
  withPrev,
} from "../../helpers/applet.ts";
import { type Families, hostLocal, leases, SUBNET } from "../../helpers/ipam.ts";
import {
  addresses,
  iptablesMasq,
  link,
  links,
  masqRules,
  nftMasqRules,
  routes,
  sysctl,
  veths,
} from "../../helpers/kernel.ts";
import {
  assertNothingLeft,
  bridge,
  bridgeConf,
  bridgeName,
  spoofCheck,
  verifyAttachment,
} from "../../helpers/bridge.ts";
import {
  canNetns,
  TestNetns,
  waitFor,
  withDataDirAndNamespaces,
  withNamespaces,
} from "../../helpers/netns.ts";
import { versionAtLeast } from "../../../lib/cni/spec/version.ts";

const cannotRun = !canNetns || !haveReference;
const GW = { 4: "10.88.0.1", 6: "fd00:88::1" } as const;

function gatewaysFor(families: Families): string[] {
  const out: string[] = [];
  if (families !== "v6") out.push(`${GW[4]}/24 brd 10.88.0.255`);
  if (families !== "v4") out.push(`${GW[6]}/64`);
  return out.sort();
}

for (const version of ALL_TEST_VERSIONS) {
  for (const families of ["v4", "v6", "dual"] as const) {
    Deno.test({
      name: `bridge ADD/CHECK/DEL/DEL ${families} gateway+masquerade (cniVersion ${version})`,
      ignore: cannotRun,
      fn: () =>
        withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
          const br = bridgeName();
          const conf = bridgeConf(version, br, hostLocal(families, dataDir), {
            isGateway: true,
            ipMasq: true,
          });
          const at = { netns: ctr.path };
          const add = assertSuccess(await bridge("ADD", host, at, conf));
          assertEquals(add.json!.cniVersion, version);
          const result = currentResult(add, version);
          assertEquals(result.ips!.length, families === "dual" ? 2 : 1);
          if (versionAtLeast(version, "0.3.0")) assertEquals(result.interfaces!.length, 3);
          for (const ip of result.ips!) {
            assertEquals(ip.gateway, ip.address.includes(":") ? GW[6] : GW[4]);
          }
          await verifyAttachment(result, { host, ctr, bridge: br });
          // The gateway sits on the bridge, and the host forwards.
          assertEquals(addresses((await link(host, br))!), gatewaysFor(families));
          if (families !== "v6") assertEquals(await sysctl(host, "net/ipv4/ip_forward"), "1");
          if (families !== "v4") {
            assertEquals(await sysctl(host, "net/ipv6/conf/all/forwarding"), "1");
          }
          // Container sysctls: no DAD by default, ARP notification on.
          assertEquals(await sysctl(ctr, "net/ipv6/conf/eth0/accept_dad"), "0");
          assertEquals(await sysctl(ctr, "net/ipv4/conf/eth0/arp_notify"), "1");
          assertEquals(await routes(ctr), []);
          // One masquerade chain per attachment (iptables, the default backend).
          const masq = await iptablesMasq(host);
          assertEquals(
            masq.filter((l) => l.startsWith("-A POSTROUTING")).length,
            result.ips!.length,
          );
          assertEquals((await leases(dataDir)).length, result.ips!.length);
          if (versionAtLeast(version, "0.4.0")) {
            assertSuccess(await bridge("CHECK", host, at, withPrev(conf, add)));
          }
          for (let i = 0; i < 2; i++) {
            assertSuccess(await bridge("DEL", host, at, conf));
            await assertNothingLeft(host, [ctr], dataDir);
            // The bridge and its gateway address stay.
            assertEquals(addresses((await link(host, br))!), gatewaysFor(families));
          }
        }),
    });
  }
}

for (const version of ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]) {
  Deno.test({
    name: `bridge L2 (ipam without type) ADD/CHECK/DEL (cniVersion ${version})`,
    ignore: cannotRun,
    fn: () =>
      withNamespaces(1, async (host, ctr) => {
        const br = bridgeName();
        const conf = bridgeConf(version, br, {});
        const at = { netns: ctr.path };
        const add = assertSuccess(await bridge("ADD", host, at, conf));
        const result = currentResult(add, version);
        assertEquals(result.ips ?? [], []);
        await verifyAttachment(result, { host, ctr, bridge: br });
        assertEquals(addresses((await link(ctr, "eth0"))!), []);
        assertEquals(addresses((await link(host, br))!), []);
        if (versionAtLeast(version, "0.4.0")) {
          // cnikit: CHECK of an L2 attachment passes (the reference fails it).
          assertSuccess(await bridge("CHECK", host, at, withPrev(conf, add)));
        }
        assertSuccess(await bridge("DEL", host, at, conf));
        assertEquals(await veths(host), []);
        assertEquals(await links(ctr), []);
      }),
  });
}

Deno.test({
  name: "bridge L2 result cannot be written as 0.2.0 (no IPs), as with the reference",
  ignore: cannotRun,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const conf = bridgeConf("0.2.0", bridgeName(), {});
      const add = await bridge("ADD", host, { netns: ctr.path }, conf);
      assertEquals(add.code, 1);
      assertEquals(add.json!.code, 1);
      assertMatch(add.json!.msg as string, /no valid IP addresses/);
    }),
});

Deno.test({
  name: "bridge isDefaultGateway adds a default route per family via the gateway",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const br = bridgeName();
      const conf = bridgeConf("1.1.0", br, hostLocal("dual", dataDir), {
        isDefaultGateway: true,
      });
      const at = { netns: ctr.path };
      const add = assertSuccess(await bridge("ADD", host, at, conf));
      const result = currentResult(add, "1.1.0");
      assertEquals(result.routes, [
        { dst: "0.0.0.0/0", gw: GW[4] },
        { dst: "::/0", gw: GW[6] },
      ]);
      assertEquals(await routes(ctr), [
        `default via ${GW[4]} dev eth0`,
        `default via ${GW[6]} dev eth0`,
      ]);
      // isDefaultGateway implies isGateway.
      assertEquals(addresses((await link(host, br))!), gatewaysFor("dual"));
      assertSuccess(await bridge("CHECK", host, at, withPrev(conf, add)));
      // A default route with a gateway from IPAM is kept, and none added.
      const at2 = { netns: ctr.path, containerId: "ctr2", ifname: "eth1" };
      const conf2 = bridgeConf("1.1.0", br, {
        ...hostLocal("v4", dataDir),
        routes: [{ dst: "0.0.0.0/0", gw: "10.88.0.1" }],
      }, { isDefaultGateway: true });
      const add2 = assertSuccess(await bridge("ADD", host, at2, conf2));
      assertEquals(currentResult(add2, "1.1.0").routes, [{ dst: "0.0.0.0/0", gw: GW[4] }]);
      for (const [c, a] of [[conf2, at2], [conf, at]] as const) {
        assertSuccess(await bridge("DEL", host, a, c));
      }
      await assertNothingLeft(host, [ctr], dataDir);
    }),
});

Deno.test({
  name: "bridge port flags: hairpin, portIsolation, promiscMode; MTU on bridge and pair",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, c1, c2) => {
      const br = bridgeName();
      // Gateways, so the bridge MAC in the first prevResult stays valid when a second port joins.
      const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), {
        isGateway: true,
        hairpinMode: true,
        portIsolation: true,
        mtu: 1400,
      });
      const add = assertSuccess(await bridge("ADD", host, { netns: c1.path }, conf));
      const result = currentResult(add, "1.0.0");
      await verifyAttachment(result, {
        host,
        ctr: c1,
        bridge: br,
        hairpin: true,
        isolated: true,
        mtu: 1400,
      });
      assertEquals((await link(host, br))!.mtu, 1400);
      assert(!(await link(host, br))!.flags.includes("PROMISC"));

      const promisc = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), {
        isGateway: true,
        promiscMode: true,
      });
      const add2 = assertSuccess(
        await bridge("ADD", host, { netns: c2.path, containerId: "ctr2" }, promisc),
      );
      await verifyAttachment(currentResult(add2, "1.0.0"), { host, ctr: c2, bridge: br });
      assert((await link(host, br))!.flags.includes("PROMISC"));
      // CHECK compares the bridge's promiscuous mode with the config.
      const check = await bridge("CHECK", host, { netns: c1.path }, withPrev(conf, add));
      assertEquals(check.code, 1);
      assertMatch(
        check.json!.msg as string,
        /Promisc Mode false doesn't match current state: true/,
      );
      assertSuccess(
        await bridge(
          "CHECK",
          host,
          { netns: c2.path, containerId: "ctr2" },
          withPrev(promisc, add2),
        ),
      );
      assertSuccess(await bridge("DEL", host, { netns: c1.path }, conf));
      assertSuccess(await bridge("DEL", host, { netns: c2.path, containerId: "ctr2" }, promisc));
      await assertNothingLeft(host, [c1, c2], dataDir);
    }),
});

Deno.test({
  name: "bridge container MAC: CNI_ARGS < args.cni.mac < runtimeConfig.mac",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const br = bridgeName();
      const cases: [string, Record<string, unknown>, string][] = [
        ["IgnoreUnknown=1;K8S_POD_NAME=p;MAC=0A:58:0A:01:02:03", {}, "0a:58:0a:01:02:03"],
        [
          "IgnoreUnknown=1;MAC=0a:58:0a:01:02:03",
          { args: { cni: { mac: "0a:58:0a:01:02:04" } } },
          "0a:58:0a:01:02:04",
        ],
        [
          // IgnoreUnknown: host-local refuses the MAC key otherwise, as the reference's does.
          "IgnoreUnknown=1;MAC=0a:58:0a:01:02:03",
          {
            args: { cni: { mac: "0a:58:0a:01:02:04" } },
            runtimeConfig: { mac: "0a-58-0a-01-02-05" },
          },
          "0a:58:0a:01:02:05",
        ],
      ];
      for (const [args, extra, mac] of cases) {
        const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), extra);
        const at = { netns: ctr.path, args };
        const add = assertSuccess(await bridge("ADD", host, at, conf));
        const result = currentResult(add, "1.0.0");
        assertEquals(result.interfaces![2]!.mac, mac);
        assertEquals((await link(ctr, "eth0"))!.address, mac);
        assertSuccess(await bridge("CHECK", host, at, withPrev(conf, add)));
        assertSuccess(await bridge("DEL", host, at, conf));
      }
      await assertNothingLeft(host, [ctr], dataDir);
    }),
});

Deno.test({
  name: "bridge macspoofchk makes the reference's nftables objects and DEL removes them",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = bridgeConf("1.0.0", bridgeName(), hostLocal("v4", dataDir), {
        macspoofchk: true,
      });
      const at = { netns: ctr.path, containerId: "dummy-0" };
      const add = assertSuccess(await bridge("ADD", host, at, conf));
      const [, hostVeth, eth] = currentResult(add, "1.0.0").interfaces!;
      const chain = "cni-br-iface-dummy-0-eth0";
      const comment = "macspoofchk-dummy-0-eth0";
      assertEquals(await spoofCheck(host), {
        chains: [chain, `${chain}-mac`],
        rules: [
          `PREROUTING: ${
            JSON.stringify([
              { match: { op: "==", left: { meta: { key: "iifname" } }, right: hostVeth!.name } },
              { jump: { target: chain } },
            ])
          } # ${comment}`,
          `${chain}: ${JSON.stringify([{ jump: { target: `${chain}-mac` } }])} # ${comment}`,
          `${chain}-mac: ${
            JSON.stringify([
              {
                match: {
                  op: "==",
                  left: { payload: { protocol: "ether", field: "saddr" } },
                  right: eth!.mac,
                },
              },
              { return: null },
            ])
          } # ${comment}`,
          `${chain}-mac: ${JSON.stringify([{ drop: null }])} # ${comment}`,
        ],
      });
      const base = await host.exec("nft", ["list", "chain", "bridge", "nat", "PREROUTING"]);
      assertMatch(base, /type filter hook prerouting priority dstnat; policy accept;/);
      assertSuccess(await bridge("DEL", host, at, conf));
      await assertNothingLeft(host, [ctr], dataDir);
    }),
});

for (const backend of ["iptables", "nftables"] as const) {
  Deno.test({
    name: `bridge ipMasqBackend ${backend}: rules for every address, gone after DEL`,
    ignore: cannotRun,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const conf = bridgeConf("1.1.0", bridgeName(), hostLocal("dual", dataDir), {
          isGateway: true,
          ipMasq: true,
          ipMasqBackend: backend,
        });
        const at = { netns: ctr.path };
        const add = assertSuccess(await bridge("ADD", host, at, conf));
        const [ip4, ip6] = currentResult(add, "1.1.0").ips!.map((ip) => ip.address.split("/")[0]);
        if (backend === "iptables") {
          const rules = await iptablesMasq(host);
          assert(
            rules.some((r) => r.startsWith(`-A POSTROUTING -s ${ip4}/32`)),
            rules.join("\n"),
          );
          assert(
            rules.some((r) => r.startsWith(`-A POSTROUTING -s ${ip6}/128`)),
            rules.join("\n"),
          );
          assert(rules.some((r) => r.includes(`-d ${SUBNET[4]}`) && r.endsWith("-j ACCEPT")));
          assert(rules.some((r) => r.includes("! -d 224.0.0.0/4") && r.endsWith("MASQUERADE")));
          assertEquals(await nftMasqRules(host), []);
        } else {
          const rules = await nftMasqRules(host);
          assertEquals(rules.length, 2, rules.join("\n"));
          assertMatch(
            rules[0]!,
            new RegExp(`ip saddr ${ip4} ip daddr != ${SUBNET[4]} masquerade`),
          );
          assertMatch(
            rules[1]!,
            new RegExp(`ip6 saddr ${ip6} ip6 daddr != fd00:88::/64 masquerade`),
          );
          assertEquals(await iptablesMasq(host), []);
        }
        for (let i = 0; i < 2; i++) assertSuccess(await bridge("DEL", host, at, conf));
        await assertNothingLeft(host, [ctr], dataDir);
      }),
  });
}

Deno.test({
  name: "bridge DNS: the config's dns replaces the IPAM's, which is passed through otherwise",
  ignore: cannotRun,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const br = bridgeName();
      const ipam = {
        type: "static",
        addresses: [{ address: "10.88.0.9/24" }],
        dns: { nameservers: ["10.88.0.53"], search: ["ipam.example"] },
      };
      const at = { netns: ctr.path };
      const plain = bridgeConf("1.0.0", br, ipam);
      const add = assertSuccess(await bridge("ADD", host, at, plain));
      assertEquals(add.json!.dns, { nameservers: ["10.88.0.53"], search: ["ipam.example"] });
      assertSuccess(await bridge("DEL", host, at, plain));
      const own = bridgeConf("1.0.0", br, ipam, { dns: { nameservers: ["1.1.1.1"] } });
      const add2 = assertSuccess(await bridge("ADD", host, at, own));
      assertEquals(add2.json!.dns, { nameservers: ["1.1.1.1"] });
      assertSuccess(await bridge("DEL", host, at, own));
    }),
});

Deno.test({
  name:
    "bridge gateway address: kept when present, refused when different, replaced with forceAddress",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const br = bridgeName();
      await host.exec("ip", ["link", "add", br, "type", "bridge"]);
      await host.exec("ip", ["addr", "add", "10.99.0.1/24", "dev", br]);
      const at = { netns: ctr.path };
      const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), {
        isGateway: true,
        ipMasq: true,
      });
      const refused = await bridge("ADD", host, at, conf);
      assertEquals(refused.code, 1);
      assertEquals(refused.json!.code, 7);
      assertMatch(
        refused.json!.msg as string,
        new RegExp(`"${br}" already has an IP address different from 10.88.0.1/24`),
      );
      // The failed ADD took nothing with it and left nothing behind.
      await assertNothingLeft(host, [ctr], dataDir);
      assertEquals(addresses((await link(host, br))!), ["10.99.0.1/24"]);

      const forced = { ...conf, forceAddress: true };
      assertSuccess(await bridge("ADD", host, at, forced));
      assertEquals(addresses((await link(host, br))!), ["10.88.0.1/24 brd 10.88.0.255"]);
      // A second attachment finds the address in place.
      const at2 = { netns: ctr.path, containerId: "ctr2", ifname: "eth1" };
      assertSuccess(await bridge("ADD", host, at2, conf));
      assertEquals(addresses((await link(host, br))!), ["10.88.0.1/24 brd 10.88.0.255"]);
      assertSuccess(await bridge("DEL", host, at2, conf));
      assertSuccess(await bridge("DEL", host, at, forced));
      await assertNothingLeft(host, [ctr], dataDir);
      assertEquals(addresses((await link(host, br))!), ["10.88.0.1/24 brd 10.88.0.255"]);
    }),
});

Deno.test({
  name: "bridge gateway MAC stays what the bridge had before its ports joined",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, c1, c2) => {
      for (const families of ["v4", "v6"] as const) {
        const br = bridgeName();
        // An existing bridge, no ports: the reference pins this MAC.
        await host.exec("ip", ["link", "add", br, "type", "bridge"]);
        const before = (await link(host, br))!.address;
        const conf = bridgeConf("1.0.0", br, hostLocal(families, dataDir), { isGateway: true });
        for (const [ctr, id] of [[c1, "a"], [c2, "b"]] as const) {
          const add = assertSuccess(
            await bridge("ADD", host, { netns: ctr.path, containerId: id }, conf),
          );
          assertEquals(currentResult(add, "1.0.0").interfaces![0]!.mac, before);
        }
        for (const [ctr, id] of [[c1, "a"], [c2, "b"]] as const) {
          assertSuccess(await bridge("DEL", host, { netns: ctr.path, containerId: id }, conf));
        }
        assertEquals((await link(host, br))!.address, before);
      }
      // A new gateway bridge keeps the MAC it was made with.
      const br = bridgeName();
      const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), { isGateway: true });
      const add = assertSuccess(await bridge("ADD", host, { netns: c1.path }, conf));
      const mac = currentResult(add, "1.0.0").interfaces![0]!.mac;
      const add2 = await bridge("ADD", host, { netns: c2.path, containerId: "b" }, conf);
      assertEquals(currentResult(add2, "1.0.0").interfaces![0]!.mac, mac);
      assertEquals((await link(host, br))!.address, mac);
      assertSuccess(await bridge("DEL", host, { netns: c1.path }, conf));
      assertSuccess(await bridge("DEL", host, { netns: c2.path, containerId: "b" }, conf));
      assertEquals((await link(host, br))!.address, mac);
    }),
});

Deno.test({
  name: "bridge enabledad turns DAD on in the container",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = bridgeConf("1.0.0", bridgeName(), hostLocal("v6", dataDir), {
        enabledad: true,
      });
      const at = { netns: ctr.path };
      assertSuccess(await bridge("ADD", host, at, conf));
      assertEquals(await sysctl(ctr, "net/ipv6/conf/eth0/accept_dad"), "1");
      assertEquals(await sysctl(ctr, "net/ipv6/conf/eth0/enhanced_dad"), "1");
      assertSuccess(await bridge("DEL", host, at, conf));
    }),
});

Deno.test({
  name: "bridge disableContainerInterface leaves the container end down; with IPAM it is refused",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const br = bridgeName();
      const at = { netns: ctr.path };
      const withIpam = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), {
        disableContainerInterface: true,
      });
      const refused = await bridge("ADD", host, at, withIpam);
      assertEquals(refused.json!.code, 7);
      assertMatch(refused.json!.msg as string, /cannot use IPAM when DisableContainerInterface/);
      const conf = bridgeConf("1.0.0", br, {}, { disableContainerInterface: true });
      const add = assertSuccess(await bridge("ADD", host, at, conf));
      await verifyAttachment(currentResult(add, "1.0.0"), { host, ctr, bridge: br, down: true });
      assertSuccess(await bridge("DEL", host, at, conf));
      await assertNothingLeft(host, [ctr], dataDir);
    }),
});

Deno.test({
  name: "bridge passes runtimeConfig.ips (the ips capability) to IPAM",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = bridgeConf("1.0.0", bridgeName(), hostLocal("v4", dataDir), {
        capabilities: { ips: true },
        runtimeConfig: { ips: ["10.88.0.42/24"] },
      });
      const at = { netns: ctr.path };
      const add = assertSuccess(await bridge("ADD", host, at, conf));
      assertEquals(currentResult(add, "1.0.0").ips![0]!.address, "10.88.0.42/24");
      assertEquals(addresses((await link(ctr, "eth0"))!), ["10.88.0.42/24 brd 10.88.0.255"]);
      assertSuccess(await bridge("DEL", host, at, conf));
      await assertNothingLeft(host, [ctr], dataDir);
    }),
});

Deno.test({
  name:
    "bridge DEL with CNI_NETNS empty or the netns gone still removes masquerade, spoof check and lease",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(0, async (dataDir, host) => {
      const br = bridgeName();
      for (const backend of ["iptables", "nftables"]) {
        for (const how of ["empty", "gone"] as const) {
          const ctr = await TestNetns.create("ckc");
          const conf = bridgeConf("1.0.0", br, hostLocal("dual", dataDir), {
            isGateway: true,
            ipMasq: true,
            ipMasqBackend: backend,
            macspoofchk: true,
          });
          try {
            assertSuccess(await bridge("ADD", host, { netns: ctr.path }, conf));
            assert((await masqRules(host)).length > 0);
            assert((await spoofCheck(host)).rules.length > 0);
          } finally {
            await ctr.remove();
          }
          // The kernel tears a namespace down in the background; the host
          // veth goes with its peer once it has.
          await waitFor(async () => (await veths(host)).length === 0, "the host veth to go");
          const path = ctr.path;
          assertSuccess(
            await bridge("DEL", host, { netns: how === "empty" ? "" : path }, conf),
          );
          await assertNothingLeft(host, [], dataDir);
          assertEquals(addresses((await link(host, br))!), gatewaysFor("dual"));
        }
      }
    }),
});

Deno.test({
  name: "bridge failed ADD rolls back the pair, the lease, masquerade and spoof check",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const br = bridgeName();
      const at = { netns: ctr.path };
      const base = { isGateway: true, ipMasq: true, macspoofchk: true };
      // Fails in the host batch: the container already has an eth0.
      await ctr.exec("ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "x0"]);
      const clash = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), base);
      const failed = await bridge("ADD", host, at, clash);
      assertEquals(failed.code, 1, failed.stdout);
      assertMatch(failed.json!.msg as string, /already exists/);
      await ctr.exec("ip", ["link", "del", "eth0"]);
      await assertNothingLeft(host, [ctr], dataDir);
      // Fails in the container, after everything else: a route IPAM asked for cannot be added.
      const badRoute = bridgeConf("1.0.0", br, {
        ...hostLocal("v4", dataDir),
        routes: [{ dst: "10.200.0.0/16", gw: "10.201.0.1" }],
      }, base);
      const failed2 = await bridge("ADD", host, at, badRoute);
      assertEquals(failed2.code, 1, failed2.stdout);
      assertEquals(failed2.json!.code, 5);
      await assertNothingLeft(host, [ctr], dataDir);
      // And the next ADD works.
      assertSuccess(await bridge("ADD", host, at, clash));
      assertSuccess(await bridge("DEL", host, at, clash));
      await assertNothingLeft(host, [ctr], dataDir);
    }),
});

Deno.test({
  name: "bridge ADD succeeds over what a crash between two steps left behind",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const br = bridgeName();
      const at = { netns: ctr.path, containerId: "crash" };
      const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), {
        isGateway: true,
        ipMasq: true,
        macspoofchk: true,
      });
      // Crashed right after making the bridge: it exists, down, without address.
      await host.exec("ip", ["link", "add", br, "type", "bridge"]);
      // Crashed after spoof check and masquerade, before the result: stale
      // chains with stale rules for the same attachment.
      const stale = "cni-br-iface-crash-eth0";
      await host.exec(
        "nft",
        ["-f", "-"],
        [
          "add table bridge nat",
          "add chain bridge nat PREROUTING { type filter hook prerouting priority -300; policy accept; }",
          `add chain bridge nat ${stale}`,
          `add chain bridge nat ${stale}-mac`,
          `add rule bridge nat ${stale}-mac ether saddr 02:00:00:00:00:01 return`,
          `add rule bridge nat ${stale}-mac drop`,
          "",
        ].join("\n"),
      );
      const add = assertSuccess(await bridge("ADD", host, at, conf));
      const result = currentResult(add, "1.0.0");
      await verifyAttachment(result, { host, ctr, bridge: br });
      assert((await link(host, br))!.flags.includes("UP"));
      const macRules = (await spoofCheck(host)).rules.filter((r) => r.startsWith(`${stale}-mac:`));
      assertEquals(macRules.length, 2);
      assertMatch(macRules[0]!, new RegExp(result.interfaces![2]!.mac!));
      // Crashed after the host batch (pair made, nothing else): the runtime's
      // DEL cleans up and the ADD after it works.
      assertSuccess(await bridge("DEL", host, at, conf));
      await host.exec("ip", [
        "link",
        "add",
        "vethdead0001",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        ctr.name,
      ]);
      await host.exec("ip", ["link", "set", "vethdead0001", "master", br, "up"]);
      assertSuccess(await bridge("DEL", host, at, conf));
      assertSuccess(await bridge("ADD", host, at, conf));
      assertSuccess(await bridge("DEL", host, at, conf));
      await assertNothingLeft(host, [ctr], dataDir);
    }),
});

Deno.test({
  name: "bridge CHECK finds what changed since ADD",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const br = bridgeName();
      const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), { isGateway: true });
      const at = { netns: ctr.path };
      const add = assertSuccess(await bridge("ADD", host, at, conf));
      const prev = add.json!;
      const check = (p: unknown) => bridge("CHECK", host, at, { ...conf, prevResult: p });
      const missing = await bridge("CHECK", host, at, conf);
      assertMatch(missing.json!.msg as string, /Required prevResult missing/);
      const ifaces = prev.interfaces as { name: string; mac: string }[];
      const wrongMac = structuredClone(prev);
      (wrongMac.interfaces as { mac: string }[])[0]!.mac = "02:00:00:00:00:99";
      assertMatch(
        (await check(wrongMac)).json!.msg as string,
        /Bridge interface .* Mac doesn't match/,
      );
      const noVeth = structuredClone(prev);
      (noVeth.interfaces as unknown[]).splice(1, 1);
      (noVeth.ips as { interface: number }[])[0]!.interface = 1;
      assertMatch(
        (await check(noVeth)).json!.msg as string,
        /CNI veth created for bridge .* was not found/,
      );
      await ctr.exec("ip", ["addr", "flush", "dev", "eth0"]);
      assertMatch(
        (await check(prev)).json!.msg as string,
        /Failed to match addr 10\.88\.0\.2\/24/,
      );
      await host.exec("ip", ["link", "del", ifaces[1]!.name]);
      assertMatch(
        (await check(prev)).json!.msg as string,
        /Container Interface name in prevResult: eth0 not found/,
      );
      assertSuccess(await bridge("DEL", host, at, conf));
      await assertNothingLeft(host, [ctr], dataDir);
    }),
});

Deno.test({
  name: "bridge STATUS and GC delegate to IPAM; GC drops masquerade of attachments no longer valid",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = bridgeConf("1.1.0", bridgeName(), hostLocal("v4", dataDir), {
        isGateway: true,
        ipMasq: true,
      });
      const at = { netns: ctr.path };
      assertSuccess(await bridge("ADD", host, at, conf));
      assertSuccess(await bridge("STATUS", host, at, conf));
      const keep = {
        ...conf,
        "cni.dev/valid-attachments": [{ containerID: "ctr1", ifname: "eth0" }],
      };
      assertSuccess(await bridge("GC", host, at, keep));
      assert((await masqRules(host)).length > 0);
      assertEquals((await leases(dataDir)).length, 1);
      const none = { ...conf, "cni.dev/valid-attachments": [] };
      assertSuccess(await bridge("GC", host, at, none));
      assertEquals(await masqRules(host), []);
      assertSuccess(await bridge("DEL", host, at, conf));
      await assertNothingLeft(host, [ctr], dataDir);
    }),
});

/** Invalid input: [what, config changes, CNI_ARGS, expected code, message pattern]. */
const BAD: [string, Record<string, unknown>, string, number, RegExp][] = [
  ["vlan above 4094", { vlan: 5000 }, "", 7, /invalid VLAN ID 5000 \(must be between 0 and 4094\)/],
  ["negative vlan", { vlan: -100 }, "", 7, /invalid VLAN ID -100/],
  ["trunk id 0", { vlanTrunk: [{ id: 0 }] }, "", 7, /incorrect trunk id parameter/],
  [
    "trunk minID > maxID",
    { vlanTrunk: [{ minID: 20, maxID: 10 }] },
    "",
    7,
    /minID is greater than maxID/,
  ],
  ["trunk without maxID", { vlanTrunk: [{ minID: 10 }] }, "", 7, /maxID is missing/],
  ["trunk without minID", { vlanTrunk: [{ maxID: 10 }] }, "", 7, /minID is missing/],
  ["trunk maxID 5000", { vlanTrunk: [{ minID: 1, maxID: 5000 }] }, "", 7, /incorrect trunk maxID/],
  [
    "hairpin with promisc",
    { hairpinMode: true, promiscMode: true },
    "",
    7,
    /hairpin mode and promiscuous mode/,
  ],
  [
    "disableContainerInterface with IPAM",
    { disableContainerInterface: true },
    "",
    7,
    /cannot use IPAM/,
  ],
  [
    "unknown ipMasqBackend",
    { ipMasq: true, ipMasqBackend: "ebtables" },
    "",
    7,
    /unknown ipmasq backend/,
  ],
  ["mtu as a string", { mtu: "1500" }, "", 6, /mtu/],
  ["negative mtu", { mtu: -1 }, "", 7, /mtu/],
  ["isGateway as a string", { isGateway: "true" }, "", 6, /isGateway/],
  ["portIsolation as a string", { portIsolation: "true" }, "", 6, /portIsolation/],
  ["bridge name too long", { bridge: "bridge-name-too-long" }, "", 7, /invalid bridge name/],
  [
    "VLAN gateway name too long",
    { bridge: "br-fifteen-chr", vlan: 100, isGateway: true },
    "",
    7,
    /too long/,
  ],
  ["bad runtimeConfig MAC", { runtimeConfig: { mac: "not-a-mac" } }, "", 7, /invalid MAC address/],
  ["multicast MAC", { args: { cni: { mac: "01:00:5e:00:00:01" } } }, "", 7, /invalid MAC address/],
  ["bad CNI_ARGS MAC", {}, "MAC=zz:zz", 4, /invalid MAC address/],
  ["unknown CNI_ARGS key", {}, "FOO=bar", 4, /unknown args/],
];

Deno.test({
  name: "bridge invalid options: a CNI error with the right code, and nothing made",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const br = bridgeName();
      for (const [what, extra, args, code, pattern] of BAD) {
        const conf = { ...bridgeConf("1.0.0", br, hostLocal("v4", dataDir)), ...extra };
        const add = await bridge("ADD", host, { netns: ctr.path, args }, conf);
        assertEquals(add.code, 1, `${what}: ${add.stdout}`);
        assertEquals(add.json!.code, code, `${what}: ${add.stdout}`);
        assertMatch(add.json!.msg as string, pattern, what);
        await assertNothingLeft(host, [ctr], dataDir);
        assertEquals(await links(host), [], `${what}: nothing in the host, not even the bridge`);
      }
      // A link of another kind with the bridge's name.
      await host.exec("ip", ["link", "add", br, "type", "veth", "peer", "name", "otherend"]);
      const add = await bridge(
        "ADD",
        host,
        { netns: ctr.path },
        bridgeConf("1.0.0", br, hostLocal("v4", dataDir)),
      );
      assertEquals(add.json!.code, 7, add.stdout);
      assertMatch(
        add.json!.msg as string,
        new RegExp(`"${br}" already exists but is not a bridge`),
      );
      assertEquals((await links(host)).map((l) => l.ifname).sort(), [br, "otherend"].sort());
      assertEquals(await links(ctr), []);
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "bridge lab-br0 walkthrough: keys outside ipam are ignored, and named on stderr",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const file = new URL("../../../examples/lab-br0.conf", import.meta.url);
      const text = await Deno.readTextFile(file);
      assertEquals(
        text.trim(),
        `{"cniVersion":"0.4.0","name":"lab-br0","type":"bridge","bridge":"lab-br0","isGateway":true,"ipMasq":true,"ipam":{"type":"host-local","subnet":"10.15.10.0/24"},"routes":[{"dst":"0.0.0.0/0"}],"rangeStart":"10.15.10.100","rangeEnd":"10.15.10.200","gateway":"10.15.10.99"}`,
      );
      const conf = JSON.parse(text);
      conf.ipam.dataDir = dataDir;
      const at = { netns: ctr.path };
      const add = assertSuccess(await bridge("ADD", host, at, conf));
      assertMatch(
        add.stderr,
        /ignoring unknown top-level config keys: routes, rangeStart, rangeEnd, gateway/,
      );
      assertEquals(add.stderr.trim().split("\n").length, 1);
      // host-local allocates from .2 with gateway .1; no routes at all.
      assertEquals(add.json, {
        cniVersion: "0.4.0",
        interfaces: add.json!.interfaces as unknown[],
        ips: [{ version: "4", interface: 2, address: "10.15.10.2/24", gateway: "10.15.10.1" }],
        dns: {},
      });
      assertEquals(addresses((await link(host, "lab-br0"))!), ["10.15.10.1/24 brd 10.15.10.255"]);
      assertEquals(await routes(ctr), []);
      assert(
        (await iptablesMasq(host)).some((r) => r.startsWith("-A POSTROUTING -s 10.15.10.2/32")),
      );
      assertSuccess(await bridge("CHECK", host, at, withPrev(conf, add)));
      assertSuccess(await bridge("DEL", host, at, conf));
      await assertNothingLeft(host, [ctr], dataDir);
    }),
});

Deno.test({
  name:
    "bridge DEL with an empty CNI_NETNS while the namespace lives removes the pair via prevResult",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const br = bridgeName();
      const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), {
        isGateway: true,
        ipMasq: true,
      });
      const add = assertSuccess(await bridge("ADD", host, { netns: ctr.path }, conf));
      assertEquals((await veths(host)).length, 1);
      assertSuccess(await bridge("DEL", host, { netns: "" }, withPrev(conf, add)));
      assertEquals(await veths(host), []);
      assertEquals((await links(ctr)).filter((l) => l.ifname !== "lo"), []);
      assertEquals(await masqRules(host), []);
      assertEquals(await leases(dataDir), []);
      assert((await link(host, br)) !== undefined, "the bridge stays");
    }),
});
