/**
 * vrf against a kernel with VRFs (the second kernel where this one lacks
 * them): veth attachments made by the test, vrf run as a process inside
 * the fake host, links, addresses and routes read back with `ip -j`.
 * Traffic: two peers with the same address reach one container through two
 * interfaces that have the same address too, each in its own VRF.
 * @module
 */

import { assert, assertEquals, assertMatch } from "../../helpers/assert.ts";
import { assertSuccess, hostRunner, type PluginRun } from "../../helpers/applet.ts";
import { prevResultFor, type VethAttachment, vethAttachment } from "../../helpers/chained.ts";
import { addresses, type AddrJ, allRoutes, link, type LinkJ, links } from "../../helpers/kernel.ts";
import { requireKernel } from "../../helpers/kernel_features.ts";
import { sh, type TestNetns, waitFor, withNamespaces } from "../../helpers/netns.ts";
import { ping } from "../../helpers/ping.ts";
import { versionAtLeast } from "../../../lib/cni/spec/version.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";

const ready = await requireKernel("vrf");
const vrf = hostRunner("vrf");

/**
 * A veth attachment `ifname` on 10.99.N.0/24 with a route to 10.77.N.0/24
 * via the host end, and fd99:N::2/64 with a route to fd77:N::/64 via
 * fd99:N::1.
 */
async function attachment(
  host: TestNetns,
  ctr: TestNetns,
  n: number,
  ifname = "eth0",
): Promise<VethAttachment> {
  const veth = await vethAttachment(host, ctr, { subnet: n, ifname });
  const ip = (...args: string[]) => sh("ip", ["-n", ctr.name, ...args]);
  await ip("route", "add", `10.77.${n}.0/24`, "via", veth.hostIP, "dev", ifname);
  await ip("addr", "add", `fd99:${n}::2/64`, "dev", ifname, "nodad");
  await ip("-6", "route", "add", `fd77:${n}::/64`, "via", `fd99:${n}::1`, "dev", ifname);
  veth.result.ips!.push({ address: `fd99:${n}::2/64`, gateway: `fd99:${n}::1`, interface: 1 });
  return veth;
}

function vrfConf(
  version: string,
  prev: Result | undefined,
  extra: Record<string, unknown> = { vrfname: "red" },
): Record<string, unknown> {
  return {
    cniVersion: version,
    name: "vrfnet",
    type: "vrf",
    ...(prev ? { prevResult: prevResultFor(prev, version) } : {}),
    ...extra,
  };
}

/** The VRF `name` of `ctr` as `kind table T`, or undefined. */
async function vrfDevice(ctr: TestNetns, name: string): Promise<string | undefined> {
  const l = await link(ctr, name);
  return l && `${l.linkinfo?.info_kind} table ${l.linkinfo?.info_data?.table}`;
}

/** Everything vrf may change in `ctr`: links with their masters, addresses and every route. */
async function state(ctr: TestNetns): Promise<{ links: string[]; routes: string[] }> {
  const show = (l: LinkJ) =>
    `${l.ifname} ${l.linkinfo?.info_kind} master ${l.master ?? "-"} ${addresses(l).join(",")}`;
  return { links: (await links(ctr)).map(show).sort(), routes: await allRoutes(ctr) };
}

function assertFailed(run: PluginRun, code: number, msg: RegExp): void {
  assert(run.code !== 0, `expected a failure: ${run.stdout}`);
  assertEquals(run.json?.code, code, run.stdout);
  assertMatch(String(run.json?.msg), msg);
}

for (const version of ["0.3.1", "0.4.0", "1.0.0", "1.1.0"]) {
  Deno.test({
    name:
      `vrf ADD/CHECK/DEL/DEL enslaves the interface, its routes in the VRF's table (cniVersion ${version})`,
    ignore: !ready,
    fn: () =>
      withNamespaces(1, async (host, ctr) => {
        const veth = await attachment(host, ctr, 1);
        const conf = vrfConf(version, veth.result);
        const at = { netns: ctr.path };
        const add = assertSuccess(await vrf("ADD", host, at, conf));
        assertEquals(add.json, prevResultFor(veth.result, version));
        assertEquals(await vrfDevice(ctr, "red"), "vrf table 1");
        const eth0 = (await link(ctr, "eth0"))!;
        assertEquals(eth0.master, "red");
        assertEquals(addresses(eth0), ["10.99.1.2/24", "fd99:1::2/64"]);
        const routes = await allRoutes(ctr);
        // The routes of global scope moved with the interface into table 1.
        for (
          const r of [
            "10.77.1.0/24 via 10.99.1.1 dev eth0 table 1 proto boot scope global",
            "fd77:1::/64 via fd99:1::1 dev eth0 table 1 proto boot scope global metric 1024",
            "10.99.1.0/24 dev eth0 table 1 proto kernel scope link src 10.99.1.2",
          ]
        ) assert(routes.includes(r), `${r} missing from\n${routes.join("\n")}`);
        assertEquals(routes.filter((r) => r.includes("dev eth0 table main")), []);
        if (versionAtLeast(version, "0.4.0")) {
          assertSuccess(await vrf("CHECK", host, at, { ...conf, prevResult: add.json }));
        }
        for (let i = 0; i < 2; i++) {
          assertSuccess(await vrf("DEL", host, at, conf));
          assertEquals(await vrfDevice(ctr, "red"), undefined);
          assertEquals((await link(ctr, "eth0"))!.master, undefined);
        }
        // Released, the interface went down and up once more: without
        // keep_addr_on_down its IPv6 address is gone, as with the reference.
        assertEquals(addresses((await link(ctr, "eth0"))!)[0], "10.99.1.2/24");
      }),
  });
}

