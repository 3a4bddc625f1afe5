/**
 * bandwidth against the kernel: a veth attachment made by the test,
 * bandwidth run as a process inside the fake host, the qdiscs, filters and
 * the IFB read back with `tc -j -raw` and `ip -j`.
 * @module
 */

import { assert, assertEquals, assertMatch } from "../../helpers/assert.ts";
import {
  ALL_TEST_VERSIONS,
  assertSuccess,
  cniEnv,
  currentResult,
  DIST_BIN,
  hostRunner,
  runApplet,
} from "../../helpers/applet.ts";
import { prevResultFor, qdiscs, redirects, tbfOf, vethAttachment } from "../../helpers/chained.ts";
import { link, type LinkJ, links } from "../../helpers/kernel.ts";
import { canNetns, sh, type TestNetns, withNamespaces } from "../../helpers/netns.ts";
import { ifbName } from "../../../plugins/meta/bandwidth/mod.ts";
import { kernelTicks, referenceTbf, tcBurst } from "../../../plugins/meta/bandwidth/tbf.ts";
import { versionAtLeast } from "../../../lib/cni/spec/version.ts";

const bandwidth = hostRunner("bandwidth");

function bwConf(
  version: string,
  prevResult: Record<string, unknown> | undefined,
  extra: Record<string, unknown>,
): Record<string, unknown> {
  return {
    cniVersion: version,
    name: "bwnet",
    type: "bandwidth",
    ...(prevResult ? { prevResult } : {}),
    ...extra,
  };
}

const LIMITS = {
  ingressRate: 8_000_000,
  ingressBurst: 80_000,
  egressRate: 1_000_000,
  egressBurst: 123_456,
};

/** The IFBs of `ns`. */
async function ifbs(ns: TestNetns): Promise<(LinkJ & { ifalias?: string })[]> {
  return (await links(ns)).filter((l) => l.linkinfo?.info_kind === "ifb");
}

Deno.test("bandwidth: the IFB is named as the reference names it", async () => {
  // The name the reference v1.1.1 gave network "bwnet", container "c1".
  assertEquals(await ifbName("bwnet", "c1"), "bwp459546d14214");
});

Deno.test("bandwidth: TBF parameters are the reference's, and tc's burst makes the kernel store them", () => {
  const tick = 15.625;
  // Values the reference v1.1.1 put into the kernel (tc -raw).
  assertEquals(referenceTbf(8_000_000, 80_000, tick), {
    rate: 1_000_000,
    burst: 10_000,
    buffer: 0x2625a,
    limit: 35_000,
  });
  assertEquals(referenceTbf(1_000_000, 123_456, tick), {
    rate: 125_000,
    burst: 15_432,
    buffer: 0x1d6f28,
    limit: 18_557,
  });
  // Kubernetes' "no burst" (MaxInt32 bits) at 10 Mbit/s.
  assertEquals(referenceTbf(10_000_000, 2 ** 31 - 1, tick).buffer, 3_355_443_187);
  // A burst whose time is not a whole number of microseconds: the
  // reference truncates twice, so tc gets a slightly smaller burst.
  const odd = referenceTbf(99_999_999, 1_234_567, tick);
  assert(kernelTicks(odd.rate, odd.burst) !== odd.buffer);
  assert(tcBurst(odd) < odd.burst);
  assertEquals(kernelTicks(odd.rate, tcBurst(odd)), odd.buffer);
});

