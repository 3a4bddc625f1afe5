/**
 * host-device fixtures: devices made in a test's fake host (veth ends here,
 * dummies in the second kernel), the plugin run with a fake sysfs root
 * when asked, what a device looks like, and the differential against
 * Debian's host-device that both kinds of device go through.
 * @module
 */

import { assertEquals } from "./assert.ts";
import {
  assertSuccess,
  cniEnv,
  DIST_BIN,
  type PluginRun,
  REFERENCE_BIN,
  runApplet,
} from "./applet.ts";
import { hostLocal, leases } from "./ipam.ts";
import { addresses, link, type LinkJ } from "./kernel.ts";
import { sh, type TestNetns, withDataDirAndNamespaces } from "./netns.ts";

/** A link with the attributes host-device reads and restores. */
export type Device = LinkJ & { ifalias?: string };

/** One host-device call's attachment. */
export interface HdRun {
  netns: string;
  ifname?: string;
  containerId?: string;
  /** The fake sysfs root (`CNIKIT_SYSFS`). */
  sysfs?: string;
}

/**
 * Runs host-device (cnikit's, or the one in `bin`) inside the fake host,
 * its delegates found in dist/bin and then among the reference plugins (in
 * `bin` only, for the reference's).
 */
export function hostDevice(
  command: string,
  host: TestNetns,
  at: HdRun,
  conf: Record<string, unknown>,
  bin?: string,
): Promise<PluginRun> {
  return runApplet("host-device", {
    env: {
      ...cniEnv(command, { ...at, path: bin ?? `${DIST_BIN}:${REFERENCE_BIN}` }),
      ...(at.sysfs ? { CNIKIT_SYSFS: at.sysfs } : {}),
    },
    stdin: conf,
    host,
    ...(bin ? { bin } : {}),
  });
}

/** A host-device config of `version` with `extra` keys. */
export function hdConf(version: string, extra: Record<string, unknown>): Record<string, unknown> {
  return { cniVersion: version, name: "hdnet", type: "host-device", ...extra };
}

/** Makes a device called `name` in `host`, up. */
export type MakeDevice = (host: TestNetns, name: string) => Promise<Device>;

/**
 * A veth pair in `host`: `name` (the device to move) and its peer `peer`,
 * both up, so the device has a carrier wherever it goes.
 */
export async function hostVeth(host: TestNetns, name: string, peer = `${name}p`): Promise<Device> {
  const ip = (...args: string[]) => sh("ip", ["-n", host.name, ...args]);
  await ip("link", "add", name, "type", "veth", "peer", "name", peer);
  for (const l of [name, peer]) await ip("link", "set", l, "up");
  return (await link(host, name)) as Device;
}

/** A dummy link `name` in `host`, up (a kernel with dummy links only). */
export async function hostDummy(host: TestNetns, name: string): Promise<Device> {
  await sh("ip", ["-n", host.name, "link", "add", name, "type", "dummy"]);
  await sh("ip", ["-n", host.name, "link", "set", name, "up"]);
  return (await link(host, name)) as Device;
}

/** What a device looks like, as host-device must keep and give back. */
export function shape(l: Device | undefined) {
  return l && {
    ifname: l.ifname,
    kind: l.linkinfo?.info_kind,
    mac: l.address,
    up: l.flags.includes("UP"),
    alias: l.ifalias ?? "",
    addrs: addresses(l),
  };
}

/** One differential case: the config keys besides the selector, and what selects the device. */
export interface DiffVariant {
  keys: (dataDir: string) => Record<string, unknown>;
  select: (dev: Device) => Record<string, unknown>;
}

/** The differential's variants: L2, IPv4 and dual-stack IPAM, the device found by name or MAC. */
export const DIFF_VARIANTS: [string, DiffVariant][] = [
  ["L2, by name", { keys: () => ({}), select: (d) => ({ device: d.ifname }) }],
  [
    "IPv4 host-local with a route, by name",
    {
      keys: (dataDir) => ({
        ipam: hostLocal("v4", dataDir, { routes: [{ dst: "10.66.0.0/16" }] }),
      }),
      select: (d) => ({ device: d.ifname }),
    },
  ],
  [
    "dual-stack host-local, by hwaddr",
    {
      keys: (dataDir) => ({ ipam: hostLocal("dual", dataDir) }),
      select: (d) => ({ hwaddr: d.address }),
    },
  ],
];

interface Side {
  result: unknown;
  inside: ReturnType<typeof shape>;
  routes: string[];
  leases: string[];
  back: ReturnType<typeof shape>;
  leasesAfter: string[];
}

async function side(
  make: MakeDevice,
  variant: DiffVariant,
  version: string,
  bin?: string,
): Promise<Side> {
  let out: Side | undefined;
  await withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
    const dev = await make(host, "diffdev0");
    const conf = hdConf(version, { ...variant.keys(dataDir), ...variant.select(dev) });
    const at = { netns: ctr.path, ifname: "net1" };
    const add = assertSuccess(await hostDevice("ADD", host, at, conf, bin));
    const result = structuredClone(add.json!);
    for (const iface of (result.interfaces ?? []) as { mac?: string; sandbox?: string }[]) {
      if (iface.mac === dev.address) iface.mac = "MAC";
      if (iface.sandbox === ctr.path) iface.sandbox = "SANDBOX";
    }
    // v1.1.1 prints the config's (empty) `dns` in 1.x results; cnikit leaves it out.
    delete result.dns;
    const inside = shape((await link(ctr, "net1")) as Device);
    if (inside?.mac === dev.address) inside.mac = "MAC";
    const routes = (await ctr.ipJson<{ dst: string; gateway?: string }[]>(
      "route",
      "show",
      "dev",
      "net1",
    )).map((r) => `${r.dst} ${r.gateway ?? ""}`.trim());
    const held = await leases(dataDir);
    assertSuccess(await hostDevice("DEL", host, at, { ...conf, prevResult: add.json }, bin));
    const back = shape((await link(host, "diffdev0")) as Device);
    if (back?.mac === dev.address) back.mac = "MAC";
    out = { result, inside, routes, leases: held, back, leasesAfter: await leases(dataDir) };
  });
  return out!;
}

/**
 * Runs `variant` through cnikit's host-device and Debian's on a device
 * `make` makes, and compares results, the device in the container, its
 * routes, the leases, and the device back in the host. The one difference
 * by design: v1.1.1 leaves the alias on the device it gives back (the
 * newest reference and cnikit clear it).
 */
export async function assertLikeReference(
  make: MakeDevice,
  variant: DiffVariant,
  version: string,
): Promise<void> {
  const ours = await side(make, variant, version);
  const reference = await side(make, variant, version, REFERENCE_BIN);
  assertEquals(reference.back?.alias, "diffdev0");
  assertEquals(ours.back?.alias, "");
  assertEquals(
    { ...ours, back: { ...ours.back, alias: "" } },
    { ...reference, back: { ...reference.back, alias: "" } },
  );
}