Deno.test({
  name: "vrf: members share a VRF, a new VRF takes the lowest free table, the last DEL removes it",
  ignore: !ready,
  fn: () =>
    withNamespaces(3, async (host, ctr, peer1, peer2) => {
      const eth0 = await attachment(host, ctr, 3);
      const net1 = await attachment(peer1, ctr, 4, "net1");
      const net2 = await attachment(peer2, ctr, 5, "net2");
      const red = vrfConf("1.0.0", eth0.result);
      const at = (ifname: string) => ({ netns: ctr.path, ifname });
      assertSuccess(await vrf("ADD", host, at("eth0"), red));
      assertSuccess(await vrf("ADD", host, at("net1"), vrfConf("1.0.0", net1.result)));
      // A table taken by nothing but a VRF is what counts: 1 is red's.
      const blue = vrfConf("1.0.0", net2.result, { vrfname: "blue" });
      assertSuccess(await vrf("ADD", host, at("net2"), blue));
      assertEquals(await vrfDevice(ctr, "red"), "vrf table 1");
      assertEquals(await vrfDevice(ctr, "blue"), "vrf table 2");
      assertEquals((await link(ctr, "net1"))!.master, "red");
      assertSuccess(await vrf("DEL", host, at("eth0"), red));
      assertEquals(await vrfDevice(ctr, "red"), "vrf table 1");
      assertSuccess(await vrf("CHECK", host, at("net1"), vrfConf("1.0.0", net1.result)));
      assertFailed(
        await vrf("CHECK", host, at("eth0"), red),
        999,
        /^failed to find eth0 associated to vrf red$/,
      );
      assertSuccess(await vrf("DEL", host, at("net1"), red));
      assertEquals(await vrfDevice(ctr, "red"), undefined);
      assertEquals(await vrfDevice(ctr, "blue"), "vrf table 2");
    }),
});

Deno.test({
  name:
    "vrf refuses a VRF with another table, an interface with a master, a link that is not a VRF; nothing changes",
  ignore: !ready,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const eth0 = await attachment(host, ctr, 6);
      const ip = (...args: string[]) => sh("ip", ["-n", ctr.name, ...args]);
      await ip("link", "add", "red", "type", "vrf", "table", "40");
      await ip("link", "add", "br0", "type", "bridge");
      const before = await state(ctr);
      const at = { netns: ctr.path };
      assertFailed(
        await vrf("ADD", host, at, vrfConf("1.0.0", eth0.result, { vrfname: "red", table: 41 })),
        7,
        /^VRF red already exist with different routing table 40$/,
      );
      assertFailed(
        await vrf("ADD", host, at, vrfConf("1.0.0", eth0.result, { vrfname: "br0" })),
        7,
        /^Netlink br0 is not a VRF$/,
      );
      assertEquals(await state(ctr), before);
      await ip("link", "set", "eth0", "master", "br0");
      const enslaved = await state(ctr);
      assertFailed(
        await vrf("ADD", host, at, vrfConf("1.0.0", eth0.result, { vrfname: "red", table: 40 })),
        999,
        /^interface eth0 has already a master set: br0$/,
      );
      assertEquals(await state(ctr), enslaved);
    }),
});

