/**
 * macvlan against the kernel, the core: every cniVersion, the master's
 * defaults and linkInContainer, rollback, DEL without the netns, traffic.
 * It declares macvlan with requireKernel, so it runs in the second kernel as
 * well as here; the other options and the load tests are in
 * macvlan_options_test.ts, which runs here only (every plugin call costs
 * seconds in the second kernel).
 */

import { assert, assertEquals, assertMatch } from "../../helpers/assert.ts";
import { assertSuccess, currentResult, haveReference, withPrev } from "../../helpers/applet.ts";
import { TestNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { defaultRoutes, hostLocal, leases } from "../../helpers/ipam.ts";
import { link, links, sysctl } from "../../helpers/kernel.ts";
import {
  everyVersion,
  linkConf,
  linkNames,
  macvlan,
  makeMaster,
  verifyLink,
} from "../../helpers/links.ts";
import { ping } from "../../helpers/ping.ts";
import { requireKernel } from "../../helpers/kernel_features.ts";

const cannotRun = !await requireKernel("macvlan") || !haveReference;

Deno.test({
  name: "macvlan ADD/CHECK/DEL of every cniVersion matches the kernel; DEL again succeeds",
  ignore: cannotRun,
  fn: () =>
    everyVersion({
      run: macvlan,
      setup: async (host) => {
        await makeMaster(host);
      },
      conf: (version, families, dataDir) =>
        linkConf("macvlan", version, {
          master: "ckm0",
          ipam: hostLocal(families, dataDir, { routes: defaultRoutes(families) }),
        }),
      expect: {
        kind: "macvlan",
        data: { mode: "bridge" },
        mtu: 1500,
        routes: ["default via 10.88.0.1 dev eth0"],
      },
      // The segment hears about the new addresses at once.
      afterAdd: async (_host, ctr) => {
        assertEquals(await sysctl(ctr, "net/ipv4/conf/eth0/arp_notify"), "1");
        assertEquals(await sysctl(ctr, "net/ipv6/conf/eth0/ndisc_notify"), "1");
      },
    }),
});

Deno.test({
  name:
    "macvlan without master: the default route's link, here or (linkInContainer) in the container",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const at = { netns: ctr.path };
      const conf = linkConf("macvlan", "1.0.0", { ipam: hostLocal("v4", dataDir) });
      const none = await macvlan("ADD", host, at, conf);
      assertEquals([none.code, none.json!.code], [1, 7], none.stdout);
      assertEquals(none.json!.msg, "no default route interface found");
      assertEquals(await leases(dataDir), []);

      await makeMaster(host, "ckup0");
      await host.exec("ip", ["addr", "add", "192.0.2.2/24", "dev", "ckup0"]);
      await host.exec("ip", ["route", "add", "default", "via", "192.0.2.1"]);
      const add = assertSuccess(await macvlan("ADD", host, at, conf));
      const l = await verifyLink(currentResult(add, "1.0.0"), { ctr, kind: "macvlan" });
      // The container's link hangs on the host's ckup0.
      const parent = (await link(host, "ckup0"))!;
      assertEquals(l.link_index, parent.ifindex);
      assertSuccess(await macvlan("CHECK", host, at, withPrev(conf, add)));
      assertSuccess(await macvlan("DEL", host, at, conf));

      // linkInContainer: the master and the default route are the container's.
      await makeMaster(ctr, "ckin0", undefined, "ckin0p");
      await ctr.exec("ip", ["addr", "add", "198.51.100.2/24", "dev", "ckin0"]);
      await ctr.exec("ip", ["route", "add", "default", "via", "198.51.100.1"]);
      const inside = { ...conf, linkInContainer: true };
      const add2 = assertSuccess(await macvlan("ADD", host, at, inside));
      const l2 = await verifyLink(currentResult(add2, "1.0.0"), {
        ctr,
        kind: "macvlan",
        routes: ["default via 198.51.100.1 dev ckin0"],
      });
      assertEquals(l2.link, "ckin0");
      assertSuccess(await macvlan("CHECK", host, at, withPrev(inside, add2)));
      assertSuccess(await macvlan("DEL", host, at, inside));
      assertEquals((await linkNames(ctr)).filter((n) => !n.startsWith("ckin0")), []);
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "macvlan failed ADD leaves nothing: no master, eth0 taken, IPAM failing, a bad route",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const master = await makeMaster(host);
      const at = { netns: ctr.path };
      const ipam = hostLocal("v4", dataDir);
      const noMaster = await macvlan(
        "ADD",
        host,
        at,
        linkConf("macvlan", "1.0.0", { master: "cknone", ipam }),
      );
      assertEquals([noMaster.code, noMaster.json!.code], [1, 7], noMaster.stdout);
      assertMatch(noMaster.json!.msg as string, /failed to lookup master "cknone"/);

      // The container already has an eth0: the rename fails, and that eth0 stays.
      await ctr.exec("ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "x0"]);
      const clash = await macvlan("ADD", host, at, linkConf("macvlan", "1.0.0", { master, ipam }));
      assertEquals(clash.code, 1, clash.stdout);
      assertMatch(clash.json!.msg as string, /"eth0" already exists/);
      assertEquals(await linkNames(ctr), ["eth0", "x0"]);
      await ctr.exec("ip", ["link", "del", "eth0"]);

      const badIpam = linkConf("macvlan", "1.0.0", {
        master,
        ipam: { type: "host-local", dataDir, ranges: [[{ subnet: "not-a-subnet" }]] },
      });
      const failed = await macvlan("ADD", host, at, badIpam);
      assertEquals(failed.code, 1, failed.stdout);
      // A route IPAM asked for that the kernel refuses: fails after everything else.
      const badRoute = linkConf("macvlan", "1.0.0", {
        master,
        ipam: hostLocal("v4", dataDir, { routes: [{ dst: "192.0.2.0/24", gw: "203.0.113.1" }] }),
      });
      const late = await macvlan("ADD", host, at, badRoute);
      assertEquals(late.code, 1, late.stdout);
      assertEquals(await links(ctr), []);
      assertEquals(await leases(dataDir), []);
      assertEquals(await linkNames(host), ["ckm0", "ckm0p"]);
    }),
});

