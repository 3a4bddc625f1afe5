import { assertEquals, assertMatch } from "../../helpers/assert.ts";
import {
  ALL_TEST_VERSIONS,
  assertSuccess,
  cniEnv,
  currentResult,
  haveReference,
  runApplet,
  withPrev,
} from "../../helpers/applet.ts";
import { canNetns, TestNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { probeKernel } from "../../helpers/kernel_features.ts";
import { defaultRoutes, hostLocal, leases } from "../../helpers/ipam.ts";
import { link, links, sysctl } from "../../helpers/kernel.ts";
import { linkConf, linkNames, tap, verifyLink } from "../../helpers/links.ts";
import { versionAtLeast } from "../../../lib/cni/spec/version.ts";

// This kernel has tap devices; where one has none, they cannot be had (the second kernel is
// kept for what this one lacks: every plugin call costs seconds there).
const cannotRun = !canNetns || !haveReference || !(await probeKernel(["tun"])).tun;
const haveSelinux = await Deno.stat("/sys/fs/selinux/enforce").then(() => true, () => false);

for (const version of ALL_TEST_VERSIONS) {
  Deno.test({
    name: `tap ADD/CHECK/DEL/DEL (cniVersion ${version}) matches the kernel`,
    ignore: cannotRun,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const conf = linkConf("tap", version, {
          ipam: hostLocal("v4", dataDir, { routes: defaultRoutes("v4") }),
        });
        const at = { netns: ctr.path };
        const add = assertSuccess(await tap("ADD", host, at, conf));
        assertEquals(add.json!.cniVersion, version);
        const result = currentResult(add, version);
        if (versionAtLeast(version, "0.3.0")) {
          await verifyLink(result, {
            ctr,
            kind: "tun",
            // `ip tuntap`'s flags: no owner and group given.
            data: { type: "tap", pi: false, vnet_hdr: false, multi_queue: false, persist: true },
            routes: ["default via 10.88.0.1 dev eth0"],
          });
        }
        assertEquals(await sysctl(ctr, "net/ipv4/conf/eth0/arp_notify"), "1");
        if (versionAtLeast(version, "0.4.0")) {
          assertSuccess(await tap("CHECK", host, at, withPrev(conf, add)));
        }
        for (let i = 0; i < 2; i++) {
          assertSuccess(await tap("DEL", host, at, conf));
          assertEquals(await links(ctr), []);
          assertEquals(await leases(dataDir), []);
        }
      }),
  });
}

Deno.test({
  name: "tap options: mac (config < CNI_ARGS < runtimeConfig), mtu, multiQueue, owner, group",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (_dataDir, host, ctr) => {
      const cases: [Record<string, unknown>, string, Record<string, unknown>, string][] = [
        [{ mac: "02:00:00:00:00:01", mtu: 1400 }, "", { multi_queue: false }, "02:00:00:00:00:01"],
        [
          { mac: "02:00:00:00:00:01", multiQueue: true, owner: 5 },
          "MAC=02:00:00:00:00:02",
          { multi_queue: true, user: "games", vnet_hdr: false },
          "02:00:00:00:00:02",
        ],
        // Owner and group together: the reference's netlink path (vnet_hdr, packet info).
        [
          { owner: 0, group: 0, runtimeConfig: { mac: "02:00:00:00:00:03" } },
          "MAC=02:00:00:00:00:02",
          { vnet_hdr: true, pi: true, user: "root", group: "root" },
          "02:00:00:00:00:03",
        ],
        [{ owner: 0, group: 0, multiQueue: true }, "", {
          vnet_hdr: true,
          pi: false,
          multi_queue: true,
        }, ""],
      ];
      const at = (args: string) => ({ netns: ctr.path, args });
      for (const [extra, args, data, mac] of cases) {
        const conf = linkConf("tap", "1.0.0", extra);
        const add = assertSuccess(await tap("ADD", host, at(args), conf));
        const l = await verifyLink(currentResult(add, "1.0.0"), {
          ctr,
          kind: "tun",
          data,
          addrs: [],
          ...(extra.mtu ? { mtu: extra.mtu as number } : {}),
        });
        if (mac) assertEquals(l.address, mac);
        assertSuccess(await tap("CHECK", host, at(args), withPrev(conf, add)));
        assertSuccess(await tap("DEL", host, at(args), conf));
        assertEquals(await links(ctr), []);
      }
      const bad = await tap("ADD", host, at("MAC=zz"), linkConf("tap", "1.0.0"));
      assertEquals([bad.code, bad.json!.code], [1, 4], bad.stdout);
    }),
});

