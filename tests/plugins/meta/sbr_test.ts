/**
 * sbr against the kernel: veth attachments made by the test (addresses and
 * routes as a main plugin leaves them), sbr run as a process inside the
 * fake host, the container's rules and routes read back with `ip -j`.
 * Traffic: a container on two networks answers each network's client
 * through that network's interface.
 * @module
 */

import { assert, assertEquals, assertMatch } from "../../helpers/assert.ts";
import {
  ALL_TEST_VERSIONS,
  assertSuccess,
  hostRunner,
  type PluginRun,
} from "../../helpers/applet.ts";
import { prevResultFor, type VethAttachment, vethAttachment } from "../../helpers/chained.ts";
import { allRoutes, rules } from "../../helpers/kernel.ts";
import { canNetns, sh, type TestNetns, withNamespaces } from "../../helpers/netns.ts";
import { ping } from "../../helpers/ping.ts";
import { versionAtLeast } from "../../../lib/cni/spec/version.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";

const sbr = hostRunner("sbr");

const DEFAULT_RULES = [
  "0: from all lookup local",
  "32766: from all lookup main",
  "32767: from all lookup default",
  "0: from all lookup local",
  "32766: from all lookup main",
];

/**
 * A veth attachment on 10.99.N.0/24 with a default route and a route to
 * 10.77.N.0/24 via 10.99.N.1, and with `v6` also fd99:N::2/64 (no DAD)
 * and a default route via fd99:N::1.
 */
async function attachment(
  host: TestNetns,
  ctr: TestNetns,
  n: number,
  options: { ifname?: string; v6?: boolean; defaultRoute?: boolean } = {},
): Promise<VethAttachment> {
  const veth = await vethAttachment(host, ctr, { subnet: n, ...options });
  const dev = veth.ifname;
  const ip = (...args: string[]) => sh("ip", ["-n", ctr.name, ...args]);
  if (options.defaultRoute ?? true) await ip("route", "add", "default", "via", veth.hostIP);
  await ip("route", "add", `10.77.${n}.0/24`, "via", veth.hostIP, "dev", dev);
  if (options.v6) {
    await ip("addr", "add", `fd99:${n}::2/64`, "dev", dev, "nodad");
    await ip("-6", "route", "add", "default", "via", `fd99:${n}::1`, "dev", dev);
    veth.result.ips!.push({ address: `fd99:${n}::2/64`, gateway: `fd99:${n}::1`, interface: 1 });
  }
  return veth;
}

function sbrConf(
  version: string,
  prev: Result | undefined,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    cniVersion: version,
    name: "sbrnet",
    type: "sbr",
    ...(prev ? { prevResult: prevResultFor(prev, version) } : {}),
    ...extra,
  };
}

/** The container's rules and routes (the local table aside). */
async function policy(ctr: TestNetns): Promise<{ rules: string[]; routes: string[] }> {
  return { rules: await rules(ctr), routes: await allRoutes(ctr) };
}

function assertFailed(run: PluginRun, code: number, msg: RegExp): void {
  assert(run.code !== 0, `expected a failure: ${run.stdout}`);
  assertEquals(run.json?.code, code, run.stdout);
  assertMatch(String(run.json?.msg), msg);
}

for (const version of ALL_TEST_VERSIONS.filter((v) => versionAtLeast(v, "0.3.0"))) {
  Deno.test({
    name: `sbr ADD/CHECK/DEL/DEL moves the routes into a table of the IP (cniVersion ${version})`,
    ignore: !canNetns,
    fn: () =>
      withNamespaces(1, async (host, ctr) => {
        const veth = await attachment(host, ctr, 1);
        const conf = sbrConf(version, veth.result);
        const at = { netns: ctr.path };
        const add = assertSuccess(await sbr("ADD", host, at, conf));
        // The result is the prevResult, unchanged.
        assertEquals(add.json, prevResultFor(veth.result, version));
        assertEquals(await rules(ctr), [
          "0: from all lookup local",
          "32765: from 10.99.1.2 lookup 100",
          ...DEFAULT_RULES.slice(1),
        ]);
        assertEquals(
          (await policy(ctr)).routes,
          [
            "default via 10.99.1.1 dev eth0 table 100 proto boot scope global",
            "10.77.1.0/24 via 10.99.1.1 dev eth0 table 100 proto boot scope global",
            "10.99.1.0/24 dev eth0 table 100 proto kernel scope link src 10.99.1.2",
            // The IPv6 link-local route has neither source nor gateway: it counts
            // as the interface's own and moves too, as in the reference.
            "fe80::/64 dev eth0 table 100 proto kernel scope global metric 256",
          ].sort(),
        );
        if (versionAtLeast(version, "0.4.0")) {
          assertSuccess(await sbr("CHECK", host, at, { ...conf, prevResult: add.json }));
        }
        for (let i = 0; i < 2; i++) {
          assertSuccess(await sbr("DEL", host, at, conf));
          // DEL takes the rules away; the routes go with the link (the main
          // plugin's DEL), as in the reference.
          assertEquals(await rules(ctr), DEFAULT_RULES);
        }
      }),
  });
}

