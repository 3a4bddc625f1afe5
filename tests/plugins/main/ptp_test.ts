import { assert, assertEquals, assertMatch } from "../../helpers/assert.ts";
import {
  ALL_TEST_VERSIONS,
  assertSuccess,
  cniEnv,
  currentResult,
  DIST_BIN,
  haveReference,
  REFERENCE_BIN,
  runApplet,
  withPrev,
} from "../../helpers/applet.ts";
import { canNetns, TestNetns, waitFor, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { defaultRoutes, leases } from "../../helpers/ipam.ts";
import { iptablesMasq, links, masqRules, routes, veths } from "../../helpers/kernel.ts";
import { ptp, ptpConf, verifyAttachment } from "../../helpers/ptp.ts";
import { ping } from "../../helpers/ping.ts";
import { versionAtLeast } from "../../../lib/cni/spec/version.ts";

/** Nothing of the attachment is left: no veth on either side, no lease, no host route. */
async function assertGone(host: TestNetns, ctr: TestNetns | undefined, dataDir: string) {
  assertEquals(await veths(host), []);
  assertEquals(await routes(host), []);
  if (ctr) assertEquals(await links(ctr), []);
  assertEquals(await leases(dataDir), []);
}

for (const version of ALL_TEST_VERSIONS) {
  for (const families of ["v4", "v6", "dual"] as const) {
    Deno.test({
      name: `ptp ADD/CHECK/DEL/DEL ${families} (cniVersion ${version}) matches the kernel`,
      ignore: !canNetns || !haveReference,
      fn: () =>
        withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
          const conf = ptpConf(version, families, dataDir);
          const at = { netns: ctr.path };
          const add = assertSuccess(await ptp("ADD", host, at, conf));
          assertEquals(add.json!.cniVersion, version);
          const result = currentResult(add, version);
          assertEquals(result.ips!.length, families === "dual" ? 2 : 1);
          if (!versionAtLeast(version, "0.3.0")) assertEquals(result.interfaces, undefined);
          await verifyAttachment(result, { host, ctr, ipamRoutes: defaultRoutes(families) });
          assertEquals((await leases(dataDir)).length, result.ips!.length);
          // Forwarding is what makes the host a router for its containers.
          const forwarding = await host.exec("sysctl", [
            "-n",
            "net.ipv4.ip_forward",
            "net.ipv6.conf.all.forwarding",
          ]);
          assertEquals(forwarding.split("\n").slice(0, 2), [
            families === "v6" ? "0" : "1",
            families === "v4" ? "0" : "1",
          ]);
          if (versionAtLeast(version, "0.4.0")) {
            assertSuccess(await ptp("CHECK", host, at, withPrev(conf, add)));
          }
          for (let i = 0; i < 2; i++) {
            assertSuccess(await ptp("DEL", host, at, conf));
            await assertGone(host, ctr, dataDir);
          }
        }),
    });
  }
}

for (const version of ALL_TEST_VERSIONS) {
  Deno.test({
    name: `ptp mtu and dns override (cniVersion ${version})`,
    ignore: !canNetns || !haveReference,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const dns = { nameservers: ["10.77.0.53"], domain: "ptp.test", search: ["ptp.test"] };
        const conf = ptpConf(version, "v4", dataDir, { mtu: 1400, dns });
        const at = { netns: ctr.path };
        const add = assertSuccess(await ptp("ADD", host, at, conf));
        assertEquals(add.json!.dns, dns);
        await verifyAttachment(currentResult(add, version), {
          host,
          ctr,
          ipamRoutes: defaultRoutes("v4"),
          mtu: 1400,
        });
        if (versionAtLeast(version, "0.4.0")) {
          assertSuccess(await ptp("CHECK", host, at, withPrev(conf, add)));
        }
        assertSuccess(await ptp("DEL", host, at, conf));
        await assertGone(host, ctr, dataDir);
      }),
  });
}

