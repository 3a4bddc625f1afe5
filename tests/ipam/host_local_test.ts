import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import {
  ALL_TEST_VERSIONS,
  cniEnv,
  haveReference,
  type PluginRun,
  REFERENCE_BIN,
  runApplet,
} from "../helpers/applet.ts";
import { leases } from "../helpers/ipam.ts";
import { withTempDir } from "../helpers/tempdir.ts";
import {
  canonicalizeRange,
  loadHostLocalConfig,
  parseResolvConf,
  type RangeSet,
} from "../../ipam/host_local/config.ts";
import { RangeIter } from "../../ipam/host_local/allocator.ts";
import { Store } from "../../ipam/host_local/store.ts";
import { formatIP, parseCIDR, parseIP } from "../../lib/cni/ipnet.ts";
import { CniError } from "../../lib/cni/errors.ts";

// IPAM never enters the namespace; the path only has to be set.
const NETNS = "/run/netns/cnikit-ipam-unused";

/** A host-local config on `dataDir`; `ipam` keys override the defaults. */
function conf(
  dataDir: string,
  ipam: Record<string, unknown>,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name: "hl-net",
    type: "bridge",
    ...extra,
    ipam: { type: "host-local", dataDir, ...ipam },
  };
}

interface Call {
  containerId?: string;
  ifname?: string;
  args?: string;
}

function hostLocal(command: string, config: unknown, call: Call = {}): Promise<PluginRun> {
  return runApplet("host-local", {
    env: cniEnv(command, { netns: NETNS, ...call }),
    stdin: config as object,
  });
}

function ipsOf(run: PluginRun): string[] {
  assertEquals(run.code, 0, run.stdout + run.stderr);
  return (run.json!.ips as { address: string }[]).map((ip) => ip.address);
}

function configError(config: Record<string, unknown>, cniArgs = ""): CniError {
  try {
    loadHostLocalConfig(config, cniArgs);
  } catch (e) {
    assert(e instanceof CniError, String(e));
    return e;
  }
  throw new Error("expected the config to be refused");
}

// ---- configuration: defaults and validation ----

Deno.test("host-local range defaults: gateway and start network+1, end broadcast-1 / last", () => {
  const v4 = canonicalizeRange({ subnet: parseCIDR("10.1.2.0/24")! });
  assertEquals([v4.gateway, v4.start, v4.end].map(formatIP), [
    "10.1.2.1",
    "10.1.2.1",
    "10.1.2.254",
  ]);
  const v6 = canonicalizeRange({ subnet: parseCIDR("2001:db8::/64")! });
  assertEquals(
    [v6.gateway, v6.start, v6.end].map(formatIP),
    ["2001:db8::1", "2001:db8::1", "2001:db8::ffff:ffff:ffff:ffff"],
  );
  const given = canonicalizeRange({
    subnet: parseCIDR("10.1.2.0/24")!,
    start: parseIP("10.1.2.10")!,
    end: parseIP("10.1.2.20")!,
    gateway: parseIP("10.1.2.254")!,
  });
  assertEquals(
    [given.gateway, given.start, given.end].map(formatIP),
    ["10.1.2.254", "10.1.2.10", "10.1.2.20"],
  );
});

Deno.test("host-local config: legacy range, ranges and runtime ipRanges in the reference's order", () => {
  const c = loadHostLocalConfig(
    conf("/d", {
      subnet: "10.0.0.0/24",
      ranges: [[{ subnet: "10.1.0.0/24" }], [{ subnet: "2001:db8::/64" }]],
    }, { runtimeConfig: { ipRanges: [[{ subnet: "10.2.0.0/24" }]] } }),
    "",
  );
  assertEquals(c.ranges.map((s) => s.map((r) => `${formatIP(r.subnet.ip)}/${r.subnet.prefix}`)), [
    ["10.2.0.0/24"],
    ["10.0.0.0/24"],
    ["10.1.0.0/24"],
    ["2001:db8::/64"],
  ]);
  assertEquals(c.dataDir, "/d");
  assertEquals(c.name, "hl-net");
});

Deno.test("host-local config: dataDir defaults, keys match case-insensitively, null is absent", () => {
  const c = loadHostLocalConfig({
    cniVersion: "1.0.0",
    name: "n",
    IPAM: { Subnet: "10.0.0.0/24", RANGESTART: "10.0.0.50", dataDir: null, Routes: null },
  }, "");
  assertEquals(c.dataDir, "/var/lib/cni/networks");
  assertEquals(formatIP(c.ranges[0]![0]!.start), "10.0.0.50");
  assertEquals(c.routes, []);
});

