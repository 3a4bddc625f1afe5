/**
 * macvlan's options against the kernel (modes, mtu, MAC sources,
 * bcqueuelen, L2, STATUS and GC) and 20 parallel ADDs on one master. This
 * kernel has macvlan; the file runs here only, since every plugin call
 * costs seconds in the second kernel, where macvlan_test.ts covers the core.
 */

import { assertEquals, assertMatch, assertNotEquals } from "../../helpers/assert.ts";
import {
  assertSuccess,
  cniEnv,
  currentResult,
  haveReference,
  runApplet,
  withPrev,
} from "../../helpers/applet.ts";
import { canNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { hostLocal, leases } from "../../helpers/ipam.ts";
import { link, links } from "../../helpers/kernel.ts";
import { linkConf, linkNames, macvlan, makeMaster, verifyLink } from "../../helpers/links.ts";
import { probeKernel } from "../../helpers/kernel_features.ts";

// A kernel without macvlan has the core in the second kernel (macvlan_test.ts).
const cannotRun = !canNetns || !haveReference || !(await probeKernel(["macvlan"])).macvlan;

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