Deno.test({
  name: "macvlan DEL without the netns (empty, or gone) releases the lease",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(0, async (dataDir, host) => {
      const master = await makeMaster(host);
      const conf = linkConf("macvlan", "1.0.0", { master, ipam: hostLocal("v4", dataDir) });
      for (const empty of [true, false]) {
        const ctr = await TestNetns.create("ckc");
        try {
          assertSuccess(await macvlan("ADD", host, { netns: ctr.path }, conf));
          assertEquals((await leases(dataDir)).length, 1);
          if (!empty) await ctr.remove();
          assertSuccess(await macvlan("DEL", host, { netns: empty ? "" : ctr.path }, conf));
          assertEquals(await leases(dataDir), []);
        } finally {
          await ctr.remove();
        }
      }
      // The master may be gone too.
      await host.exec("ip", ["link", "del", master]);
      assertSuccess(await macvlan("DEL", host, { netns: "" }, conf));
    }),
});

Deno.test({
  name: "macvlan traffic: two bridge-mode containers on one master reach each other",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, c1, c2) => {
      const master = await makeMaster(host);
      const conf = linkConf("macvlan", "1.0.0", { master, ipam: hostLocal("dual", dataDir) });
      const r1 = assertSuccess(
        await macvlan("ADD", host, { containerId: "c1", netns: c1.path }, conf),
      );
      const r2 = assertSuccess(
        await macvlan("ADD", host, { containerId: "c2", netns: c2.path }, conf),
      );
      const ip = (run: typeof r1, i: number) =>
        currentResult(run, "1.0.0").ips![i]!.address.split("/")[0]!;
      for (const i of [0, 1]) {
        assert(await ping(c1, ip(r2, i)), `c1 -> ${ip(r2, i)}`);
        assert(await ping(c2, ip(r1, i)), `c2 -> ${ip(r1, i)}`);
      }
      assertSuccess(await macvlan("DEL", host, { containerId: "c1", netns: c1.path }, conf));
      assertSuccess(await macvlan("DEL", host, { containerId: "c2", netns: c2.path }, conf));
      assertEquals(await leases(dataDir), []);
    }),
});
