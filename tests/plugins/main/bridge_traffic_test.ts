/**
 * Packets through bridge attachments, between namespaces the tests create:
 * containers on one bridge reach each other and the gateway; masquerade
 * lets a container reach an "outside" namespace that has no route back to
 * the pod subnet; port isolation and the MAC spoof check stop what they
 * should.
 */

import { assert, assertEquals } from "../../helpers/assert.ts";
import { assertSuccess, currentResult, haveReference } from "../../helpers/applet.ts";
import { hostLocal } from "../../helpers/ipam.ts";
import { vethBetween } from "../../helpers/kernel.ts";
import { assertNothingLeft, bridge, bridgeConf, bridgeName } from "../../helpers/bridge.ts";
import {
  canNetns,
  type TestNetns,
  withDataDirAndNamespaces,
  withNamespaces,
} from "../../helpers/netns.ts";
import { ping } from "../../helpers/ping.ts";

const ready = !canNetns || !haveReference;

/** The addresses of an ADD's result, without prefix, v4 first. */
function ipsOf(run: Awaited<ReturnType<typeof bridge>>): string[] {
  return currentResult(run, "1.0.0").ips!.map((ip) => ip.address.split("/")[0]!);
}

Deno.test({
  name: "bridge traffic: two containers on one bridge reach each other and the gateway (v4 and v6)",
  ignore: ready,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, c1, c2) => {
      const conf = bridgeConf("1.0.0", bridgeName(), hostLocal("dual", dataDir), {
        isGateway: true,
      });
      const a1 = await bridge("ADD", host, { netns: c1.path, containerId: "a" }, conf);
      const a2 = await bridge("ADD", host, { netns: c2.path, containerId: "b" }, conf);
      assertEquals([a1.code, a2.code], [0, 0], a1.stdout + a2.stdout);
      const [v4b, v6b] = ipsOf(a2);
      const [v4a, v6a] = ipsOf(a1);
      assert(await ping(c1, v4b!), `c1 → ${v4b}`);
      assert(await ping(c2, v4a!), `c2 → ${v4a}`);
      assert(await ping(c1, v6b!), `c1 → ${v6b}`);
      assert(await ping(c2, v6a!), `c2 → ${v6a}`);
      assert(await ping(c1, "10.88.0.1"), "c1 → gateway");
      assert(await ping(c2, "fd00:88::1"), "c2 → gateway v6");
      assert(await ping(host, v4a!), "host → c1");
      for (const [ctr, id] of [[c1, "a"], [c2, "b"]] as const) {
        assertSuccess(await bridge("DEL", host, { netns: ctr.path, containerId: id }, conf));
      }
      await assertNothingLeft(host, [c1, c2], dataDir);
    }),
});

Deno.test({
  name: "bridge traffic: L2 attachments carry what the containers configure themselves",
  ignore: ready,
  fn: () =>
    withNamespaces(2, async (host, c1, c2) => {
      const conf = bridgeConf("1.0.0", bridgeName(), {});
      for (
        const [ctr, id, addr] of [[c1, "a", "192.168.50.1/24"], [
          c2,
          "b",
          "192.168.50.2/24",
        ]] as const
      ) {
        assertSuccess(
          await bridge("ADD", host, { netns: ctr.path, containerId: id }, conf),
        );
        await ctr.exec("ip", ["addr", "add", addr, "dev", "eth0"]);
      }
      assert(await ping(c1, "192.168.50.2"));
      assert(await ping(c2, "192.168.50.1"));
    }),
});

/** A namespace outside the host, reachable through `up0`, with no route to the pod subnet. */
async function outside(host: TestNetns, wan: TestNetns): Promise<void> {
  await vethBetween(host, "up0", wan, "wan0");
  await host.exec("ip", ["addr", "add", "192.168.77.1/24", "dev", "up0"]);
  await wan.exec("ip", ["addr", "add", "192.168.77.2/24", "dev", "wan0"]);
}

for (const backend of ["iptables", "nftables"] as const) {
  Deno.test({
    name: `bridge traffic: masquerade (${backend}) reaches a namespace with no route back`,
    ignore: ready,
    fn: () =>
      withDataDirAndNamespaces(2, async (dataDir, host, ctr, wan) => {
        await outside(host, wan);
        const base = bridgeConf("1.0.0", bridgeName(), hostLocal("v4", dataDir), {
          isDefaultGateway: true,
        });
        const at = { netns: ctr.path };
        // Without masquerade the replies have no way back.
        assertSuccess(await bridge("ADD", host, at, base));
        assert(!await ping(ctr, "192.168.77.2", 1), "reached outside without masquerade");
        assertSuccess(await bridge("DEL", host, at, base));
        const conf = { ...base, ipMasq: true, ipMasqBackend: backend };
        assertSuccess(await bridge("ADD", host, at, conf));
        assert(await ping(ctr, "192.168.77.2"), "masquerade did not take");
        assertSuccess(await bridge("DEL", host, at, conf));
        await host.exec("ip", ["link", "del", "up0"]);
        await assertNothingLeft(host, [ctr], dataDir);
      }),
  });
}

Deno.test({
  name: "bridge traffic: isolated ports reach the gateway but not each other",
  ignore: ready,
  fn: () =>
    withDataDirAndNamespaces(3, async (dataDir, host, c1, c2, c3) => {
      const br = bridgeName();
      const isolated = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), {
        isGateway: true,
        portIsolation: true,
      });
      const open = { ...isolated, portIsolation: false };
      const a1 = await bridge("ADD", host, { netns: c1.path, containerId: "a" }, isolated);
      const a2 = await bridge("ADD", host, { netns: c2.path, containerId: "b" }, isolated);
      const a3 = await bridge("ADD", host, { netns: c3.path, containerId: "c" }, open);
      assertEquals([a1.code, a2.code, a3.code], [0, 0, 0]);
      const [ip2] = ipsOf(a2);
      const [ip3] = ipsOf(a3);
      assert(await ping(c1, "10.88.0.1"), "isolated port → gateway");
      assert(!await ping(c1, ip2!, 1), "isolated port → isolated port");
      assert(await ping(c1, ip3!), "isolated port → open port");
    }),
});

Deno.test({
  name: "bridge traffic: macspoofchk drops frames from another source MAC",
  ignore: ready,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, c1, c2) => {
      const conf = bridgeConf("1.0.0", bridgeName(), hostLocal("v4", dataDir), {
        macspoofchk: true,
      });
      const a1 = await bridge("ADD", host, { netns: c1.path, containerId: "a" }, conf);
      const a2 = await bridge("ADD", host, { netns: c2.path, containerId: "b" }, conf);
      assertEquals([a1.code, a2.code], [0, 0], a1.stdout + a2.stdout);
      const [ip2] = ipsOf(a2);
      assert(await ping(c1, ip2!), "before spoofing");
      await c1.exec("ip", ["link", "set", "eth0", "address", "0a:58:00:00:00:99"]);
      await c2.exec("ip", ["neigh", "flush", "all"]);
      assert(!await ping(c1, ip2!, 1), "a spoofed MAC got through");
      const mac = currentResult(a1, "1.0.0").interfaces![2]!.mac!;
      await c1.exec("ip", ["link", "set", "eth0", "address", mac]);
      assert(await ping(c1, ip2!), "after restoring the MAC");
      for (const [ctr, id] of [[c1, "a"], [c2, "b"]] as const) {
        assertSuccess(await bridge("DEL", host, { netns: ctr.path, containerId: id }, conf));
      }
      await assertNothingLeft(host, [c1, c2], dataDir);
    }),
});
