/**
 * ipvlan against the kernel: this machine's has no ipvlan, so the file runs
 * in the second kernel (requireKernel), where each plugin call costs
 * seconds; the tests share namespaces and calls where they can.
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
  ipvlan,
  linkConf,
  linkNames,
  linkSnapshot,
  makeMaster,
  verifyLink,
} from "../../helpers/links.ts";
import { ping } from "../../helpers/ping.ts";
import { requireKernel } from "../../helpers/kernel_features.ts";

const cannotRun = !await requireKernel("ipvlan") || !haveReference;

Deno.test({
  name: "ipvlan ADD/CHECK/DEL of every cniVersion matches the kernel; DEL again succeeds",
  ignore: cannotRun,
  fn: () =>
    everyVersion({
      run: ipvlan,
      setup: async (host) => {
        await makeMaster(host);
      },
      conf: (version, families, dataDir) =>
        linkConf("ipvlan", version, {
          master: "ckm0",
          ipam: hostLocal(families, dataDir, { routes: defaultRoutes(families) }),
        }),
      expect: { kind: "ipvlan", data: { mode: "l2" }, routes: ["default via 10.88.0.1 dev eth0"] },
    }),
});

Deno.test({
  name: "ipvlan modes l3 and l3s; the MAC is the master's; CHECK notices another mode",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const master = await makeMaster(host);
      const at = { netns: ctr.path };
      for (const mode of ["l3", "l3s"]) {
        const conf = linkConf("ipvlan", "1.0.0", { master, mode, ipam: hostLocal("v4", dataDir) });
        const add = assertSuccess(await ipvlan("ADD", host, at, conf));
        const result = currentResult(add, "1.0.0");
        await verifyLink(result, { ctr, kind: "ipvlan", data: { mode } });
        assertEquals(result.interfaces![0]!.mac, (await link(host, master))!.address);
        assertSuccess(await ipvlan("CHECK", host, at, withPrev(conf, add)));
        const other = await ipvlan("CHECK", host, at, { ...withPrev(conf, add), mode: "l2" });
        assertEquals(other.code, 1, other.stdout);
        assertMatch(other.json!.msg as string, new RegExp(`mode ${mode} does not match`));
        assertSuccess(await ipvlan("DEL", host, at, conf));
        assertEquals(await links(ctr), []);
      }
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "ipvlan chained: the master and the addresses come from prevResult without ipam",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (_dataDir, host, ctr) => {
      await makeMaster(host, "ckch0");
      const prevResult = {
        cniVersion: "1.0.0",
        interfaces: [{ name: "ckch0" }],
        ips: [{ address: "10.66.0.7/24", gateway: "10.66.0.1" }],
        routes: [{ dst: "0.0.0.0/0" }],
      };
      const conf = linkConf("ipvlan", "1.0.0", { prevResult });
      const at = { netns: ctr.path };
      const add = assertSuccess(await ipvlan("ADD", host, at, conf));
      const result = currentResult(add, "1.0.0");
      assertEquals(result.ips, [{ address: "10.66.0.7/24", gateway: "10.66.0.1", interface: 0 }]);
      const l = await verifyLink(result, {
        ctr,
        kind: "ipvlan",
        routes: ["default via 10.66.0.1 dev eth0"],
      });
      assertEquals(l.link_index, (await link(host, "ckch0"))!.ifindex);
      assertSuccess(await ipvlan("CHECK", host, at, { ...conf, prevResult: add.json }));
      assertSuccess(await ipvlan("DEL", host, at, conf));
      assertEquals(await links(ctr), []);

      const two = { ...prevResult, interfaces: [{ name: "a" }, { name: "b" }] };
      const bad = await ipvlan("ADD", host, at, { ...conf, prevResult: two });
      assertEquals([bad.code, bad.json!.code], [1, 7], bad.stdout);
      assertEquals(
        bad.json!.msg,
        "chained master failure. PrevResult lacks a single named interface",
      );
      const noIps = await ipvlan("ADD", host, at, linkConf("ipvlan", "1.0.0", { master: "ckch0" }));
      assertEquals([noIps.code, noIps.json!.code], [1, 7], noIps.stdout);
      assertEquals(await links(ctr), []);
    }),
});

Deno.test({
  name: "ipvlan mtu with the default route's master; linkInContainer",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const at = { netns: ctr.path };
      await makeMaster(host, "ckup0");
      await host.exec("ip", ["addr", "add", "192.0.2.2/24", "dev", "ckup0"]);
      await host.exec("ip", ["route", "add", "default", "via", "192.0.2.1"]);
      const conf = linkConf("ipvlan", "1.0.0", { mtu: 1400, ipam: hostLocal("v4", dataDir) });
      const add = assertSuccess(await ipvlan("ADD", host, at, conf));
      const l = await verifyLink(currentResult(add, "1.0.0"), { ctr, kind: "ipvlan", mtu: 1400 });
      assertEquals(l.link_index, (await link(host, "ckup0"))!.ifindex);
      assertSuccess(await ipvlan("CHECK", host, at, withPrev(conf, add)));
      assertSuccess(await ipvlan("DEL", host, at, conf));

      await makeMaster(ctr, "ckin0", undefined, "ckin0p");
      const inside = linkConf("ipvlan", "1.0.0", {
        master: "ckin0",
        linkInContainer: true,
        ipam: hostLocal("v4", dataDir),
      });
      const add2 = assertSuccess(await ipvlan("ADD", host, at, inside));
      const l2 = await verifyLink(currentResult(add2, "1.0.0"), { ctr, kind: "ipvlan" });
      assertEquals(l2.link, "ckin0");
      assertSuccess(await ipvlan("CHECK", host, at, withPrev(inside, add2)));
      assertSuccess(await ipvlan("DEL", host, at, inside));
      assertEquals(await linkNames(ctr), ["ckin0", "ckin0p"]);
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "ipvlan failed ADD leaves nothing; DEL without netns, master or default route; STATUS, GC",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(0, async (dataDir, host) => {
      const master = await makeMaster(host);
      const env = (cmd: string) => cniEnv(cmd, { containerId: "", ifname: "" });
      const status = linkConf("ipvlan", "1.1.0", { master, ipam: hostLocal("v4", dataDir) });
      assertSuccess(await runApplet("ipvlan", { env: env("STATUS"), stdin: status, host }));
      const missing = await runApplet("ipvlan", {
        env: env("STATUS"),
        stdin: { ...status, master: "cknone" },
        host,
      });
      assertEquals([missing.code, missing.json!.code], [1, 50], missing.stdout);
      const ctr = await TestNetns.create("ckc");
      try {
        const at = { netns: ctr.path };
        const ipam = hostLocal("v4", dataDir);
        for (const bad of [{ mode: "l4" }, { master: "cknone" }]) {
          const add = await ipvlan(
            "ADD",
            host,
            at,
            linkConf("ipvlan", "1.0.0", { master, ipam, ...bad }),
          );
          assertEquals([add.code, add.json!.code], [1, 7], add.stdout);
        }
        await ctr.exec("ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "x0"]);
        const clash = await ipvlan("ADD", host, at, linkConf("ipvlan", "1.0.0", { master, ipam }));
        assertMatch(clash.json!.msg as string, /"eth0" already exists/);
        assertEquals(await linkNames(ctr), ["eth0", "x0"]);
        await ctr.exec("ip", ["link", "del", "eth0"]);
        assertEquals(await leases(dataDir), []);

        // GC frees the lease of an attachment not named valid.
        assertSuccess(await ipvlan("ADD", host, { containerId: "gone", netns: ctr.path }, status));
        const gc = { ...status, "cni.dev/valid-attachments": [] };
        assertSuccess(await runApplet("ipvlan", { env: env("GC"), stdin: gc, host }));
        assertEquals(await leases(dataDir), []);
        await ctr.exec("ip", ["link", "del", "eth0"]);

        const conf = linkConf("ipvlan", "1.0.0", { ipam });
        await host.exec("ip", ["addr", "add", "192.0.2.2/24", "dev", master]);
        await host.exec("ip", ["route", "add", "default", "via", "192.0.2.1"]);
        assertSuccess(await ipvlan("ADD", host, at, conf));
        await ctr.remove();
        await host.exec("ip", ["link", "del", master]);
        // No default route, no master, no netns: the reference's DEL fails here.
        assertSuccess(await ipvlan("DEL", host, at, conf));
        assertSuccess(await ipvlan("DEL", host, { netns: "" }, conf));
        assertEquals(await leases(dataDir), []);
      } finally {
        await ctr.remove();
      }
    }),
});

Deno.test({
  name: "ipvlan traffic: two containers on one master reach each other, in l2 and in l3",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, c1, c2) => {
      const master = await makeMaster(host);
      for (const mode of ["l2", "l3"]) {
        const conf = linkConf("ipvlan", "1.0.0", { master, mode, ipam: hostLocal("v4", dataDir) });
        const a = { containerId: "c1", netns: c1.path };
        const b = { containerId: "c2", netns: c2.path };
        const r1 = assertSuccess(await ipvlan("ADD", host, a, conf));
        const r2 = assertSuccess(await ipvlan("ADD", host, b, conf));
        const ip = (run: typeof r1) => currentResult(run, "1.0.0").ips![0]!.address.split("/")[0]!;
        assert(await ping(c1, ip(r2)), `${mode}: c1 -> ${ip(r2)}`);
        assert(await ping(c2, ip(r1)), `${mode}: c2 -> ${ip(r1)}`);
        assertSuccess(await ipvlan("DEL", host, a, conf));
        assertSuccess(await ipvlan("DEL", host, b, conf));
      }
      assertEquals(await leases(dataDir), []);
    }),
});

const VARIANTS: [string, string, Families, Record<string, unknown>][] = [
  ["l2 v4", "0.3.1", "v4", {}],
  ["l3 dual mtu 1400", "0.4.0", "dual", { mode: "l3", mtu: 1400 }],
  ["l3s v6 dns", "1.0.0", "v6", { mode: "l3s", dns: { nameservers: ["fd00:88::53"] } }],
];

for (const [what, version, families, extra] of VARIANTS) {
  Deno.test({
    name: `ipvlan differential ${what} (cniVersion ${version}): results and kernel state match`,
    ignore: cannotRun,
    fn: async () => {
      const conf = linkConf("ipvlan", version, {
        master: "ckm0",
        ipam: hostLocal(families, "", { routes: defaultRoutes(families) }),
        ...extra,
      });
      const setup = async (host: TestNetns) => {
        await makeMaster(host);
      };
      const reference = await linkSnapshot(ipvlan, conf, setup, REFERENCE_BIN);
      const cnikit = await linkSnapshot(ipvlan, conf, setup);
      // v1.1.1 does not set ndisc_notify (added in v1.4.0); cnikit does, as the newest.
      const withoutNdisc = (s: typeof cnikit) => ({
        ...s,
        sysctls: s.sysctls.filter((_, i) => i % 2 === 0),
      });
      assertEquals(withoutNdisc(cnikit), withoutNdisc(reference));
      assertEquals(reference.leases, families === "dual" ? 2 : 1);
    },
  });
}