Deno.test({
  name: "tap bridge: a port of a bridge inside the container; a missing bridge leaves nothing",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const at = { netns: ctr.path };
      const conf = linkConf("tap", "1.0.0", { bridge: "ckbr", ipam: hostLocal("v4", dataDir) });
      const missing = await tap("ADD", host, at, conf);
      assertEquals([missing.code, missing.json!.code], [1, 7], missing.stdout);
      assertMatch(missing.json!.msg as string, /failed to lookup bridge "ckbr"/);
      assertEquals(await links(ctr), []);
      assertEquals(await leases(dataDir), []);
      await ctr.exec("ip", ["link", "add", "ckbr", "type", "bridge"]);
      const add = assertSuccess(await tap("ADD", host, at, conf));
      await verifyLink(currentResult(add, "1.0.0"), { ctr, kind: "tun" });
      assertEquals((await link(ctr, "eth0"))!.master, "ckbr");
      assertSuccess(await tap("DEL", host, at, conf));
      assertEquals(await linkNames(ctr), ["ckbr"]);
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "tap selinuxContext: where the label cannot be set, ADD fails and leaves nothing",
  // Without SELinux the kernel refuses the exec label, as it refuses the reference's.
  ignore: cannotRun || haveSelinux,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = linkConf("tap", "1.0.0", {
        selinuxContext: "system_u:system_r:container_t:s0",
        ipam: hostLocal("v4", dataDir),
      });
      const add = await tap("ADD", host, { netns: ctr.path }, conf);
      assertEquals(add.code, 1, add.stdout);
      assertMatch(add.json!.msg as string, /failed set socket label/);
      assertEquals(await links(ctr), []);
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "tap L2, rollback on a taken name, DEL without netns, STATUS and GC",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(0, async (dataDir, host) => {
      const ctr = await TestNetns.create("ckc");
      try {
        const at = { netns: ctr.path };
        const l2 = linkConf("tap", "1.1.0");
        const add = assertSuccess(await tap("ADD", host, at, l2));
        await verifyLink(currentResult(add, "1.1.0"), { ctr, kind: "tun", addrs: [] });
        assertSuccess(await tap("DEL", host, at, l2));

        const conf = linkConf("tap", "1.1.0", { ipam: hostLocal("v4", dataDir) });
        await ctr.exec("ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "x0"]);
        const clash = await tap("ADD", host, at, conf);
        assertMatch(clash.json!.msg as string, /"eth0" already exists/);
        assertEquals(await linkNames(ctr), ["eth0", "x0"]);
        await ctr.exec("ip", ["link", "del", "eth0"]);
        assertEquals(await leases(dataDir), []);

        assertSuccess(await tap("ADD", host, at, conf));
        await ctr.remove();
        assertSuccess(await tap("DEL", host, at, conf));
        assertSuccess(await tap("DEL", host, { netns: "" }, conf));
        assertEquals(await leases(dataDir), []);
        const env = (cmd: string) => cniEnv(cmd, { containerId: "", ifname: "" });
        assertSuccess(await runApplet("tap", { env: env("STATUS"), stdin: conf, host }));
        assertSuccess(await runApplet("tap", { env: env("GC"), stdin: conf, host }));
      } finally {
        await ctr.remove();
      }
    }),
});
