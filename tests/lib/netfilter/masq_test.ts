import { assert, assertEquals } from "../../helpers/assert.ts";
import {
  assertSuccess,
  cniEnv,
  currentResult,
  DIST_BIN,
  haveReference,
  REFERENCE_BIN,
  runApplet,
  withPrev,
} from "../../helpers/applet.ts";
import { canNetns, sh, TestNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { ping } from "../../helpers/ping.ts";
import { type Families, leases, SUBNET } from "../../helpers/ipam.ts";
import { sha512Hex } from "../../../lib/cni/hash.ts";
import {
  iptablesMasq,
  links,
  nftMasqRules,
  nftMasqTable,
  vethBetween,
} from "../../helpers/kernel.ts";
import { ptp, ptpConf } from "../../helpers/ptp.ts";

/** The iptables-save lines the reference writes for one attachment. */
async function expectedIptables(
  network: string,
  containerId: string,
  ips: { address: string }[],
): Promise<string[]> {
  const chain = `CNI-${(await sha512Hex(network + containerId)).slice(0, 24)}`;
  const comment = `-m comment --comment "name: \\"${network}\\" id: \\"${containerId}\\""`;
  const lines: string[] = [];
  for (const family of [4, 6] as const) {
    const mine = ips.filter((ip) => ip.address.includes(":") === (family === 6));
    if (!mine.length) continue;
    lines.push(`:${chain} - [0:0]`);
    for (const ip of mine) {
      const [addr, prefix] = ip.address.split("/");
      const subnet = SUBNET[family];
      lines.push(
        `-A POSTROUTING -s ${addr}/${family === 4 ? 32 : 128} ${comment} -j ${chain}`,
        `-A ${chain} -d ${subnet} ${comment} -j ACCEPT`,
        `-A ${chain} ! -d ${family === 4 ? "224.0.0.0/4" : "ff00::/8"} ${comment} -j MASQUERADE`,
      );
      assertEquals(prefix, family === 4 ? "24" : "64");
    }
  }
  return lines;
}

/** The nft rules (as `nft list` prints them) the reference writes for one attachment. */
async function expectedNft(
  network: string,
  containerId: string,
  ifname: string,
  ips: { address: string }[],
): Promise<string[]> {
  const hash = `${(await sha512Hex(network)).slice(0, 16)}-${
    (await sha512Hex(`${ifname}:${containerId}`)).slice(0, 16)
  }`;
  const comment = `"${hash}, net: ${network}, if: ${ifname}, id: ${containerId}"`;
  return ips.map((ip) => {
    const v6 = ip.address.includes(":");
    const fam = v6 ? "ip6" : "ip";
    const subnet = v6 ? SUBNET[6] : SUBNET[4];
    return `${fam} saddr ${
      ip.address.split("/")[0]
    } ${fam} daddr != ${subnet} masquerade comment ${comment}`;
  });
}

const BACKENDS = ["iptables", "nftables"] as const;

for (const backend of BACKENDS) {
  for (const families of ["v4", "dual"] as const) {
    Deno.test({
      name: `ptp ipMasq ${backend} ${families}: the reference's rules after ADD, none after DEL`,
      ignore: !canNetns || !haveReference,
      fn: () =>
        withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
          const conf = ptpConf("1.0.0", families, dataDir, {
            ipMasq: true,
            ipMasqBackend: backend,
          });
          const at = { netns: ctr.path };
          const add = assertSuccess(await ptp("ADD", host, at, conf));
          const ips = currentResult(add, "1.0.0").ips!;
          if (backend === "iptables") {
            assertEquals(await iptablesMasq(host), await expectedIptables("ptpnet", "ctr1", ips));
            assertEquals(await nftMasqRules(host), []);
          } else {
            assertEquals(
              await nftMasqRules(host),
              await expectedNft("ptpnet", "ctr1", "eth0", ips),
            );
            const table = await nftMasqTable(host);
            for (
              const line of [
                'comment "Masquerading for plugins from github.com/containernetworking/plugins"',
                "type nat hook postrouting priority srcnat; policy accept;",
                "ip daddr 224.0.0.0/4 return",
                "ip6 daddr ff00::/8 return",
                "goto masq_checks",
              ]
            ) assert(table.includes(line), `missing "${line}" in\n${table}`);
            assertEquals(await iptablesMasq(host), []);
          }
          // A second ADD of the same attachment would fail in host-local; the
          // rules themselves must not double when set up again (CHECK first).
          assertSuccess(await ptp("CHECK", host, at, withPrev(conf, add)));
          for (let i = 0; i < 2; i++) {
            assertSuccess(await ptp("DEL", host, at, conf));
            assertEquals(await iptablesMasq(host), []);
            assertEquals(await nftMasqRules(host), []);
            assertEquals(await leases(dataDir), []);
          }
        }),
    });
  }
}