Deno.test({
  name:
    "sbr refuses to run unchained (0.1.0, 0.2.0, no prevResult) and without IPs, changing nothing",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await attachment(host, ctr, 2);
      const before = await policy(ctr);
      const at = { netns: ctr.path };
      for (const version of ["0.1.0", "0.2.0", "1.0.0"]) {
        assertFailed(
          await sbr("ADD", host, at, sbrConf(version, undefined)),
          7,
          /^This plugin must be called as chained plugin$/,
        );
      }
      const noIPs = { ...veth.result, ips: [] };
      assertFailed(
        await sbr("ADD", host, at, sbrConf("1.0.0", noIPs)),
        7,
        /^No IP addresses supplied on interface: eth0$/,
      );
      assertEquals(await policy(ctr), before);
    }),
});

Deno.test({
  name:
    "sbr gives each IP its own table: dual-stack, two IPv4 in one subnet, IPs of other interfaces left alone",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await attachment(host, ctr, 3, { v6: true });
      await sh("ip", ["-n", ctr.name, "addr", "add", "10.99.3.9/24", "dev", "eth0"]);
      const prev: Result = {
        ...veth.result,
        ips: [
          ...veth.result.ips!,
          { address: "10.99.3.9/24", interface: 1 },
          // Index 0 is the host veth: not this interface's.
          { address: "10.55.0.2/24", interface: 0 },
        ],
      };
      const at = { netns: ctr.path };
      assertSuccess(await sbr("ADD", host, at, sbrConf("1.1.0", prev)));
      assertEquals(await rules(ctr), [
        "0: from all lookup local",
        "32764: from 10.99.3.9 lookup 102",
        "32765: from 10.99.3.2 lookup 100",
        "32766: from all lookup main",
        "32767: from all lookup default",
        "0: from all lookup local",
        "32765: from fd99:3::2 lookup 101",
        "32766: from all lookup main",
      ]);
      const routes = await allRoutes(ctr);
      const inTable = (t: number) =>
        routes.filter((r) => r.includes(` table ${t} `)).map((r) => r.replace(/ table \d+/, ""));
      assertEquals(
        inTable(100),
        [
          "default via 10.99.3.1 dev eth0 proto boot scope global",
          "10.77.3.0/24 via 10.99.3.1 dev eth0 proto boot scope global",
          "10.99.3.0/24 dev eth0 proto kernel scope link src 10.99.3.2",
          "fd99:3::/64 dev eth0 proto kernel scope global metric 256",
          "fe80::/64 dev eth0 proto kernel scope global metric 256",
        ].sort(),
      );
      assertEquals(
        inTable(101),
        [
          "default via fd99:3::1 dev eth0 proto boot scope global metric 1024",
          "fd99:3::/64 dev eth0 proto kernel scope global metric 256",
          "fe80::/64 dev eth0 proto kernel scope global metric 256",
        ].sort(),
      );
      // No gateway for .9: the routes of its subnet are copied, the default
      // route among them.
      assertEquals(
        inTable(102),
        [
          "default via 10.99.3.1 dev eth0 proto boot scope global",
          "10.77.3.0/24 via 10.99.3.1 dev eth0 proto boot scope global",
          "10.99.3.0/24 dev eth0 proto kernel scope link src 10.99.3.2",
          "fd99:3::/64 dev eth0 proto kernel scope global metric 256",
          "fe80::/64 dev eth0 proto kernel scope global metric 256",
        ].sort(),
      );
      assertEquals(routes.filter((r) => r.includes("table main") && r.includes("eth0")), []);
      assertSuccess(await sbr("DEL", host, at, sbrConf("1.1.0", prev)));
      assertEquals(await rules(ctr), DEFAULT_RULES);
    }),
});

