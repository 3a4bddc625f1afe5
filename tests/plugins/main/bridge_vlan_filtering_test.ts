/**
 * bridge on a kernel that filters VLANs: access ports, trunks, the VLAN
 * gateway link. Run in the second kernel where this one lacks the feature
 * (docs/DEVELOPING.md, Tests); Debian's v1.1.1 bridge is the oracle where it
 * has the option, the newest reference's behaviour (plugins/main/bridge/README.md)
 * where it has not.
 */

import { assertEquals } from "../../helpers/assert.ts";
import {
  assertSuccess,
  currentResult,
  haveReference,
  REFERENCE_BIN,
  withPrev,
} from "../../helpers/applet.ts";
import { hostLocal } from "../../helpers/ipam.ts";
import { addresses, link, links } from "../../helpers/kernel.ts";
import {
  assertNothingLeft,
  bridge,
  bridgeConf,
  bridgeName,
  verifyAttachment,
  vlans,
} from "../../helpers/bridge.ts";
import { withDataDirAndNamespaces, withNamespaces } from "../../helpers/netns.ts";
import { requireKernel } from "../../helpers/kernel_features.ts";

const ready = await requireKernel("bridge-vlan-filtering") && haveReference;

/** The VLAN lines of one port, with its random name as `PORT`. */
async function portVlans(host: Parameters<typeof vlans>[0], port: string): Promise<string[]> {
  return (await vlans(host)).filter((v) => v.startsWith(`${port} `))
    .map((v) => `PORT${v.slice(port.length)}`);
}

Deno.test({
  name: "bridge access VLAN 100: the port's default VLAN removed, or kept as v1.1.1 keeps it",
  ignore: !ready,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const at = { netns: ctr.path };
      for (const preserveDefaultVlan of [false, true]) {
        const br = bridgeName();
        const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), {
          vlan: 100,
          preserveDefaultVlan,
        });
        const add = assertSuccess(await bridge("ADD", host, at, conf));
        const result = currentResult(add, "1.0.0");
        const port = (await verifyAttachment(result, { host, ctr, bridge: br })).ifname;
        const info = (await link(host, br))!.linkinfo?.info_data;
        assertEquals(info?.vlan_filtering, 1);
        // Making 100 the PVID takes the PVID from VLAN 1 but leaves it egress untagged.
        assertEquals(await portVlans(host, port), [
          ...(preserveDefaultVlan ? ["PORT 1 egress untagged"] : []),
          "PORT 100 pvid egress untagged",
        ]);
        assertSuccess(await bridge("CHECK", host, at, withPrev(conf, add)));
        assertSuccess(await bridge("DEL", host, at, conf));
        await assertNothingLeft(host, [ctr], dataDir);
      }
      // v1.1.1 never removes the default VLAN: what preserveDefaultVlan keeps.
      const br = bridgeName();
      const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), { vlan: 100 });
      const add = assertSuccess(await bridge("ADD", host, at, conf, REFERENCE_BIN));
      const port = currentResult(add, "1.0.0").interfaces![1]!.name;
      assertEquals(await portVlans(host, port), [
        "PORT 1 egress untagged",
        "PORT 100 pvid egress untagged",
      ]);
      assertSuccess(await bridge("DEL", host, at, conf, REFERENCE_BIN));
    }),
});

Deno.test({
  name: "bridge vlanTrunk 101,200-210: tagged, with VLAN 1 or the access VLAN native",
  ignore: !ready,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const at = { netns: ctr.path };
      const trunk = [{ id: 101 }, { minID: 200, maxID: 210 }];
      for (const vlan of [0, 100]) {
        const br = bridgeName();
        const conf = bridgeConf("1.0.0", br, {}, { vlan, vlanTrunk: trunk });
        const add = assertSuccess(await bridge("ADD", host, at, conf));
        const port = currentResult(add, "1.0.0").interfaces![1]!.name;
        assertEquals(await portVlans(host, port), [
          `PORT ${vlan || 1} pvid egress untagged`,
          "PORT 101",
          "PORT 200-210",
        ]);
        assertSuccess(await bridge("DEL", host, at, conf));
        assertEquals(await portVlans(host, port), []);
      }
    }),
});

Deno.test({
  name: "bridge VLAN gateway: <bridge>.<vlan> carries the gateway, its peer is a port in the VLAN",
  ignore: !ready,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, c1, c2) => {
      const br = bridgeName().slice(0, 10);
      const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), {
        vlan: 100,
        isGateway: true,
      });
      const add = assertSuccess(await bridge("ADD", host, { netns: c1.path }, conf));
      const result = currentResult(add, "1.0.0");
      const gwName = `${br}.100`;
      assertEquals(result.interfaces!.length, 4);
      assertEquals(result.interfaces![3]!.name, gwName);
      const gw = (await link(host, gwName))!;
      assertEquals(gw.linkinfo?.info_kind, "veth");
      assertEquals(result.interfaces![3]!.mac, gw.address);
      assertEquals(addresses(gw), ["10.88.0.1/24 brd 10.88.0.255"]);
      assertEquals(addresses((await link(host, br))!), []);
      // Both ends are in the host, so ip names the peer (`link`) instead of giving its index.
      const peer = (await links(host)).find((l) => l.ifname === gw.link)!;
      assertEquals(peer.master, br);
      assertEquals(await portVlans(host, peer.ifname), ["PORT 100 pvid egress untagged"]);
      // A second attachment reuses it.
      const add2 = assertSuccess(
        await bridge("ADD", host, { netns: c2.path, containerId: "b" }, conf),
      );
      assertEquals(currentResult(add2, "1.0.0").interfaces![3]!.mac, gw.address);
      for (const [ctr, id] of [[c1, "ctr1"], [c2, "b"]] as const) {
        assertSuccess(await bridge("DEL", host, { netns: ctr.path, containerId: id }, conf));
      }
      // DEL never removes the gateway link (as it never removes the bridge).
      assertEquals(addresses((await link(host, gwName))!), ["10.88.0.1/24 brd 10.88.0.255"]);
      assertEquals(await portVlans(host, peer.ifname), ["PORT 100 pvid egress untagged"]);
    }),
});