for (const backend of BACKENDS) {
  for (const netnsGone of ["empty CNI_NETNS", "netns deleted"]) {
    Deno.test({
      name: `ptp DEL with ${netnsGone} still removes the ${backend} masquerade and the lease`,
      ignore: !canNetns || !haveReference,
      fn: () =>
        withDataDirAndNamespaces(0, async (dataDir, host) => {
          const ctr = await TestNetns.create("ckc");
          try {
            const conf = ptpConf("1.0.0", "dual", dataDir, {
              ipMasq: true,
              ipMasqBackend: backend,
            });
            assertSuccess(await ptp("ADD", host, { netns: ctr.path }, conf));
            const before = [...await iptablesMasq(host), ...await nftMasqRules(host)];
            assertEquals(before.length, backend === "iptables" ? 8 : 2);
            await ctr.remove();
            const netns = netnsGone === "empty CNI_NETNS" ? "" : ctr.path;
            assertSuccess(await ptp("DEL", host, { netns }, conf));
            assertEquals(await iptablesMasq(host), []);
            assertEquals(await nftMasqRules(host), []);
            assertEquals(await leases(dataDir), []);
          } finally {
            await ctr.remove();
          }
        }),
    });
  }
}

/**
 * Gives the fake host a second veth to an "outside" namespace that knows
 * nothing about the pod subnets; returns the outside addresses.
 */
async function addOutside(host: TestNetns, outside: TestNetns): Promise<[string, string]> {
  await vethBetween(host, "up0", outside, "down0");
  const addr = (ns: TestNetns, dev: string, cidr: string) =>
    sh("ip", [
      "-n",
      ns.name,
      "addr",
      "add",
      cidr,
      "dev",
      dev,
      ...(cidr.includes(":") ? ["nodad"] : []),
    ]);
  await addr(host, "up0", "192.0.2.1/24");
  await addr(host, "up0", "2001:db8:1::1/64");
  await addr(outside, "down0", "192.0.2.2/24");
  await addr(outside, "down0", "2001:db8:1::2/64");
  return ["192.0.2.2", "2001:db8:1::2"];
}

for (const backend of BACKENDS) {
  Deno.test({
    name: `ptp ipMasq ${backend}: the container reaches an outside host with no route back`,
    ignore: !canNetns || !haveReference,
    fn: () =>
      withDataDirAndNamespaces(2, async (dataDir, host, ctr, outside) => {
        const targets = await addOutside(host, outside);
        const masq = { ipMasq: true, ipMasqBackend: backend };
        const conf = ptpConf("1.0.0", "dual", dataDir, masq);
        const at = { netns: ctr.path };
        assertSuccess(await ptp("ADD", host, at, conf));
        for (const ip of targets) assert(await ping(ctr, ip), `${backend}: ctr -> ${ip}`);
        assertSuccess(await ptp("DEL", host, at, conf));

        // The control: without masquerade the replies have nowhere to go.
        const plain = ptpConf("1.0.0", "dual", dataDir);
        assertSuccess(await ptp("ADD", host, at, plain));
        for (const ip of targets) assert(!await ping(ctr, ip, 1), `unmasqueraded ${ip} answered`);
        assertSuccess(await ptp("DEL", host, at, plain));
      }),
  });
}

for (const [adder, deleter] of [[REFERENCE_BIN, DIST_BIN], [DIST_BIN, REFERENCE_BIN]]) {
  const who = (bin: string) => (bin === DIST_BIN ? "cnikit" : "reference");
  Deno.test({
    name: `ptp ipMasq iptables: rules made by the ${who(adder!)} ptp are removed by the ${
      who(deleter!)
    } DEL`,
    ignore: !canNetns || !haveReference,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        // The reference (v1.1.1) knows neither spec 1.1.0 nor ipMasqBackend.
        const conf = ptpConf("1.0.0", "dual", dataDir, { ipMasq: true });
        const at = { netns: ctr.path };
        const add = assertSuccess(await ptp("ADD", host, at, conf, adder));
        const ips = currentResult(add, "1.0.0").ips!;
        assertEquals(await iptablesMasq(host), await expectedIptables("ptpnet", "ctr1", ips));
        assertSuccess(await ptp("DEL", host, at, conf, deleter));
        assertEquals(await iptablesMasq(host), []);
        assertEquals(await leases(dataDir), []);
      }),
  });
}

