/**
 * Differential: the same config through Debian's reference ptp (v1.1.1, with
 * its host-local) and cnikit's ptp (with cnikit's host-local), each in its
 * own fresh fake host and container. Results must be equal modulo the random
 * veth name and MACs, and the kernel state of both ends equivalent. The
 * reference creates veths with txqueuelen 0 (newer releases do not), so
 * queue lengths are not compared.
 * @module
 */

import { assert, assertEquals } from "../../helpers/assert.ts";
import { assertSuccess, haveReference, REFERENCE_BIN, withPrev } from "../../helpers/applet.ts";
import { canNetns, type TestNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { type Families, leases } from "../../helpers/ipam.ts";
import { addresses, iptablesMasq, links, routes } from "../../helpers/kernel.ts";
import { ptp, ptpConf } from "../../helpers/ptp.ts";

/** A result with the random parts and the test's netns path replaced, an empty `dns` dropped. */
function normalize(result: Record<string, unknown>, sandbox: string): Record<string, unknown> {
  const out = structuredClone(result);
  const ifaces = out.interfaces as { name: string; mac?: string; sandbox?: string }[] | undefined;
  for (const [i, iface] of (ifaces ?? []).entries()) {
    if (i === 0) iface.name = "HOSTVETH";
    if (iface.mac) iface.mac = "MAC";
    if (iface.sandbox === sandbox) iface.sandbox = "SANDBOX";
  }
  // The reference v1.1.1 prints `"dns": {}` in 1.x results; newer libcni and
  // cnikit leave an empty one out.
  if (out.dns && Object.keys(out.dns).length === 0 && String(out.cniVersion).startsWith("1.")) {
    delete out.dns;
  }
  return out;
}

interface Snapshot {
  result: Record<string, unknown>;
  container: { ifname: string; kind?: string; mtu: number; up: boolean; addrs: string[] }[];
  containerRoutes: string[];
  hostLinks: { kind?: string; mtu: number; up: boolean; addrs: string[] }[];
  hostRoutes: string[];
  nat: string[];
  forwarding: string;
  acceptRa: string;
  leases: number;
}

async function snapshot(
  host: TestNetns,
  ctr: TestNetns,
  result: Record<string, unknown>,
  dataDir: string,
): Promise<Snapshot> {
  const hostVeth = (result.interfaces as { name: string }[] | undefined)?.[0]?.name;
  const up = (flags: string[]) => flags.includes("UP");
  return {
    result: normalize(result, ctr.path),
    container: (await links(ctr)).map((l) => ({
      ifname: l.ifname,
      kind: l.linkinfo?.info_kind,
      mtu: l.mtu,
      up: up(l.flags),
      addrs: addresses(l),
    })),
    containerRoutes: await routes(ctr),
    hostLinks: (await links(host)).map((l) => ({
      kind: l.linkinfo?.info_kind,
      mtu: l.mtu,
      up: up(l.flags),
      addrs: addresses(l),
    })),
    hostRoutes: await routes(host, hostVeth),
    nat: await iptablesMasq(host),
    forwarding: await host.exec("sysctl", [
      "-n",
      "net.ipv4.ip_forward",
      "net.ipv6.conf.all.forwarding",
    ]),
    acceptRa: hostVeth
      ? await host.exec("sysctl", ["-n", `net.ipv6.conf.${hostVeth}.accept_ra`])
      : "",
    leases: (await leases(dataDir)).length,
  };
}

/** ADD (and CHECK, DEL) through the ptp in `bin` (cnikit's when undefined); the state after ADD. */
async function runSide(conf: Record<string, unknown>, bin?: string): Promise<Snapshot> {
  let snap: Snapshot | undefined;
  await withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
    const c = { ...conf, ipam: { ...(conf.ipam as object), dataDir } };
    const at = { netns: ctr.path };
    const add = await ptp("ADD", host, at, c, bin);
    assertEquals(add.code, 0, `${bin ?? "cnikit"}: ${add.stdout}${add.stderr}`);
    snap = await snapshot(host, ctr, add.json!, dataDir);
    if (String(conf.cniVersion) >= "0.4.0") {
      const check = await ptp("CHECK", host, at, withPrev(c, add), bin);
      assertEquals(check.code, 0, `${bin ?? "cnikit"} CHECK: ${check.stdout}`);
    }
    const del = await ptp("DEL", host, at, c, bin);
    assertEquals(del.code, 0, `${bin ?? "cnikit"} DEL: ${del.stdout}`);
    assertEquals(await leases(dataDir), []);
    assertEquals(await iptablesMasq(host), []);
  });
  return snap!;
}

const TWO_V4_RANGES = {
  type: "host-local",
  ranges: [[{ subnet: "10.77.0.0/24" }], [{ subnet: "10.88.0.0/24", gateway: "10.88.0.254" }]],
  routes: [{ dst: "0.0.0.0/0" }, { dst: "192.0.2.0/24", gw: "10.88.0.254" }],
};

const VARIANTS: [string, Families, Record<string, unknown>][] = [
  ["v4 ipMasq", "v4", { ipMasq: true }],
  ["dual mtu dns", "dual", { mtu: 1400, dns: { nameservers: ["10.77.0.53"], search: ["x"] } }],
  ["v6 ipMasq", "v6", { ipMasq: true }],
  ["two IPv4 ranges ipMasq", "v4", { ipMasq: true, ipam: TWO_V4_RANGES }],
];

for (const version of ["0.3.1", "0.4.0", "1.0.0"]) {
  for (const [what, families, extra] of VARIANTS) {
    Deno.test({
      name: `ptp differential ${what} (cniVersion ${version}): results and kernel state match`,
      ignore: !canNetns || !haveReference,
      fn: async () => {
        const conf = ptpConf(version, families, "", extra);
        const reference = await runSide(conf, REFERENCE_BIN);
        const cnikit = await runSide(conf);
        assertEquals(cnikit, reference);
        // Guard against comparing two empty snapshots.
        assertEquals(reference.leases, families === "dual" || extra.ipam ? 2 : 1);
        assert(reference.containerRoutes.length >= 3 && reference.hostRoutes.length >= 1);
        assertEquals(reference.nat.length > 0, extra.ipMasq === true);
      },
    });
  }
}

Deno.test({
  name: "ptp CHECK interop: each ptp accepts the attachment the other made",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = ptpConf("1.0.0", "dual", dataDir, { ipMasq: true });
      const at = { netns: ctr.path };
      for (const [adder, checker] of [[undefined, REFERENCE_BIN], [REFERENCE_BIN, undefined]]) {
        const add = assertSuccess(await ptp("ADD", host, at, conf, adder));
        const check = await ptp("CHECK", host, at, withPrev(conf, add), checker);
        assertEquals(check.code, 0, `${checker ?? "cnikit"} CHECK: ${check.stdout}`);
        assertSuccess(await ptp("DEL", host, at, conf, adder));
      }
    }),
});

Deno.test({
  name:
    "ptp DEL with an empty CNI_NETNS: the reference leaks the masquerade (plugins#810), cnikit not",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = ptpConf("1.0.0", "v4", dataDir, { ipMasq: true });
      assertSuccess(await ptp("ADD", host, { netns: ctr.path }, conf, REFERENCE_BIN));
      const rules = await iptablesMasq(host);
      assertEquals(rules.length, 4);
      assertSuccess(await ptp("DEL", host, { netns: "" }, conf, REFERENCE_BIN));
      assertEquals(await iptablesMasq(host), rules, "the reference was expected to leak");
      assertSuccess(await ptp("DEL", host, { netns: "" }, conf));
      assertEquals(await iptablesMasq(host), []);
    }),
});
