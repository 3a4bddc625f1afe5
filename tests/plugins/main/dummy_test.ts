/**
 * dummy against the kernel: this machine's has no dummy links, so the file
 * runs in the second kernel (requireKernel), where each plugin call costs
 * seconds; the tests share namespaces and calls where they can.
 */

import { assertEquals, assertMatch } from "../../helpers/assert.ts";
import {
  assertSuccess,
  cniEnv,
  currentResult,
  haveReference,
  runApplet,
  withPrev,
} from "../../helpers/applet.ts";
import { TestNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { defaultRoutes, hostLocal, leases } from "../../helpers/ipam.ts";
import { links } from "../../helpers/kernel.ts";
import { dummy, everyVersion, linkConf, linkNames, verifyLink } from "../../helpers/links.ts";
import { requireKernel } from "../../helpers/kernel_features.ts";

const cannotRun = !await requireKernel("dummy") || !haveReference;

Deno.test({
  name: "dummy ADD/CHECK/DEL of every cniVersion matches the kernel; DEL again succeeds",
  ignore: cannotRun,
  fn: () =>
    everyVersion({
      run: dummy,
      conf: (version, families, dataDir) =>
        linkConf("dummy", version, {
          ipam: hostLocal(families, dataDir, { routes: defaultRoutes(families) }),
        }),
      expect: { kind: "dummy", routes: ["default via 10.88.0.1 dev eth0"] },
      // Nothing in the host.
      afterAdd: async (host) => assertEquals(await links(host), []),
    }),
});

Deno.test({
  name: "dummy without IPAM (code 7), a taken name, a failing route leave nothing; CHECK sees down",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const at = { netns: ctr.path };
      const noIpam = await dummy("ADD", host, at, linkConf("dummy", "1.0.0", { ipam: {} }));
      assertEquals([noIpam.code, noIpam.json!.code], [1, 7], noIpam.stdout);
      assertEquals(noIpam.json!.msg, "dummy interface requires an IPAM configuration");
      await ctr.exec("ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "x0"]);
      const conf = linkConf("dummy", "1.0.0", { ipam: hostLocal("v4", dataDir) });
      const clash = await dummy("ADD", host, at, conf);
      assertMatch(clash.json!.msg as string, /"eth0" already exists/);
      assertEquals(await linkNames(ctr), ["eth0", "x0"]);
      await ctr.exec("ip", ["link", "del", "eth0"]);
      const badRoute = linkConf("dummy", "1.0.0", {
        ipam: hostLocal("v4", dataDir, { routes: [{ dst: "192.0.2.0/24", gw: "203.0.113.1" }] }),
      });
      assertEquals((await dummy("ADD", host, at, badRoute)).code, 1);
      assertEquals(await links(ctr), []);
      assertEquals(await leases(dataDir), []);

      const add = assertSuccess(await dummy("ADD", host, at, conf));
      await verifyLink(currentResult(add, "1.0.0"), { ctr, kind: "dummy" });
      await ctr.exec("ip", ["link", "set", "eth0", "down"]);
      const down = await dummy("CHECK", host, at, withPrev(conf, add));
      assertEquals(down.code, 1, down.stdout);
      assertEquals(down.json!.msg, "Interface eth0 is down");
      assertSuccess(await dummy("DEL", host, at, conf));
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "dummy DEL without the netns releases the lease; STATUS and GC are IPAM's",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(0, async (dataDir, host) => {
      const conf = linkConf("dummy", "1.1.0", { ipam: hostLocal("v4", dataDir) });
      const env = (cmd: string) => cniEnv(cmd, { containerId: "", ifname: "" });
      const ctr = await TestNetns.create("ckc");
      try {
        assertSuccess(await dummy("ADD", host, { netns: ctr.path }, conf));
        await ctr.remove();
        assertSuccess(await dummy("DEL", host, { netns: ctr.path }, conf));
        assertSuccess(await dummy("DEL", host, { netns: "" }, conf));
        assertEquals(await leases(dataDir), []);
        assertSuccess(await runApplet("dummy", { env: env("STATUS"), stdin: conf, host }));
        const noIpam = await runApplet("dummy", {
          env: { ...env("STATUS"), CNI_PATH: "/nonexistent" },
          stdin: conf,
          host,
        });
        assertEquals(noIpam.code, 1);
      } finally {
        await ctr.remove();
      }
      const other = await TestNetns.create("ckc");
      try {
        assertSuccess(await dummy("ADD", host, { containerId: "x", netns: other.path }, conf));
        const gc = { ...conf, "cni.dev/valid-attachments": [] };
        assertSuccess(await runApplet("dummy", { env: env("GC"), stdin: gc, host }));
        assertEquals(await leases(dataDir), []);
      } finally {
        await other.remove();
      }
    }),
});