Deno.test({
  name: "vrf re-adds the IPv6 addresses that enslaving dropped and waits for their DAD",
  ignore: !ready,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await vethAttachment(host, ctr, { subnet: 7 });
      const ip = (...args: string[]) => sh("ip", ["-n", ctr.name, ...args]);
      // Without keep_addr_on_down the kernel drops global IPv6 addresses when
      // the interface goes down, which enslaving makes it do.
      await ctr.exec("sysctl", ["-qw", "net.ipv6.conf.all.keep_addr_on_down=0"]);
      await ctr.exec("sysctl", ["-qw", "net.ipv6.conf.eth0.keep_addr_on_down=0"]);
      await ip("addr", "add", "fd99:7::2/64", "dev", "eth0", "nodad");
      await ip("addr", "add", "fd99:7::3/64", "dev", "eth0");
      const tentative = async () =>
        (await ctr.ipJson<LinkJ[]>("-6", "addr", "show", "dev", "eth0"))[0]!.addr_info
          .some((a) => (a as { tentative?: boolean }).tentative && a.scope === "global");
      await waitFor(async () => !(await tentative()), "DAD of fd99:7::3");
      // A route from the address that has to wait for DAD once re-added.
      await ip(
        "-6",
        "route",
        "add",
        "fd99:77::/64",
        "via",
        "fd99:7::1",
        "dev",
        "eth0",
        "src",
        "fd99:7::3",
      );
      const at = { netns: ctr.path };
      assertSuccess(await vrf("ADD", host, at, vrfConf("1.0.0", veth.result)));
      const eth0 = (await ctr.ipJson<LinkJ[]>("-6", "addr", "show", "dev", "eth0"))[0]!;
      // Re-added with their flags; DAD ran again for the one without nodad.
      const global = eth0.addr_info.filter((a) => a.scope === "global") as (AddrJ & {
        nodad?: boolean;
        tentative?: boolean;
      })[];
      assertEquals(global.map((a) => [a.local, !!a.nodad, !!a.tentative]), [
        ["fd99:7::2", true, false],
        ["fd99:7::3", false, false],
      ]);
      const routes = await allRoutes(ctr);
      assert(
        routes.includes(
          "fd99:77::/64 via fd99:7::1 dev eth0 table 1 proto boot scope global src fd99:7::3 metric 1024",
        ),
        routes.join("\n"),
      );
    }),
});

Deno.test({
  name: "vrf: a failed ADD leaves no VRF and the interface as it was",
  ignore: !ready,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const eth0 = await attachment(host, ctr, 8);
      const ip = (...args: string[]) => sh("ip", ["-n", ctr.name, ...args]);
      // A gateway reached through a link-scope route of the interface: that
      // route is not copied (the reference copies global scope only), so the
      // route through it cannot be made in the VRF's table.
      await ip("route", "add", "10.66.5.0/24", "dev", "eth0", "scope", "link");
      await ip("route", "add", "10.88.0.0/16", "via", "10.66.5.1", "dev", "eth0");
      const before = await state(ctr);
      const add = await vrf("ADD", host, { netns: ctr.path }, vrfConf("1.0.0", eth0.result));
      assertFailed(add, 5, /Nexthop has invalid gateway|Network is unreachable/);
      assertEquals(await state(ctr), before);
    }),
});

Deno.test({
  name: "vrf DEL succeeds with the interface gone, then with the VRF gone",
  ignore: !ready,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const eth0 = await attachment(host, ctr, 9);
      const conf = vrfConf("1.1.0", eth0.result);
      const at = { netns: ctr.path };
      assertSuccess(await vrf("ADD", host, at, conf));
      // Without the namespace DEL does nothing (vrf_conf_test.ts: it succeeds).
      assertSuccess(await vrf("DEL", host, { netns: "" }, conf));
      assertEquals(await vrfDevice(ctr, "red"), "vrf table 1");
      // The interface went first (plugins#1282: the reference's DEL fails here).
      await sh("ip", ["-n", ctr.name, "link", "del", "eth0"]);
      assertSuccess(await vrf("DEL", host, at, conf));
      assertEquals(await vrfDevice(ctr, "red"), undefined);
      assertSuccess(await vrf("DEL", host, at, conf));
    }),
});

Deno.test({
  name: "vrf traffic: two peers with one address reach one container on two VRFs with one address",
  ignore: !ready,
  fn: () =>
    withNamespaces(3, async (host, ctr, peerA, peerB) => {
      // The same subnet on both sides: 10.99.40.1 in each peer, 10.99.40.2 on
      // both of the container's interfaces.
      const net1 = await vethAttachment(peerA, ctr, { subnet: 40, ifname: "net1" });
      const net2 = await vethAttachment(peerB, ctr, { subnet: 40, ifname: "net2" });
      // Without VRFs both replies take the first of the two subnet routes.
      assertEquals(
        [await ping(peerA, "10.99.40.2", 2), await ping(peerB, "10.99.40.2", 2)].filter(Boolean),
        [true],
      );
      const at = (ifname: string) => ({ netns: ctr.path, ifname });
      assertSuccess(await vrf("ADD", host, at("net1"), vrfConf("1.1.0", net1.result)));
      assertSuccess(
        await vrf("ADD", host, at("net2"), vrfConf("1.1.0", net2.result, { vrfname: "blue" })),
      );
      assert(await ping(peerA, "10.99.40.2"), "peer A through VRF red");
      assert(await ping(peerB, "10.99.40.2"), "peer B through VRF blue");
    }),
});