Deno.test("host-local config: requested IPs from CNI_ARGS, args.cni.ips, runtimeConfig.ips in order", () => {
  const c = loadHostLocalConfig(
    conf("/d", { subnet: "10.0.0.0/16" }, {
      args: { cni: { ips: ["10.0.0.7/16", "10.0.0.8"] } },
      runtimeConfig: { ips: ["10.0.0.9"] },
    }),
    "IgnoreUnknown=1;K8S_POD_NAME=x;IP=10.0.0.6",
  );
  assertEquals(c.requestedIPs.map(formatIP), ["10.0.0.6", "10.0.0.7", "10.0.0.8", "10.0.0.9"]);
});

Deno.test("host-local config: validation messages match the reference", () => {
  const cases: [Record<string, unknown>, string][] = [
    [{}, "no IP ranges specified"],
    [{ ranges: [[]] }, "invalid range set 0: empty range set"],
    [{ ranges: [[{ gateway: "10.0.0.1" }]] }, "invalid range set 0: IP <nil> not v4 nor v6"],
    [
      { subnet: "10.0.0.0/31" },
      "invalid range set 0: Network 10.0.0.0/31 too small to allocate from",
    ],
    [
      { subnet: "2001:db8::/127" },
      "invalid range set 0: Network 2001:db8::/127 too small to allocate from",
    ],
    [
      { subnet: "10.0.0.5/24" },
      "invalid range set 0: Network has host bits set. For a subnet mask of length 24 the network address is 10.0.0.0",
    ],
    [
      { subnet: "10.0.0.0/24", rangeStart: "10.0.1.5" },
      "invalid range set 0: RangeStart 10.0.1.5 not in network 10.0.0.0/24",
    ],
    [
      { subnet: "10.0.0.0/24", rangeEnd: "10.0.0.0" },
      "invalid range set 0: RangeEnd 10.0.0.0 not in network 10.0.0.0/24",
    ],
    [
      { subnet: "10.0.0.0/24", rangeStart: "10.0.0.50", rangeEnd: "10.0.0.40" },
      "invalid range set 0: RangeStart 10.0.0.50 not in network 10.0.0.0/24",
    ],
    [
      { subnet: "10.0.0.0/24", rangeStart: "2001:db8::5" },
      "invalid range set 0: RangeStart 2001:db8::5 not in network 10.0.0.0/24",
    ],
    [
      { ranges: [[{ subnet: "10.0.0.0/24" }, { subnet: "2001:db8::/64" }]] },
      "invalid range set 0: mixed address families",
    ],
    [
      { ranges: [[{ subnet: "10.0.0.0/24" }, { subnet: "10.0.0.0/25" }]] },
      "invalid range set 0: subnets 10.0.0.1-10.0.0.254 and 10.0.0.1-10.0.0.126 overlap",
    ],
    [
      { ranges: [[{ subnet: "10.0.0.0/24" }], [{ subnet: "10.0.0.128/25" }]] },
      "range set 0 overlaps with 1",
    ],
    [{ subnet: "10.0.0.0/33" }, "invalid CIDR address: 10.0.0.0/33"],
    [{ subnet: "10.0.0.0/24", gateway: "10.0.0.300" }, "invalid IP address: 10.0.0.300"],
  ];
  for (const [ipam, msg] of cases) {
    const e = configError(conf("/d", ipam));
    assertEquals([e.code, e.message], [7, msg], JSON.stringify(ipam));
  }
  assertEquals(
    configError({ cniVersion: "1.0.0", name: "n" }).message,
    "IPAM config missing 'ipam' key",
  );
  const old = configError(
    conf("/d", { ranges: [[{ subnet: "10.0.0.0/24" }], [{ subnet: "10.1.0.0/24" }]] }, {
      cniVersion: "0.2.0",
    }),
  );
  assertEquals(old.message, "CNI version 0.2.0 does not support more than 1 address per family");
  const typed = configError(conf("/d", { ranges: [[{ subnet: 5 }]] }));
  assertEquals(typed.code, 6);
  assertMatch(typed.message, /ipam\.ranges\.0\.0\.subnet: expected string/);
});