Deno.test({
  name: "ptp GC (cniVersion 1.1.0) removes leases and masquerade of attachments not listed",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(3, async (dataDir, host, c1, c2, c3) => {
      const ids = [["c1", c1], ["c2", c2], ["c3", c3]] as const;
      const backend = (id: string) => (id === "c2" ? "nftables" : "iptables");
      const conf = (id: string) =>
        ptpConf("1.1.0", "dual" as Families, dataDir, {
          ipMasq: true,
          ipMasqBackend: backend(id),
        });
      for (const [id, ns] of ids) {
        assertSuccess(
          await ptp("ADD", host, { containerId: id, netns: ns.path }, conf(id)),
        );
      }
      assertEquals((await leases(dataDir)).length, 6);
      assertEquals((await iptablesMasq(host)).length, 16);
      assertEquals((await nftMasqRules(host)).length, 2);
      // c1 stays; c2 (nftables) and c3 (iptables) are stale.
      assertSuccess(
        await runApplet("ptp", {
          env: cniEnv("GC", { containerId: "", ifname: "", path: `${DIST_BIN}` }),
          stdin: {
            ...conf("c1"),
            "cni.dev/valid-attachments": [{ containerID: "c1", ifname: "eth0" }],
          },
          host,
        }),
      );
      assertEquals((await leases(dataDir)).length, 2);
      const c1Ips = (await leases(dataDir, "ptpnet")).map((f) => ({
        address: `${f}/${f.includes(":") ? 64 : 24}`,
      }));
      assertEquals(await iptablesMasq(host), await expectedIptables("ptpnet", "c1", c1Ips));
      assertEquals(await nftMasqRules(host), []);
      assertSuccess(
        await ptp("DEL", host, { containerId: "c1", netns: c1.path }, conf("c1")),
      );
      assertEquals(await iptablesMasq(host), []);
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "ptp GC keeps the rules of other networks",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const other = { ...ptpConf("1.1.0", "v4", dataDir, { ipMasq: true }), name: "othernet" };
      assertSuccess(await ptp("ADD", host, { netns: ctr.path }, other));
      const before = await iptablesMasq(host);
      assertSuccess(
        await runApplet("ptp", {
          env: cniEnv("GC", { containerId: "", ifname: "", path: DIST_BIN }),
          stdin: {
            ...ptpConf("1.1.0", "v4", dataDir, { ipMasq: true }),
            "cni.dev/valid-attachments": [],
          },
          host,
        }),
      );
      assertEquals(await iptablesMasq(host), before);
      assertEquals((await leases(dataDir, "othernet")).length, 1);
      assertSuccess(await ptp("DEL", host, { netns: ctr.path }, other));
    }),
});

Deno.test({
  name: "ptp ipMasq: 16 parallel ADDs and DELs in one host (both backends) leave nothing behind",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(16, async (dataDir, host, ...ctrs) => {
      const conf = (i: number) =>
        ptpConf("1.0.0", "dual", dataDir, {
          ipMasq: true,
          ipMasqBackend: BACKENDS[i % 2],
        });
      const at = (i: number) => ({ containerId: `par${i}`, netns: ctrs[i]!.path });
      const adds = await Promise.all(ctrs.map((_, i) => ptp("ADD", host, at(i), conf(i))));
      for (const add of adds) assertEquals(add.code, 0, add.stdout + add.stderr);
      assertEquals((await leases(dataDir)).length, 32);
      assertEquals((await iptablesMasq(host)).length, 8 * 8);
      assertEquals((await nftMasqRules(host)).length, 8 * 2);
      const ips = adds.map((a) => currentResult(a, "1.0.0").ips![0]!.address.split("/")[0]!);
      for (const ip of ips) assert(await ping(host, ip), `host -> ${ip}`);
      const dels = await Promise.all(ctrs.map((_, i) => ptp("DEL", host, at(i), conf(i))));
      for (const del of dels) assertEquals(del.code, 0, del.stdout + del.stderr);
      assertEquals(await leases(dataDir), []);
      assertEquals(await iptablesMasq(host), []);
      assertEquals(await nftMasqRules(host), []);
      assertEquals(await links(host), []);
    }),
});
