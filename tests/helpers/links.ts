/**
 * Fixtures for the interface plugins (macvlan, ipvlan, vlan, dummy, tap):
 * configs, a master link in the fake host, plugin runners, a check of a
 * whole attachment against the container's kernel state, and a differential
 * snapshot against the reference plugins.
 * @module
 */

import type { Result } from "../../lib/cni/spec/schemas.ts";
import { parseResult, toCurrentResult } from "../../lib/cni/spec/convert.ts";
import { versionAtLeast } from "../../lib/cni/spec/version.ts";
import { ALL_TEST_VERSIONS, type HostRunner, hostRunner, withPrev } from "./applet.ts";
import { assert, assertEquals } from "./assert.ts";
import { type Families, familiesOf, leases } from "./ipam.ts";
import { addresses, type LinkJ, links, routes, sysctl } from "./kernel.ts";
import { sh, type TestNetns, withDataDirAndNamespaces } from "./netns.ts";

/** Runs each interface plugin (cnikit's, or the one in `bin`) inside the fake host. */
export const macvlan: HostRunner = hostRunner("macvlan");
export const ipvlan: HostRunner = hostRunner("ipvlan");
export const vlan: HostRunner = hostRunner("vlan");
export const dummy: HostRunner = hostRunner("dummy");
export const tap: HostRunner = hostRunner("tap");

/**
 * The conformance cases: every spec version with IPv4, and dual-stack once
 * (the family does not change a result's shape).
 */
export const VERSIONS_AND_FAMILIES: readonly (readonly [string, Families])[] = [
  ...ALL_TEST_VERSIONS.map((v) => [v, "v4"] as const),
  ["1.1.0", "dual"],
];

/** What {@link everyVersion} runs and expects. */
export interface Conformance {
  run: HostRunner;
  /** The config for one case, with host-local storing in `dataDir`. */
  conf: (version: string, families: Families, dataDir: string) => Record<string, unknown>;
  /** Prepares the fake host and the container once (a master). */
  setup?: (host: TestNetns, ctr: TestNetns) => Promise<void>;
  /** What the container link must look like (results from 0.3.0 name it). */
  expect: Omit<LinkExpectation, "ctr">;
  /** Further checks right after each ADD. */
  afterAdd?: (host: TestNetns, ctr: TestNetns, result: Result) => Promise<void>;
}

/**
 * ADD, CHECK (from 0.4.0) and DEL of every {@link VERSIONS_AND_FAMILIES}
 * case in one fake host and container, each checked against the kernel:
 * the printed version, the IPs, the link (from 0.3.0), and after DEL no link
 * and no lease; then one more DEL, which must succeed too. One test for all
 * versions, since every plugin call costs seconds in the second kernel.
 */
export async function everyVersion(c: Conformance): Promise<void> {
  await withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
    await c.setup?.(host, ctr);
    const before = await linkNames(ctr);
    const at = { netns: ctr.path };
    let last: Record<string, unknown> | undefined;
    for (const [version, families] of VERSIONS_AND_FAMILIES) {
      const what = `${version} ${families}`;
      const conf = last = c.conf(version, families, dataDir);
      const add = await c.run("ADD", host, at, conf);
      assertEquals(add.code, 0, `${what} ADD: ${add.stdout}${add.stderr}`);
      assertEquals(add.json!.cniVersion, version, what);
      const result = toCurrentResult(parseResult(add.json, version));
      assertEquals(result.ips?.length ?? 0, familiesOf(families).length, what);
      if (versionAtLeast(version, "0.3.0")) await verifyLink(result, { ...c.expect, ctr });
      await c.afterAdd?.(host, ctr, result);
      if (versionAtLeast(version, "0.4.0")) {
        const check = await c.run("CHECK", host, at, withPrev(conf, add));
        assertEquals(check.code, 0, `${what} CHECK: ${check.stdout}`);
      }
      const del = await c.run("DEL", host, at, conf);
      assertEquals(del.code, 0, `${what} DEL: ${del.stdout}`);
      assertEquals(await linkNames(ctr), before, what);
      assertEquals(await leases(dataDir), [], what);
    }
    const again = await c.run("DEL", host, at, last!);
    assertEquals(again.code, 0, `DEL again: ${again.stdout}`);
  });
}