Deno.test("host-local config: bad CNI_ARGS are code 4", () => {
  const c = conf("/d", { subnet: "10.0.0.0/24" });
  const bad = configError(c, "IP=10.0.0.300");
  assertEquals(
    [bad.code, bad.message],
    [4, 'ARGS: error parsing value of pair "IP=10.0.0.300": invalid IP address 10.0.0.300'],
  );
  assertEquals(configError(c, "FOO=bar").code, 4);
  assertEquals(loadHostLocalConfig(c, "IP=").requestedIPs, []);
});

Deno.test("host-local resolv.conf parsing", () => {
  const dns = parseResolvConf(
    "# comment\n; other\nnameserver 192.0.2.1\nnameserver   2001:db8::53 \ndomain example.com\n" +
      "search a.example b.example\nsearch c.example\noptions ndots:2 edns0\nnameserver\nsortlist x\r\n",
  );
  assertEquals(dns, {
    nameservers: ["192.0.2.1", "2001:db8::53"],
    domain: "example.com",
    search: ["a.example", "b.example", "c.example"],
    options: ["ndots:2", "edns0"],
  });
});

// ---- allocation order ----

function rangeSet(...ranges: [string, string?, string?, string?][]): RangeSet {
  return ranges.map(([subnet, start, end, gateway]) =>
    canonicalizeRange({
      subnet: parseCIDR(subnet)!,
      ...(start ? { start: parseIP(start)! } : {}),
      ...(end ? { end: parseIP(end)! } : {}),
      ...(gateway ? { gateway: parseIP(gateway)! } : {}),
    })
  );
}

function walk(set: RangeSet, last: string | null, limit = 1000): string[] {
  const iter = new RangeIter(set, last ? parseIP(last) : null);
  const out: string[] = [];
  for (let c = iter.next(); c && out.length < limit; c = iter.next()) out.push(formatIP(c.ip));
  return out;
}

Deno.test("host-local iteration: from the start, gateway skipped, each address once", () => {
  assertEquals(walk(rangeSet(["10.0.0.0/29"]), null), [
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.4",
    "10.0.0.5",
    "10.0.0.6",
  ]);
  // A gateway inside the range is skipped where it falls.
  assertEquals(walk(rangeSet(["10.0.0.0/29", undefined, undefined, "10.0.0.4"]), null), [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.5",
    "10.0.0.6",
  ]);
});

Deno.test("host-local iteration: round-robin after the last reserved address, wrapping", () => {
  assertEquals(walk(rangeSet(["10.0.0.0/29"]), "10.0.0.4"), [
    "10.0.0.5",
    "10.0.0.6",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.4",
  ]);
  // Across the ranges of a set, and back to the first.
  assertEquals(
    walk(
      rangeSet(["10.0.0.0/24", "10.0.0.10", "10.0.0.11"], ["10.0.1.0/24", "10.0.1.5", "10.0.1.6"]),
      "10.0.0.11",
    ),
    ["10.0.1.5", "10.0.1.6", "10.0.0.10", "10.0.0.11"],
  );
  // A last address outside the set restarts at the first range's start.
  assertEquals(walk(rangeSet(["10.0.0.0/29"]), "192.168.0.1"), [
    "10.0.0.2",
    "10.0.0.3",
    "10.0.0.4",
    "10.0.0.5",
    "10.0.0.6",
  ]);
  // A single-address range that is its gateway yields nothing, and ends.
  assertEquals(walk(rangeSet(["10.0.0.0/29", "10.0.0.1", "10.0.0.1"]), null), []);
});

Deno.test("host-local iteration: IPv6 runs to the last address of the subnet", () => {
  const set = rangeSet(["2001:db8::/126"]);
  assertEquals(walk(set, null), ["2001:db8::2", "2001:db8::3"]);
});

// ---- the store, in-process ----

