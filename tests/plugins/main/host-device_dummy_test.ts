/**
 * host-device with dummy links as the host devices, in a kernel that has
 * them (the second kernel where this one lacks them): a device that, like
 * a NIC, has no peer and always a carrier. ADD/CHECK/DEL/DEL against the
 * kernel and the differential against Debian's host-device (v1.1.1).
 * @module
 */

import { assertEquals } from "../../helpers/assert.ts";
import { assertSuccess, currentResult, haveReference } from "../../helpers/applet.ts";
import {
  assertLikeReference,
  type Device,
  DIFF_VARIANTS,
  hdConf,
  hostDevice,
  hostDummy,
  shape,
} from "../../helpers/host_device.ts";
import { hostLocal, leases } from "../../helpers/ipam.ts";
import { link } from "../../helpers/kernel.ts";
import { requireKernel } from "../../helpers/kernel_features.ts";
import { withDataDirAndNamespaces } from "../../helpers/netns.ts";

const ready = await requireKernel("dummy");

Deno.test({
  name: "host-device ADD/CHECK/DEL/DEL moves a dummy in and back, IPv6 settled (cniVersion 1.1.0)",
  ignore: !ready,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const dev = await hostDummy(host, "dummy0");
      const conf = hdConf("1.1.0", { device: "dummy0", ipam: hostLocal("dual", dataDir) });
      const at = { netns: ctr.path, ifname: "eth0" };
      const add = assertSuccess(await hostDevice("ADD", host, at, conf));
      assertEquals(currentResult(add, "1.1.0").interfaces, [
        { name: "eth0", mac: dev.address, sandbox: ctr.path },
      ]);
      assertEquals(shape((await link(ctr, "eth0")) as Device), {
        ifname: "eth0",
        kind: "dummy",
        mac: dev.address,
        up: true,
        alias: "dummy0",
        addrs: ["10.88.0.2/24 brd 10.88.0.255", "fd00:88::2/64"],
      });
      assertSuccess(await hostDevice("CHECK", host, at, { ...conf, prevResult: add.json }));
      for (let i = 0; i < 2; i++) {
        assertSuccess(await hostDevice("DEL", host, at, { ...conf, prevResult: add.json }));
        assertEquals(shape((await link(host, "dummy0")) as Device), {
          ...shape(dev)!,
          up: false,
          addrs: [],
        });
        assertEquals(await leases(dataDir), []);
      }
    }),
});

for (const [what, variant] of DIFF_VARIANTS) {
  Deno.test({
    name: `host-device matches the reference on a dummy: ${what}`,
    ignore: !ready || !haveReference,
    fn: () => assertLikeReference(hostDummy, variant, "1.0.0"),
  });
}