/** A config of plugin `type` named `<type>net`. */
export function linkConf(
  type: string,
  version: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return { cniVersion: version, name: `${type}net`, type, ...extra };
}

/**
 * Makes `name` a master in `ns`: a veth up, whose peer `peerName` is up in
 * `peer` (a namespace that plays the segment), or in `ns` too.
 */
export async function makeMaster(
  ns: TestNetns,
  name = "ckm0",
  peer?: TestNetns,
  peerName = "ckm0p",
  mtu = 1500,
): Promise<string> {
  await sh("ip", [
    "-n",
    ns.name,
    "link",
    "add",
    name,
    "mtu",
    String(mtu),
    "type",
    "veth",
    "peer",
    "name",
    peerName,
    "mtu",
    String(mtu),
    ...(peer ? ["netns", peer.name] : []),
  ]);
  await sh("ip", ["-n", ns.name, "link", "set", name, "up"]);
  await sh("ip", ["-n", (peer ?? ns).name, "link", "set", peerName, "up"]);
  return name;
}

/** What {@link verifyLink} expects beyond the result. */
export interface LinkExpectation {
  ctr: TestNetns;
  /** `info_kind` of the container link. */
  kind: string;
  ifname?: string;
  /** Expected `info_data` entries (mode, VLAN id). */
  data?: Record<string, unknown>;
  mtu?: number;
  /** Addresses (without link-local) in `addresses()` form; from the result when absent. */
  addrs?: string[];
  /** Routes of the container that must be there (`routes()` form). */
  routes?: string[];
}

/**
 * Checks an ADD's result against the container: one interface named
 * CNI_IFNAME in the container's netns whose MAC is the kernel's, of the
 * expected kind and data, up, with exactly the result's addresses and the
 * expected routes. Returns the link.
 */
export async function verifyLink(result: Result, want: LinkExpectation): Promise<LinkJ> {
  const ifname = want.ifname ?? "eth0";
  assertEquals(result.interfaces?.length, 1, JSON.stringify(result));
  const iface = result.interfaces![0]!;
  assertEquals(iface.name, ifname);
  assertEquals(iface.sandbox, want.ctr.path);
  const all = await links(want.ctr);
  const link = all.find((l) => l.ifname === ifname);
  assert(link, `${ifname} in the container: ${all.map((l) => l.ifname)}`);
  // The temporary name is gone: the container holds exactly the new link.
  assertEquals(all.filter((l) => /^veth[0-9a-f]{8}$/.test(l.ifname)), []);
  assertEquals(iface.mac, link.address);
  assertEquals(link.linkinfo?.info_kind, want.kind);
  for (const [key, value] of Object.entries(want.data ?? {})) {
    assertEquals(link.linkinfo?.info_data?.[key], value, `${want.kind} ${key}`);
  }
  assert(link.flags.includes("UP"), `${ifname} is up`);
  if (want.mtu) assertEquals(link.mtu, want.mtu);
  const expected = want.addrs ??
    (result.ips ?? []).map((ip) => ip.address);
  const have = addresses(link).map((a) => a.split(" ")[0]);
  assertEquals(have.sort(), [...expected].sort());
  for (const ip of result.ips ?? []) assertEquals(ip.interface, 0);
  const table = await routes(want.ctr);
  for (const r of want.routes ?? []) assert(table.includes(r), `route ${r} in ${table}`);
  return link;
}

/** The links of `ns` besides lo, by name. */
export async function linkNames(ns: TestNetns): Promise<string[]> {
  return (await links(ns)).map((l) => l.ifname).sort();
}

