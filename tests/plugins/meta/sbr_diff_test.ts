/**
 * Differential: the same sbr config through Debian's reference sbr (v1.1.1)
 * and cnikit's, each on a fresh attachment made the same way; results,
 * rules and routes (every table but local) after ADD and after DEL must be
 * equal. v1.1.1 has no `table`, `gateways` or `addSourceHints`, so the
 * variants use what both know.
 * @module
 */

import { assertEquals } from "../../helpers/assert.ts";
import { assertSuccess, haveReference, hostRunner, REFERENCE_BIN } from "../../helpers/applet.ts";
import { prevResultFor, vethAttachment } from "../../helpers/chained.ts";
import { allRoutes, rules } from "../../helpers/kernel.ts";
import { canNetns, sh, type TestNetns, withNamespaces } from "../../helpers/netns.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";

const sbr = hostRunner("sbr");

interface Setup {
  /** The main table's default routes of the container. */
  defaultRoute: boolean;
  v6: boolean;
  /** A second IPv4 address in the same subnet, in the prevResult too. */
  second: boolean;
}

const VARIANTS: [string, Setup][] = [
  ["IPv4 with a default route", { defaultRoute: true, v6: false, second: false }],
  ["IPv4 without a default route (the gateway's)", {
    defaultRoute: false,
    v6: false,
    second: false,
  }],
  ["dual-stack", { defaultRoute: true, v6: true, second: false }],
  ["two IPv4 in one subnet and IPv6", { defaultRoute: true, v6: true, second: true }],
];

async function attach(host: TestNetns, ctr: TestNetns, setup: Setup): Promise<Result> {
  const veth = await vethAttachment(host, ctr, { subnet: 31 });
  const ip = (...args: string[]) => sh("ip", ["-n", ctr.name, ...args]);
  if (setup.defaultRoute) await ip("route", "add", "default", "via", veth.hostIP);
  await ip("route", "add", "10.77.31.0/24", "via", veth.hostIP, "mtu", "1400");
  const ips = [...veth.result.ips!];
  if (setup.v6) {
    await ip("addr", "add", "fd99:31::2/64", "dev", "eth0", "nodad");
    if (setup.defaultRoute) await ip("-6", "route", "add", "default", "via", "fd99:31::1");
    ips.push({ address: "fd99:31::2/64", gateway: "fd99:31::1", interface: 1 });
  }
  if (setup.second) {
    await ip("addr", "add", "10.99.31.9/24", "dev", "eth0");
    ips.push({ address: "10.99.31.9/24", gateway: veth.hostIP, interface: 1 });
  }
  return { ...veth.result, ips };
}

interface Snapshot {
  result: unknown;
  added: { rules: string[]; routes: string[] };
  deleted: { rules: string[]; routes: string[] };
}

async function runSide(version: string, setup: Setup, bin?: string): Promise<Snapshot> {
  let snap: Snapshot | undefined;
  await withNamespaces(1, async (host, ctr) => {
    const prev = await attach(host, ctr, setup);
    const conf = {
      cniVersion: version,
      name: "sbrnet",
      type: "sbr",
      prevResult: prevResultFor(prev, version),
    };
    const at = { netns: ctr.path };
    const add = assertSuccess(await sbr("ADD", host, at, conf, bin));
    const result = structuredClone(add.json!);
    const ifaces = result.interfaces as { name: string; mac?: string; sandbox?: string }[];
    ifaces[0]!.name = "HOSTVETH";
    ifaces[1]!.sandbox = "SANDBOX";
    for (const iface of ifaces) iface.mac = "MAC";
    // v1.1.1 prints an empty `dns` in 1.x results; cnikit leaves it out.
    delete result.dns;
    const added = { rules: await rules(ctr), routes: await allRoutes(ctr) };
    assertSuccess(await sbr("DEL", host, at, conf, bin));
    snap = { result, added, deleted: { rules: await rules(ctr), routes: await allRoutes(ctr) } };
  });
  return snap!;
}

for (const version of ["0.3.1", "1.0.0"]) {
  for (const [what, setup] of VARIANTS) {
    Deno.test({
      name: `sbr matches the reference: ${what} (cniVersion ${version})`,
      ignore: !canNetns || !haveReference,
      fn: async () => {
        const ours = await runSide(version, setup);
        const reference = await runSide(version, setup, REFERENCE_BIN);
        assertEquals(ours, reference);
      },
    });
  }
}