Deno.test("host-local store: reserve writes <cid>\\r\\n<ifname> with mode 0600 exclusively", async () => {
  await withTempDir((dir) => {
    const store = Store.open(dir, "hl-net");
    try {
      const ip = parseIP("10.0.0.2")!;
      assertEquals(store.reserve("c1", "eth0", ip, 0), true);
      assertEquals(store.reserve("c2", "eth0", ip, 0), false);
      assertEquals(Deno.readTextFileSync(`${dir}/hl-net/10.0.0.2`), "c1\r\neth0");
      assertEquals(Deno.statSync(`${dir}/hl-net/10.0.0.2`).mode! & 0o777, 0o600);
      assertEquals(Deno.readTextFileSync(`${dir}/hl-net/last_reserved_ip.0`), "10.0.0.2");
      assertEquals(formatIP(store.lastReservedIP(0)!), "10.0.0.2");
      assertEquals(store.lastReservedIP(1), null);
      assertEquals(Deno.statSync(`${dir}/hl-net/lock`).isFile, true);
      assertEquals(Deno.statSync(`${dir}/hl-net`).mode! & 0o777, 0o755);
    } finally {
      store.close();
    }
    return Promise.resolve();
  });
});

// ---- the applet as a process ----

for (const version of ALL_TEST_VERSIONS) {
  Deno.test(`host-local ADD/CHECK/DEL/DEL (cniVersion ${version})`, async () => {
    await withTempDir(async (dir) => {
      await Deno.writeTextFile(`${dir}/resolv.conf`, "nameserver 192.0.2.3\nsearch example\n");
      const config = conf(dir, {
        subnet: "10.10.0.0/24",
        routes: [{ dst: "0.0.0.0/0" }, { dst: "192.168.0.0/16", gw: "10.10.0.254" }],
        resolvConf: `${dir}/resolv.conf`,
      }, { cniVersion: version });
      const add = await hostLocal("ADD", config);
      assertEquals(add.code, 0, add.stdout);
      const dns = { nameservers: ["192.0.2.3"], search: ["example"] };
      if (version < "0.3.0") {
        assertEquals(add.json, {
          cniVersion: version,
          ip4: {
            ip: "10.10.0.2/24",
            gateway: "10.10.0.1",
            routes: [{ dst: "0.0.0.0/0" }, { dst: "192.168.0.0/16", gw: "10.10.0.254" }],
          },
          dns,
        });
      } else {
        assertEquals(add.json, {
          cniVersion: version,
          ips: [{
            ...(version < "1.0.0" ? { version: "4" } : {}),
            address: "10.10.0.2/24",
            gateway: "10.10.0.1",
          }],
          routes: [{ dst: "0.0.0.0/0" }, { dst: "192.168.0.0/16", gw: "10.10.0.254" }],
          dns,
        });
      }
      assertEquals(await Deno.readTextFile(`${dir}/hl-net/10.10.0.2`), "ctr1\r\neth0");
      if (version >= "0.4.0") {
        const check = await hostLocal("CHECK", { ...config, prevResult: add.json });
        assertEquals(check.code, 0, check.stdout);
      }
      for (let i = 0; i < 2; i++) {
        const del = await hostLocal("DEL", config);
        assertEquals(del.code, 0, del.stdout);
        assertEquals(await leases(dir, "hl-net"), []);
      }
      if (version >= "0.4.0") {
        const check = await hostLocal("CHECK", { ...config, prevResult: add.json });
        assertEquals(check.code, 1);
        assertEquals(check.json!.msg, "host-local: Failed to find address added by container ctr1");
      }
    });
  });
}

Deno.test("host-local dual stack: one address per range set, v6 range end is the last address", async () => {
  await withTempDir(async (dir) => {
    const config = conf(dir, {
      ranges: [
        [{ subnet: "10.20.0.0/24", rangeStart: "10.20.0.100" }],
        [{ subnet: "2001:db8:1::/64" }],
      ],
    });
    const add = await hostLocal("ADD", config);
    assertEquals(add.json!.ips, [
      { address: "10.20.0.100/24", gateway: "10.20.0.1" },
      { address: "2001:db8:1::2/64", gateway: "2001:db8:1::1" },
    ]);
    assertEquals(await leases(dir, "hl-net"), ["10.20.0.100", "2001:db8:1::2"]);
    assertEquals(await Deno.readTextFile(`${dir}/hl-net/last_reserved_ip.1`), "2001:db8:1::2");
    assertEquals((await hostLocal("DEL", config)).code, 0);
    assertEquals(await leases(dir, "hl-net"), []);
  });
});