Deno.test({
  name: "ptp dns without settings keeps the IPAM's (none from host-local)",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = ptpConf("0.4.0", "v4", dataDir, { dns: { nameservers: [] } });
      const add = assertSuccess(await ptp("ADD", host, { netns: ctr.path }, conf));
      // An empty list is still "set", as in the reference (nameservers != nil).
      assertEquals(add.json!.dns, {});
      assertSuccess(await ptp("DEL", host, { netns: ctr.path }, conf));
    }),
});

Deno.test({
  name: "ptp connectivity: host <-> container and container <-> container, IPv4 and IPv6",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, c1, c2) => {
      const conf = ptpConf("1.0.0", "dual", dataDir);
      const r1 = await ptp("ADD", host, { containerId: "c1", netns: c1.path }, conf);
      const r2 = await ptp("ADD", host, { containerId: "c2", netns: c2.path }, conf);
      assertEquals([r1.code, r2.code], [0, 0], r1.stdout + r2.stdout);
      const ip = (run: typeof r1, i: number) =>
        currentResult(run, "1.0.0").ips![i]!.address.split("/")[0]!;
      for (const i of [0, 1]) {
        const [a, b] = [ip(r1, i), ip(r2, i)];
        assert(await ping(host, a), `host -> ${a}`);
        assert(await ping(host, b), `host -> ${b}`);
        assert(await ping(c1, b), `c1 -> ${b}`);
        assert(await ping(c2, a), `c2 -> ${a}`);
        // The gateway answers on every ptp veth.
        const gw = currentResult(r1, "1.0.0").ips![i]!.gateway!;
        assert(await ping(c1, gw), `c1 -> ${gw}`);
        assert(await ping(c2, gw), `c2 -> ${gw}`);
      }
      for (const [id, ns] of [["c1", c1], ["c2", c2]] as const) {
        assertSuccess(await ptp("DEL", host, { containerId: id, netns: ns.path }, conf));
      }
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "ptp CHECK fails when the kernel no longer matches the result",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, ctr, other) => {
      const conf = ptpConf("1.0.0", "v4", dataDir);
      const at = { netns: ctr.path };
      const add = assertSuccess(await ptp("ADD", host, at, conf));
      const check = (prevResult: unknown, where = at) =>
        ptp("CHECK", host, where, { ...conf, prevResult });

      const missing = await ptp("CHECK", host, at, conf);
      assertEquals(missing.json!.msg, "ptp: Required prevResult missing");
      const wrongNs = await check(add.json, { netns: other.path });
      assertMatch(wrongNs.json!.msg as string, /doesn't match configured netns/);
      const prev = add.json as { interfaces: { mac: string }[] };
      const badMac = structuredClone(prev);
      badMac.interfaces[1]!.mac = "02:00:00:00:00:01";
      assertMatch((await check(badMac)).json!.msg as string, /Mac .* doesn't match/);

      await ctr.exec("ip", ["route", "del", "default"]);
      const noRoute = await check(add.json);
      assertEquals(noRoute.code, 1);
      assertMatch(noRoute.json!.msg as string, /route to 0\.0\.0\.0\/0/);
      await ctr.exec("ip", ["addr", "flush", "dev", "eth0"]);
      assertMatch((await check(add.json)).json!.msg as string, /Failed to match addr/);
      assertSuccess(await ptp("DEL", host, at, conf));
    }),
});

Deno.test({
  name: "ptp DEL with CNI_NETNS empty or the netns gone releases the lease and the host veth",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(0, async (dataDir, host) => {
      const conf = ptpConf("1.0.0", "v4", dataDir);
      for (const emptyNetns of [true, false]) {
        const ctr = await TestNetns.create("ckc");
        try {
          assertSuccess(await ptp("ADD", host, { netns: ctr.path }, conf));
          await ctr.remove();
          // The kernel tears a namespace down in the background; the host
          // veth goes with its peer once it has.
          await waitFor(async () => (await veths(host)).length === 0, "the host veth to go");
          assertSuccess(
            await ptp("DEL", host, { netns: emptyNetns ? "" : ctr.path }, conf),
          );
          await assertGone(host, undefined, dataDir);
        } finally {
          await ctr.remove();
        }
      }
    }),
});

