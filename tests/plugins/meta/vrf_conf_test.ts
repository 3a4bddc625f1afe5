/**
 * vrf where no VRF is needed, so on any kernel (vrf_test.ts has the rest,
 * in a kernel with VRFs): the versions and configs it refuses before
 * touching anything, DEL without a namespace, STATUS and GC.
 * @module
 */

import { assert, assertEquals, assertMatch } from "../../helpers/assert.ts";
import { assertSuccess, hostRunner, type PluginRun } from "../../helpers/applet.ts";
import { prevResultFor, vethAttachment } from "../../helpers/chained.ts";
import { addresses, allRoutes, type LinkJ, links } from "../../helpers/kernel.ts";
import { canNetns, type TestNetns, withNamespaces } from "../../helpers/netns.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";

const vrf = hostRunner("vrf");

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

/** The links of `ns` (kind, master, addresses) and every route: what an ADD would change. */
async function state(ns: TestNetns): Promise<{ links: string[]; routes: string[] }> {
  const show = (l: LinkJ) =>
    `${l.ifname} ${l.linkinfo?.info_kind} master ${l.master ?? "-"} ${addresses(l).join(",")}`;
  // The kernel adds the link-local address's routes when it gets to it.
  const routes = (await allRoutes(ns)).filter((r) => !/fe80::|table local/.test(r));
  return { links: (await links(ns)).map(show).sort(), routes };
}

function assertFailed(run: PluginRun, code: number, msg: RegExp): void {
  assert(run.code !== 0, `expected a failure: ${run.stdout}`);
  assertEquals(run.json?.code, code, run.stdout);
  assertMatch(String(run.json?.msg), msg);
}

Deno.test({
  name: "vrf refuses spec 0.3.0 and below, and ADD without prevResult or vrfname; nothing changes",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const veth = await vethAttachment(host, ctr, { subnet: 2 });
      const at = { netns: ctr.path };
      const before = await state(ctr);
      assertFailed(await vrf("ADD", host, at, vrfConf("0.3.0", veth.result)), 1, /incompatible/);
      assertFailed(
        await vrf("ADD", host, at, vrfConf("1.0.0", undefined)),
        7,
        /^missing prevResult from earlier plugin$/,
      );
      assertFailed(
        await vrf("ADD", host, at, vrfConf("1.0.0", veth.result, {})),
        7,
        /^configuration is expected to have a valid vrf name$/,
      );
      assertFailed(
        await vrf("ADD", host, at, vrfConf("1.0.0", veth.result, { vrfname: "red", table: -1 })),
        7,
        /table/,
      );
      assertEquals(await state(ctr), before);
    }),
});

Deno.test({
  name: "vrf DEL succeeds with the netns empty or gone; STATUS and GC answer success",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(0, async (host) => {
      const conf = vrfConf("1.1.0", undefined);
      assertSuccess(await vrf("DEL", host, { netns: "" }, conf));
      assertSuccess(await vrf("DEL", host, { netns: "/run/netns/cnikit-no-such-ns" }, conf));
      assertSuccess(await vrf("STATUS", host, { netns: "" }, conf));
      assertSuccess(
        await vrf("GC", host, { netns: "" }, { ...conf, "cni.dev/valid-attachments": [] }),
      );
      // vrfname is required for every verb, as in the reference.
      assertFailed(
        await vrf("DEL", host, { netns: "" }, vrfConf("1.1.0", undefined, {})),
        7,
        /^configuration is expected to have a valid vrf name$/,
      );
    }),
});
