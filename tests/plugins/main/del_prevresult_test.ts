/**
 * DEL with a prevResult that cannot be decoded still removes everything by
 * name and container ID (link, lease, masquerade rules) and succeeds. The
 * reference succeeds too when prevResult is an object (it does not read it
 * on DEL); when it is not an object the reference fails with code 999 and
 * cleans nothing, where cnikit cleans up and succeeds.
 * @module
 */

import { assertEquals } from "../../helpers/assert.ts";
import { assertSuccess, haveReference, REFERENCE_BIN } from "../../helpers/applet.ts";
import { assertNothingLeft, bridge, bridgeConf, bridgeName } from "../../helpers/bridge.ts";
import { hostLocal } from "../../helpers/ipam.ts";
import { canNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { ptp, ptpConf } from "../../helpers/ptp.ts";

const BAD: unknown[] = [
  { ips: "x" },
  { interfaces: [{ name: 7 }] },
  { cniVersion: "1.0.0", ips: [{ address: "not-a-cidr" }] },
  { cniVersion: "0.2.0", ip4: { ip: "10.1.2.3/24" } },
  5,
  "x",
];

for (const [plugin, runner] of [["bridge", bridge], ["ptp", ptp]] as const) {
  Deno.test({
    name: `${plugin} DEL with an undecodable prevResult cleans up by name and succeeds`,
    ignore: !canNetns || !haveReference,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const conf = plugin === "bridge"
          ? bridgeConf("1.0.0", bridgeName(), hostLocal("v4", dataDir), {
            isGateway: true,
            ipMasq: true,
          })
          : ptpConf("1.0.0", "v4", dataDir, { ipMasq: true });
        const at = { netns: ctr.path };
        for (const prevResult of BAD) {
          assertSuccess(await runner("ADD", host, at, conf));
          const del = await runner("DEL", host, at, { ...conf, prevResult });
          assertEquals(del.code, 0, `${JSON.stringify(prevResult)}: ${del.stdout}`);
          await assertNothingLeft(host, [ctr], dataDir);
        }
      }),
  });

  Deno.test({
    name: `${plugin} (reference) DEL with an object prevResult it cannot decode succeeds as well`,
    ignore: !canNetns || !haveReference,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const conf = plugin === "bridge"
          ? bridgeConf("1.0.0", bridgeName(), hostLocal("v4", dataDir))
          : ptpConf("1.0.0", "v4", dataDir);
        const at = { netns: ctr.path };
        for (const prevResult of BAD.filter((p) => typeof p === "object")) {
          assertSuccess(await runner("ADD", host, at, conf, REFERENCE_BIN));
          assertSuccess(await runner("DEL", host, at, { ...conf, prevResult }, REFERENCE_BIN));
          await assertNothingLeft(host, [ctr], dataDir);
        }
      }),
  });
}