Deno.test({
  name: "ptp rejects bad configs with the spec's codes before any work",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const at = { netns: ctr.path };
      const base = ptpConf("1.0.0", "v4", dataDir);
      const cases: [string, Record<string, unknown> | string, number, RegExp][] = [
        ["malformed JSON", '{"cniVersion":"1.0.0","name":"ptpnet",', 6, /unmarshal/],
        ["ipMasq not a boolean", { ...base, ipMasq: "yes" }, 6, /ipMasq/],
        ["mtu not a number", { ...base, mtu: "1400" }, 6, /mtu/],
        ["negative mtu", { ...base, mtu: -1 }, 7, /mtu/],
        ["missing ipam", { ...base, ipam: undefined }, 7, /ipam/],
        ["ipam without type", { ...base, ipam: {} }, 7, /ipam/],
        ["unknown ipMasqBackend", { ...base, ipMasq: true, ipMasqBackend: "pf" }, 7, /backend/],
        ["unknown ipMasqBackend without ipMasq", { ...base, ipMasqBackend: "pf" }, 7, /backend/],
      ];
      for (const [what, conf, code, msg] of cases) {
        const run = await runApplet("ptp", { env: cniEnv("ADD", at), stdin: conf, host });
        assertEquals(run.code, 1, `${what}: ${run.stdout}`);
        assertEquals(run.json!.code, code, `${what}: ${run.stdout}`);
        assertMatch(run.json!.msg as string, msg, what);
      }
      assertEquals(await links(host), []);
      assertEquals(await links(ctr), []);
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "ptp DEL tolerates an unknown ipMasqBackend (it removes both backends' rules anyway)",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = ptpConf("1.0.0", "v4", dataDir, { ipMasq: true });
      assertSuccess(await ptp("ADD", host, { netns: ctr.path }, conf));
      const bad = { ...conf, ipMasqBackend: "pf" };
      assertSuccess(await ptp("DEL", host, { netns: ctr.path }, bad));
      await assertGone(host, ctr, dataDir);
      assertEquals(await iptablesMasq(host), []);
    }),
});

Deno.test({
  name: "ptp ADD with CNI_IFNAME already in the container fails and leaves nothing behind",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      await ctr.exec("ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
      for (const backend of ["iptables", "nftables"]) {
        const conf = ptpConf("1.0.0", "v4", dataDir, { ipMasq: true, ipMasqBackend: backend });
        const add = await ptp("ADD", host, { netns: ctr.path }, conf);
        assertEquals(add.code, 1, add.stdout);
        assertMatch(add.json!.msg as string, /"eth0".*already exists/);
        await assertGone(host, undefined, dataDir);
        assertEquals((await links(ctr)).map((l) => l.ifname).sort(), ["eth0", "peer0"]);
        assertEquals(await masqRules(host), []);
      }
    }),
});

Deno.test({
  name: "ptp ADD with a netns path that does not exist fails and keeps no lease",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(0, async (dataDir, host) => {
      const conf = ptpConf("1.0.0", "v4", dataDir);
      const add = await ptp("ADD", host, { netns: "/run/netns/ck-no-such-ns" }, conf);
      assertEquals(add.code, 1, add.stdout);
      assertMatch(add.json!.msg as string, /netns/);
      assertEquals(await leases(dataDir), []);
      // A path that is not a netns at all.
      const add2 = await ptp("ADD", host, { netns: `${dataDir}` }, conf);
      assertEquals(add2.code, 1, add2.stdout);
      await assertGone(host, undefined, dataDir);
    }),
});