for (const version of ALL_TEST_VERSIONS) {
  const supported = versionAtLeast(version, "0.3.0");
  Deno.test({
    name: `bandwidth ADD/CHECK/DEL/DEL shapes both directions (cniVersion ${version})`,
    ignore: !canNetns,
    fn: () =>
      withNamespaces(1, async (host, ctr) => {
        const veth = await vethAttachment(host, ctr);
        const conf = bwConf(version, prevResultFor(veth.result, version), LIMITS);
        const at = { netns: ctr.path };
        const add = await bandwidth("ADD", host, at, conf);
        if (!supported) {
          assertEquals([add.code, add.json!.code], [1, 1]);
          assertEquals(await ifbs(host), []);
          return;
        }
        assertSuccess(add);
        const ifb = await ifbName("bwnet", "ctr1");
        const result = currentResult(add, version);
        const [made] = await ifbs(host);
        assert(made, "no IFB in the host");
        assertEquals(made.ifname, ifb);
        assertEquals(result.interfaces!.at(-1), { name: ifb, mac: made.address });
        assertEquals(result.interfaces!.slice(0, 2), veth.result.interfaces);
        assertEquals(made.mtu, (await link(host, veth.hostVeth))!.mtu);
        assert(made.flags.includes("UP"));
        assertEquals((made as { txqlen?: number }).txqlen, undefined, "txqueuelen 0");
        assertEquals(made.ifalias, "cni bandwidth net bwnet id ctr1");
        const all = await qdiscs(host);
        assertEquals(tbfOf(all, veth.hostVeth), "rate 1000000 limit 35000 buffer 156250");
        assertEquals(tbfOf(all, ifb), "rate 125000 limit 18557 buffer 1929000");
        assert(all.some((q) => q.dev === veth.hostVeth && q.kind === "ingress"));
        assertEquals(await redirects(host, veth.hostVeth), [
          `prio 1 all u32 match 0/0 flowid 1:1 mirred egress redirect -> ${ifb}`,
        ]);
        if (versionAtLeast(version, "0.4.0")) {
          assertSuccess(await bandwidth("CHECK", host, at, { ...conf, prevResult: add.json }));
        }
        for (let i = 0; i < 2; i++) {
          assertSuccess(await bandwidth("DEL", host, at, { ...conf, prevResult: add.json }));
          assertEquals(await ifbs(host), []);
        }
      }),
  });
}

Deno.test({
  name: "bandwidth: top-level limits win over runtimeConfig.bandwidth, as in the reference",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await vethAttachment(host, ctr);
      const prev = prevResultFor(veth.result, "1.0.0");
      const at = { netns: ctr.path };
      const runtime = { bandwidth: { ingressRate: 16_000_000, ingressBurst: 160_000 } };
      const cases: [Record<string, unknown>, string | undefined, boolean][] = [
        [{ runtimeConfig: runtime }, "rate 2000000 limit 70000 buffer 156250", false],
        [{ runtimeConfig: runtime, egressRate: 1_000_000, egressBurst: 100_000 }, undefined, true],
        // A top-level key, even null, hides runtimeConfig: no limit at all.
        [{ runtimeConfig: runtime, ingressRate: null }, undefined, false],
        [{ runtimeConfig: runtime, IngressRate: 0 }, undefined, false],
      ];
      for (const [extra, ingress, egress] of cases) {
        const conf = bwConf("1.0.0", prev, extra);
        const add = assertSuccess(await bandwidth("ADD", host, at, conf));
        const all = await qdiscs(host);
        assertEquals(tbfOf(all, veth.hostVeth), ingress, JSON.stringify(extra));
        assertEquals((await ifbs(host)).length, egress ? 1 : 0);
        if (!ingress && !egress) assertEquals(add.json, prev);
        assertSuccess(await bandwidth("CHECK", host, at, { ...conf, prevResult: add.json }));
        assertSuccess(await bandwidth("DEL", host, at, conf));
        await host.exec("tc", ["qdisc", "del", "dev", veth.hostVeth, "root"]).catch(() => {});
        await host.exec("tc", ["qdisc", "del", "dev", veth.hostVeth, "ingress"]).catch(() => {});
      }
      // No limits and no prevResult: nothing to do.
      assertSuccess(await bandwidth("ADD", host, at, bwConf("1.0.0", undefined, {})));
    }),
});