Deno.test("host-local round-robin, wrap-around, exhaustion and release", async () => {
  await withTempDir(async (dir) => {
    const config = conf(dir, {
      subnet: "10.30.0.0/24",
      rangeStart: "10.30.0.2",
      rangeEnd: "10.30.0.4",
    });
    const add = (id: string) => hostLocal("ADD", config, { containerId: id });
    assertEquals(ipsOf(await add("c1")), ["10.30.0.2/24"]);
    assertEquals(ipsOf(await add("c2")), ["10.30.0.3/24"]);
    assertEquals((await hostLocal("DEL", config, { containerId: "c1" })).code, 0);
    // Round-robin: the freed .2 waits until the range wraps.
    assertEquals(ipsOf(await add("c3")), ["10.30.0.4/24"]);
    assertEquals(ipsOf(await add("c4")), ["10.30.0.2/24"]);
    const full = await add("c5");
    assertEquals(full.code, 1);
    assertEquals(full.json!.code, 11);
    assertEquals(
      full.json!.msg,
      "failed to allocate for range 0: no IP addresses available in range set: 10.30.0.2-10.30.0.4",
    );
    assertEquals((await hostLocal("DEL", config, { containerId: "c3" })).code, 0);
    assertEquals(ipsOf(await add("c5")), ["10.30.0.4/24"]);
  });
});

Deno.test("host-local: a second ADD for one attachment is refused; other attachments proceed", async () => {
  await withTempDir(async (dir) => {
    const config = conf(dir, { subnet: "10.40.0.0/24" });
    assertEquals(ipsOf(await hostLocal("ADD", config)), ["10.40.0.2/24"]);
    const again = await hostLocal("ADD", config);
    assertEquals([again.code, again.json!.code], [1, 4]);
    assertEquals(
      again.json!.msg,
      "failed to allocate for range 0: 10.40.0.2 has been allocated to ctr1, duplicate allocation is not allowed",
    );
    assertEquals(ipsOf(await hostLocal("ADD", config, { ifname: "eth1" })), ["10.40.0.3/24"]);
    assertEquals(ipsOf(await hostLocal("ADD", config, { containerId: "c2" })), ["10.40.0.4/24"]);
    // DEL of one interface leaves the container's other interface alone.
    assertEquals((await hostLocal("DEL", config, { ifname: "eth0" })).code, 0);
    assertEquals(await leases(dir, "hl-net"), ["10.40.0.3", "10.40.0.4"]);
    assertEquals(await Deno.readTextFile(`${dir}/hl-net/10.40.0.3`), "ctr1\r\neth1");
  });
});

Deno.test("host-local requested addresses: CNI_ARGS, args.cni.ips, runtimeConfig.ips", async () => {
  await withTempDir(async (dir) => {
    const base = {
      ranges: [[{ subnet: "10.50.0.0/24" }], [{ subnet: "2001:db8:5::/64" }]],
    };
    const viaArgs = await hostLocal("ADD", conf(dir, base), {
      containerId: "a",
      args: "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.50.0.77",
    });
    assertEquals(ipsOf(viaArgs), ["10.50.0.77/24", "2001:db8:5::2/64"]);
    const viaConf = await hostLocal(
      "ADD",
      conf(dir, base, { args: { cni: { ips: ["2001:db8:5::99", "10.50.0.88/24"] } } }),
      { containerId: "b" },
    );
    assertEquals(ipsOf(viaConf), ["10.50.0.88/24", "2001:db8:5::99/64"]);
    const viaRuntime = await hostLocal(
      "ADD",
      conf(dir, base, { runtimeConfig: { ips: ["10.50.0.99"] } }),
      { containerId: "c" },
    );
    assertEquals(ipsOf(viaRuntime), ["10.50.0.99/24", "2001:db8:5::9a/64"]);

    const taken = await hostLocal("ADD", conf(dir, base), {
      containerId: "d",
      args: "IP=10.50.0.77",
    });
    assertEquals([taken.code, taken.json!.code], [1, 11]);
    assertEquals(
      taken.json!.msg,
      "failed to allocate for range 0: requested IP address 10.50.0.77 is not available in range set 10.50.0.1-10.50.0.254",
    );
    const outside = await hostLocal("ADD", conf(dir, base), {
      containerId: "d",
      args: "IP=10.99.0.1",
    });
    assertEquals(outside.json!.msg, "failed to allocate all requested IPs: 10.99.0.1");
    const gateway = await hostLocal("ADD", conf(dir, base), {
      containerId: "d",
      args: "IP=10.50.0.1",
    });
    assertEquals(
      gateway.json!.msg,
      "failed to allocate for range 0: requested ip 10.50.0.1 is subnet's gateway",
    );
    // Every failure above rolled back what it had reserved.
    assertEquals((await leases(dir, "hl-net")).length, 6);
  });
});

