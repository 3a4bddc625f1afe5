import { assert, assertEquals, assertMatch, assertNotEquals } from "../../helpers/assert.ts";
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
import { link, links, sysctl } from "../../helpers/kernel.ts";
import {
  linkConf,
  linkNames,
  macvlan,
  makeMaster,
  verifyLink,
  VERSIONS_AND_FAMILIES,
} from "../../helpers/links.ts";
import { ping } from "../../helpers/ping.ts";
import { requireKernel } from "../../helpers/kernel_features.ts";
import { versionAtLeast } from "../../../lib/cni/spec/version.ts";

const cannotRun = !await requireKernel("macvlan") || !haveReference;

for (const [version, families] of VERSIONS_AND_FAMILIES) {
  Deno.test({
    name: `macvlan ADD/CHECK/DEL/DEL ${families} (cniVersion ${version}) matches the kernel`,
    ignore: cannotRun,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const master = await makeMaster(host);
        const conf = linkConf("macvlan", version, {
          master,
          ipam: hostLocal(families, dataDir, { routes: defaultRoutes(families) }),
        });
        const at = { netns: ctr.path };
        const add = assertSuccess(await macvlan("ADD", host, at, conf));
        assertEquals(add.json!.cniVersion, version);
        const result = currentResult(add, version);
        assertEquals(result.ips!.length, families === "dual" ? 2 : 1);
        if (versionAtLeast(version, "0.3.0")) {
          const l = await verifyLink(result, {
            ctr,
            kind: "macvlan",
            data: { mode: "bridge" },
            routes: ["default via 10.88.0.1 dev eth0"],
          });
          assertEquals(l.mtu, 1500);
        }
        // The segment hears about the new addresses at once.
        assertEquals(await sysctl(ctr, "net/ipv4/conf/eth0/arp_notify"), "1");
        assertEquals(await sysctl(ctr, "net/ipv6/conf/eth0/ndisc_notify"), "1");
        assertEquals((await leases(dataDir)).length, result.ips!.length);
        if (versionAtLeast(version, "0.4.0")) {
          assertSuccess(await macvlan("CHECK", host, at, withPrev(conf, add)));
        }
        for (let i = 0; i < 2; i++) {
          assertSuccess(await macvlan("DEL", host, at, conf));
          assertEquals(await links(ctr), []);
          assertEquals(await leases(dataDir), []);
        }
        // The master is untouched.
        assertEquals((await linkNames(host)).includes(master), true);
      }),
  });
}

Deno.test({
  name: "macvlan modes private, vepa, passthru; CHECK notices another mode",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const master = await makeMaster(host);
      const at = { netns: ctr.path };
      for (const mode of ["private", "vepa", "passthru"]) {
        const conf = linkConf("macvlan", "1.0.0", { master, mode, ipam: hostLocal("v4", dataDir) });
        const add = assertSuccess(await macvlan("ADD", host, at, conf));
        await verifyLink(currentResult(add, "1.0.0"), { ctr, kind: "macvlan", data: { mode } });
        assertSuccess(await macvlan("CHECK", host, at, withPrev(conf, add)));
        const other = { ...withPrev(conf, add), mode: mode === "vepa" ? "private" : "vepa" };
        const check = await macvlan("CHECK", host, at, other);
        assertEquals(check.code, 1, check.stdout);
        assertMatch(check.json!.msg as string, new RegExp(`mode ${mode} does not match`));
        assertSuccess(await macvlan("DEL", host, at, conf));
        assertEquals(await links(ctr), []);
      }
      const bad = linkConf("macvlan", "1.0.0", {
        master,
        mode: "source",
        ipam: hostLocal("v4", dataDir),
      });
      const add = await macvlan("ADD", host, at, bad);
      assertEquals([add.code, add.json!.code], [1, 7], add.stdout);
      assertEquals(add.json!.msg, 'unknown macvlan mode: "source"');
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "macvlan mtu: below the master's is set; above it is refused with code 7, nothing left",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const master = await makeMaster(host, "ckm0", undefined, "ckm0p", 1400);
      const at = { netns: ctr.path };
      const ok = linkConf("macvlan", "1.0.0", {
        master,
        mtu: 1300,
        ipam: hostLocal("v4", dataDir),
      });
      const add = assertSuccess(await macvlan("ADD", host, at, ok));
      await verifyLink(currentResult(add, "1.0.0"), { ctr, kind: "macvlan", mtu: 1300 });
      assertSuccess(await macvlan("DEL", host, at, ok));
      // Unset, it is the master's.
      const inherit = linkConf("macvlan", "1.0.0", { master, ipam: hostLocal("v4", dataDir) });
      const add2 = assertSuccess(await macvlan("ADD", host, at, inherit));
      await verifyLink(currentResult(add2, "1.0.0"), { ctr, kind: "macvlan", mtu: 1400 });
      assertSuccess(await macvlan("DEL", host, at, inherit));
      for (const mtu of [1500, -1]) {
        const conf = linkConf("macvlan", "1.0.0", { master, mtu, ipam: hostLocal("v4", dataDir) });
        const bad = await macvlan("ADD", host, at, conf);
        assertEquals([bad.code, bad.json!.code], [1, 7], bad.stdout);
        assertEquals(bad.json!.msg, `invalid MTU ${mtu}, must be [0, master MTU(1400)]`);
        assertEquals(await links(ctr), []);
        assertEquals(await leases(dataDir), []);
      }
    }),
});

