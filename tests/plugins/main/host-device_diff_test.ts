/**
 * Differential: the same host-device configs through Debian's reference
 * host-device (v1.1.1) and cnikit's, each moving a fresh veth end of its own
 * fake host (dummies: host-device_dummy_test.ts, in the second kernel).
 * Results, the device in the container, its routes and leases, and the
 * device given back must be equal; the alias v1.1.1 leaves behind is the one
 * difference (tests/helpers/host_device.ts).
 * @module
 */

import { haveReference } from "../../helpers/applet.ts";
import { assertLikeReference, DIFF_VARIANTS, hostVeth } from "../../helpers/host_device.ts";
import { canNetns } from "../../helpers/netns.ts";

for (const version of ["0.3.1", "1.0.0"]) {
  for (const [what, variant] of DIFF_VARIANTS) {
    Deno.test({
      name: `host-device matches the reference on a veth: ${what} (cniVersion ${version})`,
      ignore: !canNetns || !haveReference,
      fn: () => assertLikeReference((host, name) => hostVeth(host, name), variant, version),
    });
  }
}