Deno.test({
  name: "bandwidth refuses bad limits and chains with the reference's messages, leaving nothing",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(2, async (host, ctr, other) => {
      const veth = await vethAttachment(host, ctr);
      const prev = prevResultFor(veth.result, "1.0.0");
      const at = { netns: ctr.path };
      const cases: [
        Record<string, unknown>,
        Record<string, unknown> | undefined,
        number,
        string,
      ][] = [
        [{ ingressRate: 1000 }, prev, 7, "if rate is set, burst must also be set"],
        [{ egressBurst: 1000 }, prev, 7, "if burst is set, rate must also be set"],
        [
          { runtimeConfig: { bandwidth: { egressRate: 1000, egressBurst: 8 * (2 ** 32 - 1) } } },
          prev,
          7,
          "burst cannot be more than 4GB",
        ],
        [{ ingressRate: -1, ingressBurst: 1 }, prev, 7, "failed to load netconf"],
        [{ ingressRate: "1000", ingressBurst: 1 }, prev, 6, "failed to load netconf"],
        [LIMITS, undefined, 7, "must be called as chained plugin"],
        [LIMITS, { ...prev, interfaces: [] }, 7, "no interfaces provided"],
        [
          LIMITS,
          prevResultFor({ ...veth.result, interfaces: veth.result.interfaces!.slice(1) }, "1.0.0"),
          7,
          "no veth peer of container interface found in host ns",
        ],
      ];
      for (const [extra, prevResult, code, msg] of cases) {
        const add = await bandwidth("ADD", host, at, bwConf("1.0.0", prevResult, extra));
        assertEquals(add.code, 1, JSON.stringify(extra));
        assertEquals(add.json!.code, code, add.stdout);
        assertMatch(String(add.json!.msg), new RegExp(msg));
      }
      // A container interface that is no veth of the host's.
      await sh("ip", [
        "-n",
        other.name,
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "x0",
      ]);
      const lone = await bandwidth(
        "ADD",
        host,
        { netns: other.path },
        bwConf("1.0.0", prev, LIMITS),
      );
      assertEquals(lone.json!.code, 7, lone.stdout);
      assertEquals(lone.json!.msg, "no veth peer of container interface found in host ns");
      assertEquals(await ifbs(host), []);
      assertEquals(await qdiscs(host), []);
      // DEL reads only the name: a config ADD refuses still deletes.
      assertSuccess(await bandwidth("DEL", host, at, bwConf("1.0.0", prev, { ingressRate: 1 })));
    }),
});

Deno.test({
  name: "bandwidth: a failed ADD removes the IFB and only the qdiscs it added",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await vethAttachment(host, ctr);
      const conf = bwConf("1.0.0", prevResultFor(veth.result, "1.0.0"), LIMITS);
      const at = { netns: ctr.path };
      // Someone else's root qdisc: the first tc line fails.
      await host.exec("tc", [
        "qdisc",
        "add",
        "dev",
        veth.hostVeth,
        "root",
        "handle",
        "5:",
        "tbf",
        "rate",
        "1mbit",
        "burst",
        "9000",
        "limit",
        "9000",
      ]);
      const first = await bandwidth("ADD", host, at, conf);
      assertEquals(first.json!.code, 5, first.stdout);
      assertEquals(await ifbs(host), []);
      assertEquals((await qdiscs(host)).map((q) => `${q.dev} ${q.kind}`), [
        `${veth.hostVeth} tbf`,
      ]);
      // Someone else's ingress qdisc: the TBF was added, then the ingress fails.
      await host.exec("tc", ["qdisc", "del", "dev", veth.hostVeth, "root"]);
      await host.exec("tc", ["qdisc", "add", "dev", veth.hostVeth, "ingress"]);
      const second = await bandwidth("ADD", host, at, conf);
      assertEquals(second.json!.code, 5, second.stdout);
      assertEquals(await ifbs(host), []);
      assertEquals((await qdiscs(host)).map((q) => `${q.dev} ${q.kind}`), [
        `${veth.hostVeth} ingress`,
      ]);
    }),
});

