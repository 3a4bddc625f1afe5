import { assertEquals, assertMatch, assertThrows } from "../../helpers/assert.ts";
import { haveReference } from "../../helpers/applet.ts";
import { hostLocal } from "../../helpers/ipam.ts";
import { links } from "../../helpers/kernel.ts";
import { assertNothingLeft, bridge, bridgeConf, bridgeName } from "../../helpers/bridge.ts";
import { canNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { probeKernel } from "../../helpers/kernel_features.ts";
import {
  collectVlanTrunk,
  gatewayAddressCommands,
  vidRanges,
  vlanCommands,
} from "../../../plugins/main/bridge/kernel.ts";
import { parseCIDR } from "../../../lib/cni/ipnet.ts";
import { CniError } from "../../../lib/cni/errors.ts";

// With VLAN filtering: bridge_vlan_filtering_test.ts, in the second kernel where this one lacks it.
const canFilterVlans = (await probeKernel(["bridge-vlan-filtering"]))["bridge-vlan-filtering"];

const ready = !canNetns || !haveReference;

// ---- pure parts -------------------------------------------------------------

Deno.test("collectVlanTrunk() merges ids and ranges, sorted and unique", () => {
  assertEquals(collectVlanTrunk([]), []);
  assertEquals(collectVlanTrunk([{ id: 101 }, { minID: 200, maxID: 203 }, { id: 201 }]), [
    101,
    200,
    201,
    202,
    203,
  ]);
  // An entry may carry a range and an id; an empty entry adds nothing.
  assertEquals(collectVlanTrunk([{ minID: 5, maxID: 6, id: 1 }, {}]), [1, 5, 6]);
  assertEquals(collectVlanTrunk([{ minID: 7, maxID: 7, id: null }]), [7]);
});

Deno.test("collectVlanTrunk() refuses what the reference refuses, with its words (code 7)", () => {
  const cases: [Parameters<typeof collectVlanTrunk>[0], string][] = [
    [[{ minID: 10 }], "minID and maxID should be configured simultaneously, maxID is missing"],
    [[{ maxID: 10 }], "minID and maxID should be configured simultaneously, minID is missing"],
    [[{ minID: -1, maxID: 10 }], "incorrect trunk minID parameter"],
    [[{ minID: 4095, maxID: 4095 }], "incorrect trunk minID parameter"],
    [[{ minID: 1, maxID: 5000 }], "incorrect trunk maxID parameter"],
    [[{ minID: 1, maxID: 0 }], "incorrect trunk maxID parameter"],
    [[{ id: 0 }], "incorrect trunk id parameter"],
    [[{ id: 4095 }], "incorrect trunk id parameter"],
    [[{ minID: 20, maxID: 10 }], "minID is greater than maxID in trunk parameter"],
  ];
  for (const [trunk, message] of cases) {
    const e = assertThrows(() => collectVlanTrunk(trunk), message);
    assertEquals((e as CniError).code, 7);
  }
});

Deno.test("vidRanges() folds consecutive ids", () => {
  assertEquals(vidRanges([]), []);
  assertEquals(vidRanges([5]), ["5"]);
  assertEquals(vidRanges([101, 200, 201, 202, 210, 4094]), ["101", "200-202", "210", "4094"]);
});

Deno.test("vlanCommands() follows the reference's order on a new port", () => {
  const p = "veth0";
  const none = { vlan: 0, trunk: [], preserveDefaultVlan: false };
  assertEquals(vlanCommands(p, none, 1), []);
  // Access port: the default PVID goes, the VLAN becomes PVID untagged.
  assertEquals(vlanCommands(p, { ...none, vlan: 100 }, 1), [
    ["vlan", "del", "dev", p, "vid", "1"],
    ["vlan", "add", "dev", p, "vid", "100", "pvid", "untagged"],
  ]);
  // Kept on request; nothing to remove when the bridge has no default PVID.
  assertEquals(vlanCommands(p, { ...none, vlan: 100, preserveDefaultVlan: true }, 1), [
    ["vlan", "add", "dev", p, "vid", "100", "pvid", "untagged"],
  ]);
  assertEquals(vlanCommands(p, { ...none, vlan: 100 }, 0), [
    ["vlan", "add", "dev", p, "vid", "100", "pvid", "untagged"],
  ]);
  // Trunk without a VLAN: tagged VLANs and VLAN 1 native.
  const trunk = [101, 200, 201, 202];
  assertEquals(vlanCommands(p, { ...none, trunk }, 1), [
    ["vlan", "del", "dev", p, "vid", "1"],
    ["vlan", "add", "dev", p, "vid", "101"],
    ["vlan", "add", "dev", p, "vid", "200-202"],
    ["vlan", "add", "dev", p, "vid", "1", "pvid", "untagged"],
  ]);
  // Trunk with a VLAN: that VLAN is the native one.
  assertEquals(vlanCommands(p, { ...none, vlan: 100, trunk }, 1), [
    ["vlan", "del", "dev", p, "vid", "1"],
    ["vlan", "add", "dev", p, "vid", "100", "pvid", "untagged"],
    ["vlan", "add", "dev", p, "vid", "101"],
    ["vlan", "add", "dev", p, "vid", "200-202"],
  ]);
});

Deno.test("gatewayAddressCommands() decides as the reference's ensureAddr", () => {
  const net = (cidr: string) => parseCIDR(cidr)!;
  const addr = (local: string, prefixlen: number, family: "inet" | "inet6" = "inet") => ({
    family,
    local,
    prefixlen,
    scope: "global",
  });
  // Present: nothing to do.
  assertEquals(
    gatewayAddressCommands("br0", [addr("10.1.0.1", 24)], [net("10.1.0.1/24")], false),
    { commands: [], added: false },
  );
  // Missing: added (replace tolerates a concurrent ADD), IPv4 with its broadcast.
  assertEquals(gatewayAddressCommands("br0", [], [net("10.1.0.1/24")], false), {
    commands: [["addr", "replace", "10.1.0.1/24", "broadcast", "+", "dev", "br0"]],
    added: true,
  });
  // Another IPv4 address: refused, or deleted first with force.
  assertThrows(
    () => gatewayAddressCommands("br0", [addr("10.9.0.1", 24)], [net("10.1.0.1/24")], false),
    `"br0" already has an IP address different from 10.1.0.1/24`,
  );
  assertEquals(
    gatewayAddressCommands("br0", [addr("10.9.0.1", 24)], [net("10.1.0.1/24")], true).commands,
    [
      ["addr", "del", "10.9.0.1/24", "dev", "br0"],
      ["addr", "replace", "10.1.0.1/24", "broadcast", "+", "dev", "br0"],
    ],
  );
  // IPv6: only an overlapping address is in the way; link-local never is.
  const v6 = [addr("fe80::1", 64, "inet6"), addr("fd00:9::1", 64, "inet6")];
  assertEquals(gatewayAddressCommands("br0", v6, [net("fd00:1::1/64")], false), {
    commands: [["addr", "replace", "fd00:1::1/64", "dev", "br0"]],
    added: true,
  });
  assertThrows(
    () => gatewayAddressCommands("br0", v6, [net("fd00:9::2/64")], false),
    "already has an IP address different from fd00:9::2/64",
  );
  // Two IPv4 gateways conflict with each other, as in the reference.
  assertThrows(
    () => gatewayAddressCommands("br0", [], [net("10.1.0.1/24"), net("10.2.0.1/24")], false),
    "already has an IP address different from 10.2.0.1/24",
  );
});

// ---- without VLAN filtering in the kernel (only such a kernel can show it) ---------

Deno.test({
  name: "bridge VLANs on a kernel without VLAN filtering: an error, and nothing left",
  ignore: ready || canFilterVlans,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const at = { netns: ctr.path };
      for (const extra of [{ vlan: 100 }, { vlanTrunk: [{ id: 101 }] }, { vlanTrunk: [] }]) {
        const br = bridgeName();
        const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), extra);
        const add = await bridge("ADD", host, at, conf);
        assertEquals(add.code, 1, add.stdout);
        assertEquals(add.json!.code, 5);
        assertMatch(add.json!.msg as string, /failed to create bridge .*Operation not supported/);
        await assertNothingLeft(host, [ctr], dataDir);
        assertEquals(await links(host), []);
      }
      // An existing bridge without filtering takes no VLAN either: the port is rolled back.
      const br = bridgeName();
      await host.exec("ip", ["link", "add", br, "type", "bridge"]);
      const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), { vlan: 100 });
      const add = await bridge("ADD", host, at, conf);
      assertEquals(add.json!.code, 5, add.stdout);
      assertMatch(add.json!.msg as string, /failed to setup vlan tag/);
      await assertNothingLeft(host, [ctr], dataDir);
    }),
});