Deno.test({
  name: "sbr takes the first table from 100 that no rule and no route uses",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await attachment(host, ctr, 4);
      const ip = (...args: string[]) => sh("ip", ["-n", ctr.name, ...args]);
      await ip("rule", "add", "from", "192.0.2.1", "table", "100");
      await ip("-6", "rule", "add", "from", "2001:db8::1", "table", "101");
      await ip("route", "add", "192.0.2.0/24", "dev", "eth0", "table", "102");
      assertSuccess(await sbr("ADD", host, { netns: ctr.path }, sbrConf("1.1.0", veth.result)));
      assert((await rules(ctr)).includes("32764: from 10.99.4.2 lookup 103"));
    }),
});

Deno.test({
  name: "sbr with table only adds rules to it; DEL removes only that table's rules",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await attachment(host, ctr, 5, { v6: true });
      const before = await policy(ctr);
      // A rule of the same source to another table, not sbr's to remove.
      await sh("ip", ["-n", ctr.name, "rule", "add", "from", "10.99.5.2", "table", "7"]);
      const conf = sbrConf("1.1.0", veth.result, { table: 5000 });
      const at = { netns: ctr.path };
      assertSuccess(await sbr("ADD", host, at, conf));
      assertEquals(await rules(ctr), [
        "0: from all lookup local",
        "32764: from 10.99.5.2 lookup 5000",
        "32765: from 10.99.5.2 lookup 7",
        "32766: from all lookup main",
        "32767: from all lookup default",
        "0: from all lookup local",
        "32765: from fd99:5::2 lookup 5000",
        "32766: from all lookup main",
      ]);
      assertEquals(await allRoutes(ctr), before.routes);
      assertSuccess(await sbr("CHECK", host, at, conf));
      assertSuccess(await sbr("DEL", host, at, conf));
      assertEquals(await rules(ctr), [
        "0: from all lookup local",
        "32765: from 10.99.5.2 lookup 7",
        ...DEFAULT_RULES.slice(1),
      ]);
    }),
});

Deno.test({
  name: "sbr static gateways win over the prevResult's, one per family; bad lists are refused",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await attachment(host, ctr, 6, { v6: true, defaultRoute: false });
      await sh("ip", ["-n", ctr.name, "-6", "route", "del", "default"]);
      const at = { netns: ctr.path };
      const before = await policy(ctr);
      const bad: [unknown[], RegExp][] = [
        [
          ["10.99.6.5", "10.99.6.6"],
          /^gateways list contains multiple IPv4 addresses: 10.99.6.5 and 10.99.6.6$/,
        ],
        [["10.99.6.5", "fd99:6::5", "fd99:6::6"], /cannot contain more than 2 entries/],
        [["not-an-ip"], /^invalid static gateway IP address: not-an-ip$/],
      ];
      for (const [gateways, msg] of bad) {
        assertFailed(
          await sbr("ADD", host, at, sbrConf("1.1.0", veth.result, { gateways })),
          7,
          msg,
        );
      }
      assertFailed(
        await sbr("ADD", host, at, sbrConf("1.1.0", veth.result, { gateways: "10.99.6.5" })),
        6,
        /gateways/,
      );
      assertEquals(await policy(ctr), before);
      const conf = sbrConf("1.1.0", veth.result, { gateways: ["fd99:6::fe", "10.99.6.254"] });
      assertSuccess(await sbr("ADD", host, at, conf));
      const routes = await allRoutes(ctr);
      assert(
        routes.includes("default via 10.99.6.254 dev eth0 table 100 proto boot scope global"),
        routes.join("\n"),
      );
      assert(
        routes.includes(
          "default via fd99:6::fe dev eth0 table 101 proto boot scope global metric 1024",
        ),
        routes.join("\n"),
      );
    }),
});

Deno.test({
  name: "sbr addSourceHints keeps the subnet route in main with the IP as source",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await attachment(host, ctr, 7);
      const conf = sbrConf("1.1.0", veth.result, { addSourceHints: true });
      assertSuccess(await sbr("ADD", host, { netns: ctr.path }, conf));
      const main = (await allRoutes(ctr)).filter((r) => r.includes("dev eth0 table main"));
      assertEquals(main, [
        "10.99.7.0/24 dev eth0 table main proto boot scope link src 10.99.7.2",
        // IPv6 routes are never link scope: the reference's filter drops them all.
      ]);
      assert((await rules(ctr)).includes("32765: from 10.99.7.2 lookup 100"));
    }),
});