Deno.test({
  name: "macvlan MAC: the config's, then CNI_ARGS MAC, then runtimeConfig.mac; bad ones refused",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const master = await makeMaster(host);
      const base = { master, ipam: hostLocal("v4", dataDir) };
      const cases: [Record<string, unknown>, string, string][] = [
        [{ mac: "02:00:00:00:00:01" }, "", "02:00:00:00:00:01"],
        [
          { mac: "02:00:00:00:00:01" },
          "IgnoreUnknown=1;MAC=02:00:00:00:00:02",
          "02:00:00:00:00:02",
        ],
        [
          { mac: "02:00:00:00:00:01", runtimeConfig: { mac: "02:00:00:00:00:03" } },
          "IgnoreUnknown=1;MAC=02:00:00:00:00:02",
          "02:00:00:00:00:03",
        ],
      ];
      for (const [extra, args, want] of cases) {
        const conf = linkConf("macvlan", "1.0.0", { ...base, ...extra });
        const at = { netns: ctr.path, args };
        const add = assertSuccess(await macvlan("ADD", host, at, conf));
        const result = currentResult(add, "1.0.0");
        assertEquals(result.interfaces![0]!.mac, want);
        assertEquals((await link(ctr, "eth0"))!.address, want);
        assertSuccess(await macvlan("CHECK", host, at, withPrev(conf, add)));
        assertSuccess(await macvlan("DEL", host, at, conf));
      }
      const bad: [Record<string, unknown>, string, number][] = [
        [{ mac: "not-a-mac" }, "", 7],
        [{}, "IgnoreUnknown=1;MAC=01:00:00:00:00:01", 4],
        [{ runtimeConfig: { mac: "zz" } }, "", 7],
        [{}, "MAC=02:00:00:00:00:01;FOO=1", 4],
      ];
      for (const [extra, args, code] of bad) {
        const conf = linkConf("macvlan", "1.0.0", { ...base, ...extra });
        const add = await macvlan("ADD", host, { netns: ctr.path, args }, conf);
        assertEquals([add.code, add.json!.code], [1, code], `${args}: ${add.stdout}`);
      }
      assertEquals(await links(ctr), []);
      assertEquals(await leases(dataDir), []);
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
  name: "macvlan bcqueuelen is set on the link",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const master = await makeMaster(host);
      const conf = linkConf("macvlan", "1.1.0", {
        master,
        bcqueuelen: 100,
        ipam: hostLocal("v4", dataDir),
      });
      const add = assertSuccess(await macvlan("ADD", host, { netns: ctr.path }, conf));
      await verifyLink(currentResult(add, "1.1.0"), {
        ctr,
        kind: "macvlan",
        data: { bcqueuelen: 100 },
      });
      assertSuccess(await macvlan("DEL", host, { netns: ctr.path }, conf));
    }),
});