Deno.test({
  name: "ptp with mixed IPAM: cnikit ptp + reference host-local, reference ptp + cnikit host-local",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const pairs: [string, string][] = [[DIST_BIN, REFERENCE_BIN]];
      const haveOwnHostLocal = await Deno.stat(`${DIST_BIN}/host-local`).then(
        () => true,
        () => false,
      );
      if (haveOwnHostLocal) pairs.push([REFERENCE_BIN, DIST_BIN]);
      for (const [ptpBin, ipamBin] of pairs) {
        const conf = ptpConf("1.0.0", "dual", dataDir);
        const env = (cmd: string) => cniEnv(cmd, { netns: ctr.path, path: ipamBin });
        const add = await runApplet("ptp", { env: env("ADD"), stdin: conf, host, bin: ptpBin });
        assertEquals(add.code, 0, `${ptpBin}+${ipamBin}: ${add.stdout}${add.stderr}`);
        await verifyAttachment(currentResult(add, "1.0.0"), {
          host,
          ctr,
          ipamRoutes: defaultRoutes("dual"),
        });
        assertSuccess(
          await runApplet("ptp", {
            env: env("CHECK"),
            stdin: withPrev(conf, add),
            host,
            bin: ptpBin,
          }),
        );
        assertSuccess(
          await runApplet("ptp", { env: env("DEL"), stdin: conf, host, bin: ptpBin }),
        );
        await assertGone(host, ctr, dataDir);
      }
    }),
});

Deno.test({
  name: "ptp STATUS (cniVersion 1.1.0) asks the IPAM plugin; below 1.1.0 it is refused",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(0, async (dataDir, host) => {
      const env = cniEnv("STATUS", { containerId: "", ifname: "" });
      assertSuccess(
        await runApplet("ptp", { env, stdin: ptpConf("1.1.0", "v4", dataDir), host }),
      );
      const noIpam = await runApplet("ptp", {
        env: { ...env, CNI_PATH: "/nonexistent" },
        stdin: ptpConf("1.1.0", "v4", dataDir),
        host,
      });
      assertEquals(noIpam.code, 1);
      assertMatch(noIpam.json!.msg as string, /failed to find plugin "host-local"/);
      const old = await runApplet("ptp", { env, stdin: ptpConf("1.0.0", "v4", dataDir), host });
      assertEquals(old.json!.code, 1);
    }),
});

Deno.test({
  name: "ptp DEL whose IPAM fails still removes the interface and the rules, then reports",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = ptpConf("1.0.0", "v4", dataDir, { ipMasq: true });
      assertSuccess(await ptp("ADD", host, { netns: ctr.path }, conf));
      const del = await runApplet("ptp", {
        env: cniEnv("DEL", { netns: ctr.path, path: "/nonexistent" }),
        stdin: conf,
        host,
      });
      assertEquals(del.code, 1, del.stdout);
      assertEquals(del.json!.code, 7);
      assertMatch(del.json!.msg as string, /failed to find plugin "host-local"/);
      assertEquals(await links(ctr), []);
      assertEquals(await iptablesMasq(host), []);
      assertEquals((await leases(dataDir)).length, 1);
      assertSuccess(await ptp("DEL", host, { netns: ctr.path }, conf));
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "ptp DEL with an empty CNI_NETNS while the namespace lives removes the pair via prevResult",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = ptpConf("1.0.0", "v4", dataDir, { ipMasq: true });
      const add = assertSuccess(await ptp("ADD", host, { netns: ctr.path }, conf));
      assertEquals((await veths(host)).length, 1);
      assertSuccess(await ptp("DEL", host, { netns: "" }, withPrev(conf, add)));
      assertEquals(await veths(host), []);
      assertEquals(await routes(host), []);
      assertEquals((await links(ctr)).filter((l) => l.ifname !== "lo"), []);
      assertEquals(await masqRules(host), []);
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "ptp decodes its config as Go does: null is absent, keys match case-insensitively",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = {
        ...ptpConf("1.0.0", "v4", dataDir),
        ipMasq: null,
        ipMasqBackend: null,
        MTU: 1400,
        dns: null,
      };
      const at = { netns: ctr.path };
      const add = assertSuccess(await ptp("ADD", host, at, conf));
      const eth0 = (await links(ctr)).find((l) => l.ifname === "eth0");
      assertEquals(eth0?.mtu, 1400);
      assertEquals(await iptablesMasq(host), []);
      assertEquals(add.json!.dns, undefined);
      assertSuccess(await ptp("DEL", host, at, conf));
      await assertGone(host, ctr, dataDir);
    }),
});