Deno.test("host-local: a failure in a later range set releases the earlier ones", async () => {
  await withTempDir(async (dir) => {
    const base = { ranges: [[{ subnet: "10.60.0.0/24" }], [{ subnet: "10.61.0.0/24" }]] };
    assertEquals(
      ipsOf(await hostLocal("ADD", conf(dir, base), { containerId: "a", args: "IP=10.61.0.5" })),
      ["10.60.0.2/24", "10.61.0.5/24"],
    );
    const clash = await hostLocal("ADD", conf(dir, base), {
      containerId: "b",
      args: "IP=10.61.0.5",
    });
    assertEquals(clash.code, 1);
    assertMatch(clash.json!.msg as string, /^failed to allocate for range 1: requested IP/);
    assertEquals(await leases(dir, "hl-net"), ["10.60.0.2", "10.61.0.5"]);
  });
});

Deno.test("host-local DEL: legacy and padded lease files, unknown IDs, missing store", async () => {
  await withTempDir(async (dir) => {
    const config = conf(dir, { subnet: "10.70.0.0/24" });
    assertEquals(ipsOf(await hostLocal("ADD", config, { containerId: "seed" })), ["10.70.0.2/24"]);
    await Deno.writeTextFile(`${dir}/hl-net/10.70.0.50`, "legacy");
    await Deno.writeTextFile(`${dir}/hl-net/10.70.0.51`, "  padded\r\neth0 \n");
    const check = await hostLocal("CHECK", { ...config, prevResult: { cniVersion: "1.0.0" } }, {
      containerId: "legacy",
    });
    assertEquals(check.code, 0, check.stdout);
    assertEquals((await hostLocal("DEL", config, { containerId: "legacy" })).code, 0);
    assertEquals((await hostLocal("DEL", config, { containerId: "padded" })).code, 0);
    assertEquals((await hostLocal("DEL", config, { containerId: "nobody" })).code, 0);
    assertEquals(await leases(dir, "hl-net"), ["10.70.0.2"]);

    const elsewhere = conf(`${dir}/never-created`, { subnet: "10.70.0.0/24" });
    assertEquals((await hostLocal("DEL", elsewhere)).code, 0);
    assertEquals(await Deno.stat(`${dir}/never-created`).catch(() => null), null);
    // DEL still needs a valid config, as in the reference.
    const invalid = await hostLocal("DEL", conf(dir, {}));
    assertEquals([invalid.code, invalid.json!.code, invalid.json!.msg], [
      1,
      7,
      "no IP ranges specified",
    ]);
  });
});

Deno.test("host-local GC releases the leases of attachments not in the valid list", async () => {
  await withTempDir(async (dir) => {
    const config = conf(dir, { subnet: "10.80.0.0/24" }, { cniVersion: "1.1.0" });
    for (const [containerId, ifname] of [["c1", "eth0"], ["c2", "eth0"], ["c1", "eth1"]]) {
      assertEquals((await hostLocal("ADD", config, { containerId, ifname })).code, 0);
    }
    await Deno.writeTextFile(`${dir}/hl-net/10.80.0.100`, "c3"); // legacy, container only
    await Deno.writeTextFile(`${dir}/hl-net/10.80.0.101`, "c4");
    const gc = (body: Record<string, unknown>) =>
      runApplet("host-local", {
        env: { CNI_COMMAND: "GC", CNI_PATH: "/nonexistent" },
        stdin: { ...config, ...body },
      });
    // Without a list nothing is known to be stale.
    assertEquals((await gc({})).code, 0);
    assertEquals((await leases(dir, "hl-net")).length, 5);
    const run = await gc({
      "cni.dev/valid-attachments": [
        { containerID: "c1", ifname: "eth0" },
        { containerID: "c3", ifname: "eth0" },
      ],
    });
    assertEquals(run.code, 0, run.stdout);
    assertEquals(await leases(dir, "hl-net"), ["10.80.0.100", "10.80.0.2"]);
    assertEquals(await Deno.readTextFile(`${dir}/hl-net/10.80.0.2`), "c1\r\neth0");
    // lock and round-robin state survive.
    assertEquals(await Deno.readTextFile(`${dir}/hl-net/last_reserved_ip.0`), "10.80.0.4");
    assert((await Deno.stat(`${dir}/hl-net/lock`)).isFile);
    // The next ADD continues the round-robin.
    assertEquals(ipsOf(await hostLocal("ADD", config, { containerId: "c5" })), ["10.80.0.5/24"]);
    // libcni's key spelling of the 1.1.0 text and an empty list: nothing is valid.
    assertEquals((await gc({ "cni.dev/attachments": [] })).code, 0);
    assertEquals(await leases(dir, "hl-net"), []);
    const old = await gc({ cniVersion: "1.0.0", "cni.dev/valid-attachments": [] });
    assertEquals(old.json!.code, 1);
  });
});

