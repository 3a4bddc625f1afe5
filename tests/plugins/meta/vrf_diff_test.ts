/**
 * Differential: the same vrf configs through Debian's reference vrf (v1.1.1)
 * and cnikit's, on fresh attachments made the same way, in a kernel with
 * VRFs (the second kernel where this one lacks them). Results, the VRF
 * device, masters, addresses and the routes the kernel made must be equal
 * after ADD and after DEL. v1.1.1 does not yet copy the interface's routes
 * into the VRF's table (v1.4.0 does, and cnikit): those copies are checked
 * on cnikit's side only.
 * @module
 */

import { assert, assertEquals } from "../../helpers/assert.ts";
import { assertSuccess, haveReference, hostRunner, REFERENCE_BIN } from "../../helpers/applet.ts";
import { prevResultFor, vethAttachment } from "../../helpers/chained.ts";
import { addresses, allRoutes, type LinkJ, links } from "../../helpers/kernel.ts";
import { requireKernel } from "../../helpers/kernel_features.ts";
import { sh, type TestNetns, withNamespaces } from "../../helpers/netns.ts";

const ready = await requireKernel("vrf") && haveReference;
const vrf = hostRunner("vrf");

interface Variant {
  /** The interfaces to attach, in order, each with the VRF config it gets. */
  attach: { ifname: string; conf: Record<string, unknown> }[];
  /** Give the interfaces IPv6 addresses that enslaving drops (keep_addr_on_down off). */
  v6: boolean;
}

const VARIANTS: [string, Variant][] = [
  ["IPv4, a new VRF", { attach: [{ ifname: "eth0", conf: { vrfname: "red" } }], v6: false }],
  [
    "dual-stack, the IPv6 address dropped and re-added, a given table",
    { attach: [{ ifname: "eth0", conf: { vrfname: "red", table: 42 } }], v6: true },
  ],
  [
    "two interfaces in one VRF, a third in another",
    {
      attach: [
        { ifname: "eth0", conf: { vrfname: "red" } },
        { ifname: "net1", conf: { vrfname: "red" } },
        { ifname: "net2", conf: { vrfname: "blue" } },
      ],
      v6: false,
    },
  ],
];

/** Links (kind, VRF table, master, up, addresses) and the routes the kernel made. */
async function state(ctr: TestNetns): Promise<{ links: string[]; kernelRoutes: string[] }> {
  const show = (l: LinkJ) =>
    [
      l.ifname,
      l.linkinfo?.info_kind,
      l.linkinfo?.info_kind === "vrf" ? `table ${l.linkinfo.info_data?.table}` : "",
      `master ${l.master ?? "-"}`,
      l.flags.includes("UP") ? "up" : "down",
      addresses(l).join(","),
    ].join(" ");
  return {
    links: (await links(ctr)).map(show).sort(),
    // The link-local ones depend on random MACs and on when autoconfiguration
    // is done after enslaving: left out.
    kernelRoutes: (await allRoutes(ctr)).filter((r) =>
      r.includes("proto kernel") && !r.includes("fe80:")
    ),
  };
}

interface Snapshot {
  results: unknown[];
  added: Awaited<ReturnType<typeof state>>;
  deleted: Awaited<ReturnType<typeof state>>;
  copied: string[];
}

async function runSide(variant: Variant, bin?: string): Promise<Snapshot> {
  let snap: Snapshot | undefined;
  await withNamespaces(1, async (host, ctr) => {
    if (variant.v6) {
      await ctr.exec("sysctl", ["-qw", "net.ipv6.conf.all.keep_addr_on_down=0"]);
      await ctr.exec("sysctl", ["-qw", "net.ipv6.conf.default.keep_addr_on_down=0"]);
    }
    const confs = [];
    for (const [i, { ifname, conf }] of variant.attach.entries()) {
      const veth = await vethAttachment(host, ctr, { ifname, subnet: 50 + i });
      const ip = (...args: string[]) => sh("ip", ["-n", ctr.name, ...args]);
      await ip("route", "add", `10.77.${50 + i}.0/24`, "via", veth.hostIP, "dev", ifname);
      if (variant.v6) {
        await ip("addr", "add", `fd99:${50 + i}::2/64`, "dev", ifname, "nodad");
        veth.result.ips!.push({ address: `fd99:${50 + i}::2/64`, interface: 1 });
      }
      confs.push({
        cniVersion: "1.0.0",
        name: "vrfnet",
        type: "vrf",
        prevResult: prevResultFor(veth.result, "1.0.0"),
        ...conf,
      });
    }
    const results: unknown[] = [];
    for (const [i, { ifname }] of variant.attach.entries()) {
      const add = assertSuccess(
        await vrf("ADD", host, { netns: ctr.path, ifname }, confs[i]!, bin),
      );
      const result = structuredClone(add.json!);
      const ifaces = result.interfaces as { name: string; mac?: string; sandbox?: string }[];
      ifaces[0]!.name = "HOSTVETH";
      ifaces[1]!.sandbox = "SANDBOX";
      for (const iface of ifaces) iface.mac = "MAC";
      // v1.1.1 prints an empty `dns` in 1.x results; cnikit leaves it out.
      delete result.dns;
      results.push(result);
    }
    const added = await state(ctr);
    const copied = (await allRoutes(ctr)).filter((r) => r.startsWith("10.77."));
    for (const [i, { ifname }] of variant.attach.entries()) {
      assertSuccess(await vrf("DEL", host, { netns: ctr.path, ifname }, confs[i]!, bin));
    }
    snap = { results, added, deleted: await state(ctr), copied };
  });
  return snap!;
}

for (const [what, variant] of VARIANTS) {
  Deno.test({
    name: `vrf matches the reference: ${what}`,
    ignore: !ready,
    fn: async () => {
      const ours = await runSide(variant);
      const reference = await runSide(variant, REFERENCE_BIN);
      assertEquals({ ...ours, copied: [] }, { ...reference, copied: [] });
      // v1.1.1 loses the interface's routes; the newest reference and cnikit
      // carry them into the VRF's table.
      assertEquals(reference.copied, []);
      assertEquals(ours.copied.length, variant.attach.length);
      assert(ours.copied.every((r) => !r.includes("table main")), ours.copied.join("\n"));
    },
  });
}