Deno.test({
  name: "bandwidth CHECK finds a changed rate, a missing IFB and a missing redirect",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await vethAttachment(host, ctr);
      const conf = bwConf("1.1.0", prevResultFor(veth.result, "1.1.0"), LIMITS);
      const at = { netns: ctr.path };
      const ifb = await ifbName("bwnet", "ctr1");
      const drifts: [string[], RegExp][] = [
        [
          [
            "qdisc",
            "change",
            "dev",
            veth.hostVeth,
            "root",
            "handle",
            "1:",
            "tbf",
            "rate",
            "2mbit",
            "burst",
            "10000",
            "limit",
            "35000",
          ],
          /Rate doesn't match/,
        ],
        [
          [
            "qdisc",
            "change",
            "dev",
            ifb,
            "root",
            "handle",
            "1:",
            "tbf",
            "rate",
            "125000bps",
            "burst",
            "15432",
            "limit",
            "9999",
          ],
          /Limit doesn't match/,
        ],
        [
          [
            "qdisc",
            "change",
            "dev",
            ifb,
            "root",
            "handle",
            "1:",
            "tbf",
            "rate",
            "125000bps",
            "burst",
            "15000",
            "limit",
            "18557",
          ],
          /Buffer doesn't match/,
        ],
        [["filter", "del", "dev", veth.hostVeth, "ingress"], /redirects its ingress/],
      ];
      for (const [drift, msg] of drifts) {
        const add = assertSuccess(await bandwidth("ADD", host, at, conf));
        const checked = { ...conf, prevResult: add.json };
        assertSuccess(await bandwidth("CHECK", host, at, checked));
        await host.exec("tc", drift);
        const check = await bandwidth("CHECK", host, at, checked);
        assertEquals(check.code, 1, drift.join(" "));
        assertMatch(String(check.json!.msg), msg);
        assertSuccess(await bandwidth("DEL", host, at, conf));
        await host.exec("tc", ["qdisc", "del", "dev", veth.hostVeth, "root"]).catch(() => {});
        await host.exec("tc", ["qdisc", "del", "dev", veth.hostVeth, "ingress"]).catch(() => {});
      }
      const add = assertSuccess(await bandwidth("ADD", host, at, conf));
      await host.exec("ip", ["link", "del", ifb]);
      const check = await bandwidth("CHECK", host, at, { ...conf, prevResult: add.json });
      assertMatch(String(check.json!.msg), /get ifb device/);
      // Without limits CHECK has nothing to look at, but wants a prevResult.
      assertSuccess(await bandwidth("CHECK", host, at, bwConf("1.1.0", add.json, {})));
      const bare = await bandwidth("CHECK", host, at, bwConf("1.1.0", undefined, {}));
      assertEquals(bare.json!.msg, "must be called as a chained plugin");
    }),
});

Deno.test({
  name: "bandwidth GC removes this network's IFBs of invalid attachments and orphaned IFBs only",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(4, async (host, a, b, c, d) => {
      const add = async (ns: TestNetns, cid: string, name: string, bin?: string) => {
        const veth = await vethAttachment(host, ns);
        const conf = { ...bwConf("1.0.0", prevResultFor(veth.result, "1.0.0"), LIMITS), name };
        assertSuccess(
          await bandwidth("ADD", host, { netns: ns.path, containerId: cid }, conf, bin),
        );
        return veth;
      };
      await add(a, "valid", "bwnet");
      await add(b, "stale", "bwnet");
      await add(c, "theirs", "othernet");
      // Made by the reference (no alias): one still in use, one whose veth is gone.
      await add(d, "inuse", "bwnet", "/usr/lib/cni");
      const gone = await vethAttachment(host, a, { ifname: "eth1" });
      const conf = { ...bwConf("1.0.0", prevResultFor(gone.result, "1.0.0"), LIMITS) };
      assertSuccess(
        await bandwidth(
          "ADD",
          host,
          { netns: a.path, containerId: "orphan", ifname: "eth1" },
          conf,
          "/usr/lib/cni",
        ),
      );
      await sh("ip", ["-n", host.name, "link", "del", gone.hostVeth]);
      const names = async () => (await ifbs(host)).map((l) => l.ifname).sort();
      const expect = async (...cids: [string, string][]) =>
        (await Promise.all(cids.map(([net, cid]) => ifbName(net, cid)))).sort();
      assertEquals(
        await names(),
        await expect(["bwnet", "valid"], ["bwnet", "stale"], ["othernet", "theirs"], [
          "bwnet",
          "inuse",
        ], ["bwnet", "orphan"]),
      );
      const gc = await runApplet("bandwidth", {
        env: cniEnv("GC", { path: DIST_BIN }),
        stdin: {
          cniVersion: "1.1.0",
          name: "bwnet",
          type: "bandwidth",
          "cni.dev/valid-attachments": [{ containerID: "valid", ifname: "eth0" }],
        },
        host,
      });
      assertSuccess(gc);
      assertEquals(
        await names(),
        await expect(["bwnet", "valid"], ["othernet", "theirs"], ["bwnet", "inuse"]),
      );
      const status = await runApplet("bandwidth", {
        env: cniEnv("STATUS", { path: DIST_BIN }),
        stdin: { cniVersion: "1.1.0", name: "bwnet", type: "bandwidth" },
        host,
      });
      assertSuccess(status);
    }),
});