/** What a differential test compares of one side. */
export interface LinkSnapshot {
  result: unknown;
  container: Record<string, unknown>[];
  containerRoutes: string[];
  sysctls: (string | undefined)[];
  leases: number;
}

/** Replaces every MAC by a label in order of appearance, so equal MACs stay equal. */
function labelMacs(text: string): string {
  const seen = new Map<string, string>();
  return text.replace(/\b(?:[0-9a-f]{2}:){5}[0-9a-f]{2}\b/g, (m) => {
    if (!seen.has(m)) seen.set(m, `<mac${seen.size + 1}>`);
    return seen.get(m)!;
  });
}

/** The `info_data` keys worth comparing per link kind. */
const DATA_KEYS: Record<string, string[]> = {
  macvlan: ["mode", "bcqueuelen"],
  ipvlan: ["mode"],
  vlan: ["id", "protocol"],
};

/**
 * Runs ADD, CHECK (from 0.4.0), DEL and DEL of `plugin` (cnikit's, or the
 * one in `bin`) with `conf` in a fresh fake host and container that `setup`
 * prepares (a master), with host-local's dataDir filled in; returns the
 * state after ADD, labelled, and checks that DEL left nothing.
 */
export async function linkSnapshot(
  plugin: HostRunner,
  conf: Record<string, unknown>,
  setup: (host: TestNetns, ctr: TestNetns) => Promise<void>,
  bin?: string,
): Promise<LinkSnapshot> {
  let snap: LinkSnapshot | undefined;
  const who = bin ?? "cnikit";
  await withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
    await setup(host, ctr);
    const c = conf.ipam ? { ...conf, ipam: { ...(conf.ipam as object), dataDir } } : conf;
    const at = { netns: ctr.path };
    const before = await linkNames(ctr);
    const add = await plugin("ADD", host, at, c, bin);
    assertEquals(add.code, 0, `${who} ADD: ${add.stdout}${add.stderr}`);
    const ctrLinks = (await links(ctr)).filter((l) => !before.includes(l.ifname));
    const json = structuredClone(add.json!) as Record<string, unknown>;
    // libcni 1.x prints `"dns": {}`; cnikit leaves an empty dns out.
    if (json.dns && Object.keys(json.dns).length === 0) delete json.dns;
    snap = JSON.parse(labelMacs(JSON.stringify({
      result: JSON.parse(JSON.stringify(json).replaceAll(ctr.path, "<sandbox>")),
      container: ctrLinks.map((l) => ({
        name: l.ifname,
        mac: l.address,
        kind: l.linkinfo?.info_kind,
        data: Object.fromEntries(
          (DATA_KEYS[l.linkinfo?.info_kind ?? ""] ?? []).map((
            k,
          ) => [k, l.linkinfo?.info_data?.[k]]),
        ),
        up: l.flags.includes("UP"),
        mtu: l.mtu,
        addresses: addresses(l),
      })),
      containerRoutes: await routes(ctr),
      sysctls: await Promise.all(
        ctrLinks.flatMap((l) => [
          sysctl(ctr, `net/ipv4/conf/${l.ifname}/arp_notify`),
          sysctl(ctr, `net/ipv6/conf/${l.ifname}/ndisc_notify`),
        ]),
      ),
      leases: (await leases(dataDir)).length,
    })));
    if (versionAtLeast(String(conf.cniVersion), "0.4.0")) {
      const check = await plugin("CHECK", host, at, withPrev(c, add), bin);
      assertEquals(check.code, 0, `${who} CHECK: ${check.stdout}`);
    }
    for (let i = 0; i < 2; i++) {
      const del = await plugin("DEL", host, at, c, bin);
      assertEquals(del.code, 0, `${who} DEL: ${del.stdout}`);
    }
    assertEquals(await linkNames(ctr), before);
    assertEquals(await leases(dataDir), []);
  });
  return snap!;
}
