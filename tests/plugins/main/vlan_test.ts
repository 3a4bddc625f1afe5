/**
 * vlan against the kernel: this machine's has no 8021q, so the file runs in
 * the second kernel (requireKernel), where each plugin call costs seconds;
 * the tests share namespaces and calls where they can.
 */

import { assert, assertEquals, assertMatch } from "../../helpers/assert.ts";
import {
  assertSuccess,
  cniEnv,
  currentResult,
  haveReference,
  REFERENCE_BIN,
  runApplet,
  withPrev,
} from "../../helpers/applet.ts";
import { TestNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { defaultRoutes, type Families, hostLocal, leases } from "../../helpers/ipam.ts";
import { link, links } from "../../helpers/kernel.ts";
import {
  everyVersion,
  linkConf,
  linkNames,
  linkSnapshot,
  makeMaster,
  verifyLink,
  vlan,
} from "../../helpers/links.ts";
import { ping } from "../../helpers/ping.ts";
import { requireKernel } from "../../helpers/kernel_features.ts";

const cannotRun = !await requireKernel("vlan") || !haveReference;

Deno.test({
  name: "vlan ADD/CHECK/DEL of every cniVersion matches the kernel; DEL again succeeds",
  ignore: cannotRun,
  fn: () =>
    everyVersion({
      run: vlan,
      setup: async (host) => {
        await makeMaster(host);
      },
      conf: (version, families, dataDir) =>
        linkConf("vlan", version, {
          master: "ckm0",
          vlanId: 100,
          ipam: hostLocal(families, dataDir, { routes: defaultRoutes(families) }),
        }),
      expect: {
        kind: "vlan",
        data: { id: 100, protocol: "802.1Q" },
        mtu: 1500,
        routes: ["default via 10.88.0.1 dev eth0"],
      },
    }),
});

Deno.test({
  name: "vlan config errors (code 7); mtu below the master's; CHECK compares id and MTU",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const master = await makeMaster(host, "ckm0", undefined, "ckm0p", 1400);
      const ipam = hostLocal("v4", dataDir);
      const cases: [Record<string, unknown>, RegExp][] = [
        [{ vlanId: 5, ipam }, /"master" field is required/],
        [{ master, vlanId: 4095, ipam }, /invalid VLAN ID 4095/],
        [{ master, vlanId: 5 }, /ipam section with a type is required/],
        [
          { master, vlanId: 5, mtu: 1500, ipam },
          /invalid MTU 1500, must be \[0, master MTU\(1400\)\]/,
        ],
        [{ master: "cknone", vlanId: 5, ipam }, /failed to lookup master "cknone"/],
      ];
      for (const [extra, msg] of cases) {
        const add = await vlan("ADD", host, { netns: ctr.path }, linkConf("vlan", "1.0.0", extra));
        assertEquals([add.code, add.json!.code], [1, 7], add.stdout);
        assertMatch(add.json!.msg as string, msg);
      }
      assertEquals(await links(ctr), []);
      assertEquals(await leases(dataDir), []);
      const conf = linkConf("vlan", "1.0.0", { master, vlanId: 7, mtu: 1300, ipam });
      const at = { netns: ctr.path };
      const add = assertSuccess(await vlan("ADD", host, at, conf));
      const l = await verifyLink(currentResult(add, "1.0.0"), { ctr, kind: "vlan", mtu: 1300 });
      // A vlan has its master's MAC.
      assertEquals(l.address, (await link(host, master))!.address);
      const otherId = await vlan("CHECK", host, at, { ...withPrev(conf, add), vlanId: 8 });
      assertEquals(otherId.code, 1, otherId.stdout);
      assertMatch(otherId.json!.msg as string, /VLAN id 7, configured 8/);
      const otherMtu = await vlan("CHECK", host, at, { ...withPrev(conf, add), mtu: 1200 });
      assertEquals(otherMtu.code, 1, otherMtu.stdout);
      assertSuccess(await vlan("DEL", host, at, conf));
    }),
});

