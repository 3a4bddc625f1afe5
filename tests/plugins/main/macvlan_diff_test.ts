/**
 * cnikit's macvlan against Debian's reference build (v1.1.1): the same
 * config in two identical fake hosts gives equal results (MACs and the
 * netns path labelled) and equal container state; both clean up completely.
 * v1.1.1 lacks `linkInContainer`, `bcqueuelen` and `ndisc_notify`, so those
 * are left out (the newest reference sets `ndisc_notify`; cnikit does).
 */

import { probeKernel } from "../../helpers/kernel_features.ts";
import { canNetns } from "../../helpers/netns.ts";
import { assertEquals } from "../../helpers/assert.ts";
import { haveReference, REFERENCE_BIN } from "../../helpers/applet.ts";
import { defaultRoutes, type Families, hostLocal } from "../../helpers/ipam.ts";
import { linkConf, linkSnapshot, macvlan, makeMaster } from "../../helpers/links.ts";

// Here only: every plugin call costs seconds in the second kernel, where macvlan_test.ts runs.
const cannotRun = !canNetns || !haveReference || !(await probeKernel(["macvlan"])).macvlan;

const VARIANTS: [string, Families | null, Record<string, unknown>][] = [
  ["v4 default mode", "v4", {}],
  ["dual private mtu 1400", "dual", { mode: "private", mtu: 1400 }],
  ["v6 vepa with mac", "v6", { mode: "vepa", mac: "02:42:ac:11:00:09" }],
  ["L2 passthru", null, { mode: "passthru" }],
  ["v4 dns", "v4", { dns: { nameservers: ["10.88.0.53"], search: ["example.test"] } }],
];

for (const version of ["0.3.1", "0.4.0", "1.0.0"]) {
  for (const [what, families, extra] of VARIANTS) {
    Deno.test({
      name: `macvlan differential ${what} (cniVersion ${version}): results and kernel state match`,
      ignore: cannotRun,
      fn: async () => {
        const conf = linkConf("macvlan", version, {
          master: "ckm0",
          ...(families
            ? { ipam: hostLocal(families, "", { routes: defaultRoutes(families) }) }
            : {}),
          ...extra,
        });
        const setup = async (host: Parameters<Parameters<typeof linkSnapshot>[2]>[0]) => {
          await makeMaster(host);
        };
        const reference = await linkSnapshot(macvlan, conf, setup, REFERENCE_BIN);
        const cnikit = await linkSnapshot(macvlan, conf, setup);
        // v1.1.1 does not set ndisc_notify (added in v1.4.0); cnikit does, as the newest.
        const withoutNdisc = (s: typeof cnikit) => ({
          ...s,
          sysctls: s.sysctls.filter((_, i) => i % 2 === 0),
        });
        assertEquals(withoutNdisc(cnikit), withoutNdisc(reference));
        assertEquals(reference.container.length, 1);
        assertEquals(reference.leases, families === "dual" ? 2 : families ? 1 : 0);
      },
    });
  }
}