Deno.test("host-local STATUS: ready when the store is writable, code 50 when not", async () => {
  await withTempDir(async (dir) => {
    const status = (dataDir: string) =>
      runApplet("host-local", {
        env: { CNI_COMMAND: "STATUS", CNI_PATH: "/nonexistent" },
        stdin: conf(dataDir, { subnet: "10.90.0.0/24" }, { cniVersion: "1.1.0" }),
      });
    assertEquals((await status(`${dir}/data`)).code, 0);
    await Deno.writeTextFile(`${dir}/file`, "");
    const blocked = await status(`${dir}/file/data`);
    assertEquals([blocked.code, blocked.json!.code], [1, 50]);
    assertMatch(blocked.json!.msg as string, /is not writable$/);
  });
});

Deno.test("host-local: invalid configs and CNI_ARGS are refused before any lease is made", async () => {
  await withTempDir(async (dir) => {
    const tooSmall = await hostLocal("ADD", conf(dir, { subnet: "10.0.0.0/31" }));
    assertEquals([tooSmall.json!.code, tooSmall.json!.msg], [
      7,
      "invalid range set 0: Network 10.0.0.0/31 too small to allocate from",
    ]);
    const badArgs = await hostLocal("ADD", conf(dir, { subnet: "10.0.0.0/24" }), { args: "FOO=1" });
    assertEquals(badArgs.json!.code, 4);
    const noResolv = await hostLocal(
      "ADD",
      conf(dir, { subnet: "10.0.0.0/24", resolvConf: `${dir}/missing` }),
    );
    assertEquals([noResolv.json!.code, noResolv.json!.msg], [
      5,
      `open ${dir}/missing: no such file or directory`,
    ]);
    assertEquals([...Deno.readDirSync(dir)], []);
  });
});

Deno.test("host-local CHECK with a bad config fails like ADD", () =>
  withTempDir(async (dir) => {
    const run = await hostLocal("CHECK", { ...conf(dir, {}), prevResult: { cniVersion: "1.0.0" } });
    assertEquals(run.json!.msg, "no IP ranges specified");
  }));

Deno.test({
  name:
    "host-local without CNI_PATH refuses ADD, CHECK and DEL with code 4, as the reference does, and reserves nothing",
  ignore: !haveReference,
  fn: () =>
    withTempDir(async (dir) => {
      const config = conf(dir, { subnet: "10.81.0.0/24" });
      const cases: [string, Record<string, string>][] = [
        ["ADD", { ...cniEnv("ADD", { netns: NETNS }), CNI_PATH: "" }],
        ["CHECK", { ...cniEnv("CHECK", { netns: NETNS }), CNI_PATH: "" }],
        ["DEL", { ...cniEnv("DEL", { netns: NETNS }), CNI_PATH: "" }],
        ["ADD", { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c1" }],
        ["DEL", { CNI_COMMAND: "DEL" }],
      ];
      for (const [verb, env] of cases) {
        const ours = await runApplet("host-local", { env, stdin: config });
        const theirs = await runApplet("host-local", { env, stdin: config, bin: REFERENCE_BIN });
        assertEquals(ours.code, 1, `${verb}: ${ours.stdout}`);
        assertEquals(
          [ours.json!.code, ours.json!.msg],
          [theirs.json!.code, theirs.json!.msg],
          `${verb} ${JSON.stringify(env)}`,
        );
        assertEquals(ours.json!.code, 4);
      }
      assertEquals(await leases(dir), []);
    }),
});