Deno.test({
  name: "sbr: a failed ADD takes back its rules and routes",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      // No default route in main: the static gateway below is off the link.
      const veth = await attachment(host, ctr, 8, { v6: true, defaultRoute: false });
      const before = await policy(ctr);
      // The rule is made, then the default route via a gateway off the link fails.
      const conf = sbrConf("1.1.0", veth.result, { gateways: ["192.0.2.1"] });
      const add = await sbr("ADD", host, { netns: ctr.path }, conf);
      assertFailed(add, 5, /Nexthop has invalid gateway|Network is unreachable/);
      assertEquals(await policy(ctr), before);
    }),
});

Deno.test({
  name: "sbr DEL succeeds with the netns empty or gone and with the link gone",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await attachment(host, ctr, 9);
      const conf = sbrConf("1.1.0", veth.result);
      assertSuccess(await sbr("ADD", host, { netns: ctr.path }, conf));
      assertSuccess(await sbr("DEL", host, { netns: "" }, conf));
      assertSuccess(await sbr("DEL", host, { netns: "/run/netns/cnikit-no-such-ns" }, conf));
      // The reference's lock would have made the missing path a file.
      assert(!(await Deno.stat("/run/netns/cnikit-no-such-ns").then(() => true, () => false)));
      await sh("ip", ["-n", ctr.name, "link", "del", "eth0"]);
      assertSuccess(await sbr("DEL", host, { netns: ctr.path }, conf));
    }),
});

Deno.test({
  name: "sbr holds an flock on the netns file while it works",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await attachment(host, ctr, 10);
      const file = await Deno.open(ctr.path, { read: true });
      try {
        await file.lock(true);
        const adding = sbr("ADD", host, { netns: ctr.path }, sbrConf("1.1.0", veth.result));
        // /proc/locks lists a blocked flock as "-> FLOCK"; the inode ends its id.
        const inode = (await Deno.stat(ctr.path)).ino!;
        const blocked = async () =>
          (await Deno.readTextFile("/proc/locks")).split("\n")
            .some((l) => l.includes("-> FLOCK") && l.includes(`:${inode} `));
        for (let i = 0; i < 200 && !(await blocked()); i++) {
          await new Promise((r) => setTimeout(r, 50));
        }
        assert(await blocked(), "sbr did not wait for the lock");
        assertEquals(await rules(ctr), DEFAULT_RULES);
        await file.unlock();
        assertSuccess(await adding);
        assert((await rules(ctr)).includes("32765: from 10.99.10.2 lookup 100"));
      } finally {
        file.close();
      }
    }),
});

Deno.test({
  name: "sbr STATUS and GC answer success (spec 1.1.0)",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(0, async (host) => {
      const conf = sbrConf("1.1.0", undefined);
      assertSuccess(await sbr("STATUS", host, { netns: "" }, conf));
      assertSuccess(
        await sbr("GC", host, { netns: "" }, { ...conf, "cni.dev/valid-attachments": [] }),
      );
    }),
});

Deno.test({
  name: "sbr traffic: replies leave through the interface the request came in on",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(3, async (host, ctr, peerA, peerB) => {
      // peerA and peerB are routers of two networks; each has a client
      // address behind it (on lo), routed to the container from there.
      const eth0 = await vethAttachment(peerA, ctr, { subnet: 21, ifname: "eth0" });
      const net1 = await vethAttachment(peerB, ctr, { subnet: 22, ifname: "net1" });
      const ns = (n: TestNetns, ...args: string[]) => sh("ip", ["-n", n.name, ...args]);
      await ns(ctr, "route", "add", "default", "via", eth0.hostIP);
      for (
        const [peer, veth, client] of [[peerA, eth0, "198.51.100.1"], [
          peerB,
          net1,
          "198.51.100.2",
        ]] as const
      ) {
        await ns(peer, "addr", "add", `${client}/32`, "dev", "lo");
        // The client's requests leave with the client's address as source.
        const subnet = veth.hostIP.replace(/\.1$/, ".0/24");
        await ns(peer, "route", "replace", subnet, "dev", veth.hostVeth, "src", client);
      }
      assert(await ping(peerA, eth0.containerIP, 2), "eth0's network reaches the container");
      assert(
        !(await ping(peerB, net1.containerIP, 2)),
        "without sbr the reply to net1's client leaves through eth0",
      );
      const prev: Result = { ...net1.result, cniVersion: "1.1.0" };
      assertSuccess(
        await sbr("ADD", host, { netns: ctr.path, ifname: "net1" }, sbrConf("1.1.0", prev)),
      );
      assert(await ping(peerB, net1.containerIP), "with sbr net1's client gets its reply");
      assert(await ping(peerA, eth0.containerIP), "eth0's network still reaches the container");
    }),
});