Deno.test({
  name: "macvlan L2 (no IPAM type): the link is up without addresses; DEL needs no IPAM",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (_dataDir, host, ctr) => {
      const master = await makeMaster(host);
      const at = { netns: ctr.path };
      for (const ipam of [undefined, {}]) {
        const conf = linkConf("macvlan", "1.0.0", { master, ...(ipam ? { ipam } : {}) });
        const add = assertSuccess(await macvlan("ADD", host, at, conf));
        const result = currentResult(add, "1.0.0");
        assertEquals(result.ips, undefined);
        await verifyLink(result, { ctr, kind: "macvlan", addrs: [] });
        assertSuccess(await macvlan("CHECK", host, at, withPrev(conf, add)));
        assertSuccess(await macvlan("DEL", host, at, conf));
        assertEquals(await links(ctr), []);
      }
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
  name: "macvlan STATUS and GC (cniVersion 1.1.0): IPAM's, and STATUS wants the master",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const master = await makeMaster(host);
      const conf = linkConf("macvlan", "1.1.0", { master, ipam: hostLocal("v4", dataDir) });
      const env = (cmd: string) => cniEnv(cmd, { containerId: "", ifname: "" });
      assertSuccess(await runApplet("macvlan", { env: env("STATUS"), stdin: conf, host }));
      const missing = await runApplet("macvlan", {
        env: env("STATUS"),
        stdin: { ...conf, master: "cknone" },
        host,
      });
      assertEquals([missing.code, missing.json!.code], [1, 50], missing.stdout);
      // GC frees the leases of attachments not named valid.
      assertSuccess(await macvlan("ADD", host, { containerId: "keep", netns: ctr.path }, conf));
      assertEquals((await leases(dataDir)).length, 1);
      const gc = (valid: unknown[]) =>
        runApplet("macvlan", {
          env: env("GC"),
          stdin: { ...conf, "cni.dev/valid-attachments": valid },
          host,
        });
      assertSuccess(await gc([{ containerID: "keep", ifname: "eth0" }]));
      assertEquals((await leases(dataDir)).length, 1);
      assertSuccess(await gc([]));
      assertEquals(await leases(dataDir), []);
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

Deno.test({
  name: "macvlan 20 parallel ADDs on one master: distinct addresses and MACs; DELs leave nothing",
  ignore: cannotRun,
  fn: () =>
    withDataDirAndNamespaces(20, async (dataDir, host, ...ctrs) => {
      const master = await makeMaster(host);
      const conf = linkConf("macvlan", "1.0.0", { master, ipam: hostLocal("v4", dataDir) });
      const at = (i: number) => ({ containerId: `par${i}`, netns: ctrs[i]!.path });
      const adds = await Promise.all(ctrs.map((_, i) => macvlan("ADD", host, at(i), conf)));
      adds.forEach((a) => assertSuccess(a));
      const results = adds.map((a) => currentResult(a, "1.0.0"));
      const ips = new Set(results.map((r) => r.ips![0]!.address));
      const macs = new Set(results.map((r) => r.interfaces![0]!.mac));
      assertEquals([ips.size, macs.size], [20, 20]);
      for (const [i, r] of results.entries()) {
        assertEquals((await link(ctrs[i]!, "eth0"))!.address, r.interfaces![0]!.mac);
      }
      const dels = await Promise.all(ctrs.map((_, i) => macvlan("DEL", host, at(i), conf)));
      dels.forEach((d) => assertSuccess(d));
      for (const c of ctrs) assertEquals(await links(c), []);
      assertEquals(await leases(dataDir), []);
      assertNotEquals(await linkNames(host), []);
    }),
});