Deno.test({
  name: "vlan linkInContainer: the master is the container's",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      await makeMaster(ctr, "ckin0", undefined, "ckin0p");
      const conf = linkConf("vlan", "1.0.0", {
        master: "ckin0",
        vlanId: 30,
        linkInContainer: true,
        ipam: hostLocal("v4", dataDir),
      });
      const at = { netns: ctr.path };
      const add = assertSuccess(await vlan("ADD", host, at, conf));
      const l = await verifyLink(currentResult(add, "1.0.0"), {
        ctr,
        kind: "vlan",
        data: { id: 30 },
      });
      assertEquals(l.link, "ckin0");
      assertSuccess(await vlan("CHECK", host, at, withPrev(conf, add)));
      assertSuccess(await vlan("DEL", host, at, conf));
      assertEquals(await linkNames(ctr), ["ckin0", "ckin0p"]);
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "vlan failed ADD leaves nothing; DEL succeeds without the master and the netns; STATUS, GC",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(0, async (dataDir, host) => {
      const master = await makeMaster(host);
      const conf = linkConf("vlan", "1.1.0", { master, vlanId: 9, ipam: hostLocal("v4", dataDir) });
      const env = (cmd: string) => cniEnv(cmd, { containerId: "", ifname: "" });
      assertSuccess(await runApplet("vlan", { env: env("STATUS"), stdin: conf, host }));
      const ctr = await TestNetns.create("ckc");
      try {
        const at = { netns: ctr.path };
        await ctr.exec("ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "x0"]);
        const clash = await vlan("ADD", host, at, conf);
        assertMatch(clash.json!.msg as string, /"eth0" already exists/);
        assertEquals(await linkNames(ctr), ["eth0", "x0"]);
        await ctr.exec("ip", ["link", "del", "eth0"]);
        assertEquals(await leases(dataDir), []);

        assertSuccess(await vlan("ADD", host, at, conf));
        await host.exec("ip", ["link", "del", master]);
        // The reference's DEL fails here: its config load looks up the master's MTU.
        assertSuccess(await vlan("DEL", host, at, conf));
        assertEquals(await links(ctr), []);
        assertEquals(await leases(dataDir), []);
        await ctr.remove();
        assertSuccess(await vlan("DEL", host, at, conf));
        assertSuccess(await vlan("DEL", host, { netns: "" }, conf));
      } finally {
        await ctr.remove();
      }
      const missing = await runApplet("vlan", { env: env("STATUS"), stdin: conf, host });
      assertEquals([missing.code, missing.json!.code], [1, 50], missing.stdout);
      await makeMaster(host);
      const other = await TestNetns.create("ckc");
      try {
        assertSuccess(await vlan("ADD", host, { containerId: "x", netns: other.path }, conf));
        const gc = { ...conf, "cni.dev/valid-attachments": [] };
        assertSuccess(await runApplet("vlan", { env: env("GC"), stdin: gc, host }));
        assertEquals(await leases(dataDir), []);
      } finally {
        await other.remove();
      }
    }),
});

Deno.test({
  name: "vlan traffic: a container reaches a peer on its VLAN id, not one on another id",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, c100, c200) => {
      // The segment: the master's peer in its own namespace, with a peer on VLAN 100.
      const segment = await TestNetns.create("cks");
      try {
        const master = await makeMaster(host, "ckm0", segment, "ckm0p");
        await segment.exec("ip", [
          "link",
          "add",
          "link",
          "ckm0p",
          "name",
          "p100",
          "type",
          "vlan",
          "id",
          "100",
        ]);
        await segment.exec("ip", ["addr", "add", "10.88.0.250/24", "dev", "p100"]);
        await segment.exec("ip", ["link", "set", "p100", "up"]);
        const conf = (id: number) =>
          linkConf("vlan", "1.0.0", { master, vlanId: id, ipam: hostLocal("v4", dataDir) });
        const a = { containerId: "a", netns: c100.path };
        const b = { containerId: "b", netns: c200.path };
        const r100 = assertSuccess(await vlan("ADD", host, a, conf(100)));
        const r200 = assertSuccess(await vlan("ADD", host, b, conf(200)));
        const ip = (run: typeof r100) =>
          currentResult(run, "1.0.0").ips![0]!.address.split("/")[0]!;
        assert(await ping(c100, "10.88.0.250"), "VLAN 100 reaches its peer");
        assert(await ping(segment, ip(r100)), "the peer reaches VLAN 100");
        assert(!await ping(c200, "10.88.0.250", 2), "VLAN 200 does not reach VLAN 100's peer");
        assert(!await ping(segment, ip(r200), 2), "the VLAN 100 peer does not reach VLAN 200");
        assert(!await ping(c200, ip(r100), 2), "VLAN 200 does not reach VLAN 100's container");
        assertSuccess(await vlan("DEL", host, a, conf(100)));
        assertSuccess(await vlan("DEL", host, b, conf(200)));
        assertEquals(await leases(dataDir), []);
      } finally {
        await segment.remove();
      }
    }),
});

const VARIANTS: [string, string, Families, Record<string, unknown>][] = [
  ["v4 id 100", "0.3.1", "v4", { vlanId: 100 }],
  ["dual id 4094 mtu 1400", "0.4.0", "dual", { vlanId: 4094, mtu: 1400 }],
  ["v6 id 0 dns", "1.0.0", "v6", { vlanId: 0, dns: { nameservers: ["fd00:88::53"] } }],
];

for (const [what, version, families, extra] of VARIANTS) {
  Deno.test({
    name: `vlan differential ${what} (cniVersion ${version}): results and kernel state match`,
    ignore: cannotRun,
    fn: async () => {
      const conf = linkConf("vlan", version, {
        master: "ckm0",
        ipam: hostLocal(families, "", { routes: defaultRoutes(families) }),
        ...extra,
      });
      const setup = async (host: TestNetns) => {
        await makeMaster(host);
      };
      const reference = await linkSnapshot(vlan, conf, setup, REFERENCE_BIN);
      const cnikit = await linkSnapshot(vlan, conf, setup);
      assertEquals(cnikit, reference);
      assertEquals(reference.leases, families === "dual" ? 2 : 1);
    },
  });
}
