import { assert, assertEquals, assertThrows } from "../../../helpers/assert.ts";
import { CniError } from "../../../../lib/cni/errors.ts";
import {
  convertResult,
  isKnownResultVersion,
  parseResult,
  resultToJSON,
  sameResultShape,
  toCurrentResult,
} from "../../../../lib/cni/spec/convert.ts";
import type { AnyResult, Result, Result02, Result04 } from "../../../../lib/cni/spec/schemas.ts";
import { ALL_VERSIONS } from "../../../../lib/cni/spec/version.ts";

type Family = "0.2" | "0.4" | "1.x";
const FAMILY: Record<string, Family> = {
  "0.1.0": "0.2",
  "0.2.0": "0.2",
  "0.3.0": "0.4",
  "0.3.1": "0.4",
  "0.4.0": "0.4",
  "1.0.0": "1.x",
  "1.1.0": "1.x",
};
const RANK: Record<Family, number> = { "0.2": 0, "0.4": 1, "1.x": 2 };

const DNS = {
  nameservers: ["192.0.2.3", "2001:db8::53"],
  domain: "example.com",
  search: ["example.com", "example.org"],
  options: ["ndots:2"],
};

/** Routes of both families: one with every 1.1 extra, one without a gateway. */
const ROUTES = [
  {
    dst: "15.5.6.0/24",
    gw: "15.5.6.8",
    mtu: 1400,
    advmss: 1360,
    priority: 100,
    table: 50,
    scope: 0,
  },
  { dst: "1111:dddd::/80", gw: "1111:dddd::aaaa", table: 254, scope: 253 },
  { dst: "0.0.0.0/0" },
];

/**
 * The rich 1.1.0 result: two interfaces (the first with every 1.1 field), a
 * v4 and a v6 address on interface 0 plus a second v4 one that 0.2 must drop,
 * routes of both families (one with every 1.1 extra, one without a gateway).
 */
function rich(cniVersion = "1.1.0"): Result {
  return {
    cniVersion,
    interfaces: [
      {
        name: "eth0",
        mac: "00:11:22:33:44:55",
        mtu: 1500,
        sandbox: "/var/run/netns/blue",
        socketPath: "/run/vhost/eth0.sock",
        pciID: "0000:00:1f.6",
      },
      { name: "veth1234", mac: "66:77:88:99:aa:bb", mtu: 9000, pciID: "0000:00:02.0" },
    ],
    ips: [
      { address: "1.2.3.30/24", gateway: "1.2.3.1", interface: 0 },
      { address: "abcd:1234:ffff::cdde/64", gateway: "abcd:1234:ffff::1", interface: 0 },
      { address: "10.9.8.7/8", interface: 1 },
    ],
    routes: structuredClone(ROUTES),
    dns: structuredClone(DNS),
  };
}

/** The rich result as 0.3.0/0.3.1/0.4.0 write it. */
function rich04(cniVersion: string): Result04 {
  return {
    cniVersion,
    interfaces: [
      { name: "eth0", mac: "00:11:22:33:44:55", sandbox: "/var/run/netns/blue" },
      { name: "veth1234", mac: "66:77:88:99:aa:bb" },
    ],
    ips: [
      { version: "4", address: "1.2.3.30/24", gateway: "1.2.3.1", interface: 0 },
      {
        version: "6",
        address: "abcd:1234:ffff::cdde/64",
        gateway: "abcd:1234:ffff::1",
        interface: 0,
      },
      { version: "4", address: "10.9.8.7/8", interface: 1 },
    ],
    // libcni's shared Route type keeps the 1.1 extras in 0.4 results.
    routes: structuredClone(ROUTES),
    dns: structuredClone(DNS),
  };
}

/** The rich result as 0.1.0/0.2.0 write it: first IP per family, routes by family. */
function rich02(cniVersion: string): Result02 {
  return {
    cniVersion,
    ip4: {
      ip: "1.2.3.30/24",
      gateway: "1.2.3.1",
      routes: [{ dst: "15.5.6.0/24", gw: "15.5.6.8" }, { dst: "0.0.0.0/0" }],
    },
    ip6: {
      ip: "abcd:1234:ffff::cdde/64",
      gateway: "abcd:1234:ffff::1",
      routes: [{ dst: "1111:dddd::/80", gw: "1111:dddd::aaaa" }],
    },
    dns: structuredClone(DNS),
  };
}

/** The rich result in the shape of `version`, as written natively in that version. */
function source(version: string): AnyResult {
  return { "0.2": rich02, "0.4": rich04, "1.x": rich }[FAMILY[version]!](version);
}

/** A 0.2 result lifted to 0.3.x/0.4.0: no interfaces, no index, v4 routes then v6. */
function lifted02to04(cniVersion: string): Result04 {
  return {
    cniVersion,
    ips: [
      { version: "4", address: "1.2.3.30/24", gateway: "1.2.3.1" },
      { version: "6", address: "abcd:1234:ffff::cdde/64", gateway: "abcd:1234:ffff::1" },
    ],
    routes: [
      { dst: "15.5.6.0/24", gw: "15.5.6.8" },
      { dst: "0.0.0.0/0" },
      { dst: "1111:dddd::/80", gw: "1111:dddd::aaaa" },
    ],
    dns: structuredClone(DNS),
  };
}

/** A 0.2 result lifted to 1.x: as above without `version`. */
function lifted02to1x(cniVersion: string): Result {
  const r = lifted02to04(cniVersion);
  return { ...r, ips: r.ips!.map(({ version: _, ...ip }) => ip) };
}

/** A 0.4 result lifted to 1.x: interfaces and index kept, `version` dropped. */
function lifted04to1x(cniVersion: string): Result {
  const r = rich04(cniVersion);
  return { ...r, ips: r.ips!.map(({ version: _, ...ip }) => ip) };
}

/** What converting the rich result from `from` to `to` must give. */
function expected(from: string, to: string): AnyResult {
  const [f, t] = [FAMILY[from]!, FAMILY[to]!];
  if (RANK[t] <= RANK[f]) return source(to);
  if (f === "0.2") return t === "0.4" ? lifted02to04(to) : lifted02to1x(to);
  return lifted04to1x(to);
}

/** JSON round trip: drops keys whose value is undefined, as printing does. */
function asJSON(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value));
}

for (const from of ALL_VERSIONS) {
  for (const to of ALL_VERSIONS) {
    Deno.test(`convertResult() converts the rich ${from} result to ${to}`, () => {
      const input = source(from);
      const before = structuredClone(input);
      const out = convertResult(input, to);
      assertEquals(asJSON(out), asJSON(expected(from, to)));
      assertEquals(out.cniVersion, to);
      assertEquals(input, before, "the input must not change");
      if (from === to) assert(out === input, "same version returns the input itself");
    });
  }
}

Deno.test("convertResult() keeps mtu/socketPath/pciID and route extras between 1.1.0 and 1.0.0", () => {
  const down = convertResult(rich(), "1.0.0");
  assertEquals(down, rich("1.0.0"));
  const back = convertResult(down, "1.1.0");
  assertEquals(back, rich());
  assertEquals((back as Result).interfaces![0]!.mtu, 1500);
  assertEquals((back as Result).interfaces![0]!.socketPath, "/run/vhost/eth0.sock");
  assertEquals((back as Result).interfaces![0]!.pciID, "0000:00:1f.6");
});

Deno.test("convertResult() round-trips 0.2.0 → 0.4.0 → 0.2.0 with and without route gateways", () => {
  const withGw = rich02("0.2.0");
  assertEquals(convertResult(convertResult(withGw, "0.4.0"), "0.2.0"), withGw);
  const noGw: Result02 = {
    cniVersion: "0.2.0",
    ip4: { ip: "10.0.0.5/16", routes: [{ dst: "0.0.0.0/0" }, { dst: "192.168.0.0/16" }] },
    dns: {},
  };
  assertEquals(convertResult(convertResult(noGw, "0.4.0"), "0.2.0"), noGw);
});

Deno.test("convertResult() from 1.1.0 to 0.4.0 keeps name/mac/sandbox, adds version, keeps index 0", () => {
  const out = convertResult(rich(), "0.4.0") as Result04;
  assertEquals(out.interfaces, [
    { name: "eth0", mac: "00:11:22:33:44:55", sandbox: "/var/run/netns/blue" },
    { name: "veth1234", mac: "66:77:88:99:aa:bb" },
  ]);
  assertEquals(out.ips!.map((ip) => [ip.version, ip.interface]), [["4", 0], ["6", 0], ["4", 1]]);
  const printed = JSON.parse(JSON.stringify(resultToJSON(out)));
  assertEquals(printed.ips[0].interface, 0);
});

Deno.test("convertResult() to 0.2.0 keeps the first IP per family and splits routes by family", () => {
  const out = convertResult(rich(), "0.1.0") as Result02;
  assertEquals(out, rich02("0.1.0"));
  assert(!("interfaces" in out));
});

Deno.test("convertResult() to 0.2.0 drops routes of a family that has no IP", () => {
  const v4only: Result = {
    cniVersion: "1.1.0",
    ips: [{ address: "10.0.0.5/24", gateway: "10.0.0.1" }],
    routes: [{ dst: "0.0.0.0/0", gw: "10.0.0.1" }, { dst: "::/0", gw: "fe80::1" }],
  };
  assertEquals(convertResult(v4only, "0.2.0"), {
    cniVersion: "0.2.0",
    ip4: { ip: "10.0.0.5/24", gateway: "10.0.0.1", routes: [{ dst: "0.0.0.0/0", gw: "10.0.0.1" }] },
    dns: {},
  });
  const v6only: Result = {
    cniVersion: "1.1.0",
    ips: [{ address: "2001:db8::5/64" }],
    routes: [{ dst: "0.0.0.0/0", gw: "10.0.0.1" }, { dst: "::/0", gw: "fe80::1" }],
  };
  assertEquals(convertResult(v6only, "0.2.0"), {
    cniVersion: "0.2.0",
    ip6: { ip: "2001:db8::5/64", routes: [{ dst: "::/0", gw: "fe80::1" }] },
    dns: {},
  });
});

for (const to of ["0.1.0", "0.2.0"]) {
  Deno.test(`convertResult() refuses a result without IPs to ${to}: "cannot convert: no valid IP addresses"`, () => {
    for (
      const r of [{ cniVersion: "1.1.0" }, { cniVersion: "1.0.0", ips: [] }, {
        cniVersion: "0.4.0",
        interfaces: [{ name: "eth0" }],
        routes: [{ dst: "0.0.0.0/0" }],
      }] as AnyResult[]
    ) {
      const e = assertThrows(() => convertResult(r, to), "cannot convert: no valid IP addresses");
      assert(e instanceof CniError);
    }
  });
}

Deno.test("convertResult() counts a 0.4.0 IP without version as no IP when going to 0.2.0", () => {
  const r: Result04 = { cniVersion: "0.4.0", ips: [{ address: "10.0.0.5/24" }] };
  assertThrows(() => convertResult(r, "0.2.0"), "cannot convert: no valid IP addresses");
});

Deno.test("convertResult() from 0.2.0 to 1.1.0 gives ips without index, routes v4 then v6", () => {
  const r: Result02 = {
    cniVersion: "0.2.0",
    ip6: { ip: "2001:db8::5/64", gateway: "2001:db8::1", routes: [{ dst: "::/0" }] },
    ip4: { ip: "10.0.0.5/24", gateway: "10.0.0.1", routes: [{ dst: "0.0.0.0/0", gw: "10.0.0.1" }] },
  };
  assertEquals(asJSON(convertResult(r, "1.1.0")), {
    cniVersion: "1.1.0",
    ips: [
      { address: "10.0.0.5/24", gateway: "10.0.0.1" },
      { address: "2001:db8::5/64", gateway: "2001:db8::1" },
    ],
    routes: [{ dst: "0.0.0.0/0", gw: "10.0.0.1" }, { dst: "::/0" }],
    dns: {},
  });
});

Deno.test('convertResult() treats "" as 0.1.0', () => {
  const out = convertResult(rich(), "");
  assertEquals(out, rich02("0.1.0"));
});

Deno.test("convertResult() relabels 0.1.0 ↔ 0.2.0 and 0.3.0 ↔ 0.3.1 ↔ 0.4.0 field for field", () => {
  assertEquals(convertResult(rich02("0.1.0"), "0.2.0"), rich02("0.2.0"));
  assertEquals(convertResult(rich02("0.2.0"), "0.1.0"), rich02("0.1.0"));
  for (const a of ["0.3.0", "0.3.1", "0.4.0"]) {
    for (const b of ["0.3.0", "0.3.1", "0.4.0"]) {
      assertEquals(convertResult(rich04(a), b), rich04(b));
    }
  }
});

Deno.test('convertResult() to an unknown version fails with "no converter"', () => {
  for (const to of ["5.0.0", "1", "0.4567.0", "adsf"]) {
    const e = assertThrows(
      () => convertResult(rich(), to),
      `no converter for CNI result version 1.1.0 to ${to}`,
    );
    assert(e instanceof CniError);
    assertEquals(e.code, 1);
  }
  assertThrows(
    () => convertResult({ cniVersion: "5.0.0" } as AnyResult, "1.1.0"),
    "no converter for CNI result version 5.0.0 to 1.1.0",
  );
});

Deno.test("toCurrentResult() brings any version to the 1.1.0 shape", () => {
  assertEquals(asJSON(toCurrentResult(rich04("0.3.1"))), asJSON(lifted04to1x("1.1.0")));
  assertEquals(asJSON(toCurrentResult(rich02("0.1.0"))), asJSON(lifted02to1x("1.1.0")));
  const r = rich();
  assert(toCurrentResult(r) === r);
});

Deno.test("isKnownResultVersion() and sameResultShape() follow the three result families", () => {
  for (const v of ALL_VERSIONS) assert(isKnownResultVersion(v), v);
  assert(isKnownResultVersion(""));
  assert(!isKnownResultVersion("0.4567.0"));
  assert(!isKnownResultVersion("1"));
  assert(sameResultShape("0.1.0", "0.2.0"));
  assert(sameResultShape("", "0.2.0"));
  assert(sameResultShape("0.3.0", "0.4.0"));
  assert(sameResultShape("1.0.0", "1.1.0"));
  assert(!sameResultShape("0.2.0", "0.3.0"));
  assert(!sameResultShape("0.4.0", "1.0.0"));
  assert(!sameResultShape("9.9.9", "9.9.9"));
});

Deno.test("parseResult() decodes every version's shape", () => {
  for (const v of ALL_VERSIONS) {
    assertEquals(asJSON(parseResult(asJSON(source(v)))), asJSON(source(v)), v);
  }
});

Deno.test('parseResult() reads a missing or "" cniVersion as the default, 0.1.0 unless told', () => {
  const r = rich02("");
  assertEquals(parseResult(asJSON(r)).cniVersion, "0.1.0");
  const { cniVersion: _, ...noVersion } = rich02("x");
  assertEquals(parseResult(asJSON(noVersion)).cniVersion, "0.1.0");
  assertEquals(parseResult(asJSON(noVersion), "0.2.0").cniVersion, "0.2.0");
  assertEquals(parseResult(asJSON(noVersion), "").cniVersion, "0.1.0");
  assertEquals(parseResult({ cniVersion: "" }, "1.1.0"), { cniVersion: "1.1.0" });
});

Deno.test("parseResult() drops unknown fields, as libcni does", () => {
  const out = parseResult({
    cniVersion: "1.1.0",
    extra: true,
    ips: [{ address: "10.0.0.5/24", bogus: 1 }],
    interfaces: [{ name: "eth0", color: "blue" }],
  });
  assertEquals(out, {
    cniVersion: "1.1.0",
    ips: [{ address: "10.0.0.5/24" }],
    interfaces: [{ name: "eth0" }],
  });
  // A 0.4 result has no interface mtu; parsing as 0.4.0 drops it.
  const old = parseResult({ cniVersion: "0.4.0", interfaces: [{ name: "eth0", mtu: 1500 }] });
  assertEquals(old, { cniVersion: "0.4.0", interfaces: [{ name: "eth0" }] });
});

Deno.test("parseResult() keeps host bits in addresses", () => {
  const out = parseResult({ cniVersion: "1.0.0", ips: [{ address: "1.2.3.30/24" }] }) as Result;
  assertEquals(out.ips![0]!.address, "1.2.3.30/24");
});

Deno.test('parseResult() rejects an unknown version: "unsupported CNI result version"', () => {
  const e = assertThrows(
    () => parseResult({ cniVersion: "0.4567.0" }),
    'unsupported CNI result version "0.4567.0"',
  );
  assert(e instanceof CniError);
  assertEquals(e.code, 6);
});

const BAD_RESULTS: [string, unknown][] = [
  ["an address that is a number", { cniVersion: "1.1.0", ips: [{ address: 5 }] }],
  ["a CIDR with prefix /33", { cniVersion: "1.1.0", ips: [{ address: "10.0.0.0/33" }] }],
  ["an address without prefix", { cniVersion: "1.0.0", ips: [{ address: "10.0.0.1" }] }],
  ["a bad gateway", { cniVersion: "1.1.0", ips: [{ address: "10.0.0.2/24", gateway: "10.0.0" }] }],
  ["a bad route dst", { cniVersion: "0.4.0", routes: [{ dst: "10.0.0.0/33" }] }],
  ["a negative interface index", {
    cniVersion: "1.1.0",
    ips: [{ address: "10.0.0.2/24", interface: -1 }],
  }],
  ["an ip version other than 4 or 6", {
    cniVersion: "0.4.0",
    ips: [{ version: "5", address: "10.0.0.2/24" }],
  }],
  ["a bad 0.2 ip", { cniVersion: "0.2.0", ip4: { ip: "300.0.0.1/24" } }],
  ["an interface without name", { cniVersion: "1.1.0", interfaces: [{ mac: "x" }] }],
  ["a cniVersion that is not a string", { cniVersion: 1, ips: [] }],
  ["an array", []],
  ["a string", "1.1.0"],
];
for (const [what, value] of BAD_RESULTS) {
  Deno.test(`parseResult() rejects ${what} as a decode error (code 6)`, () => {
    const e = assertThrows(() => parseResult(value));
    assert(e instanceof CniError, String(e));
    assertEquals(e.code, 6);
  });
}

Deno.test("parseResult() reads null as an empty 0.1.0 result", () => {
  assertEquals(parseResult(null), { cniVersion: "0.1.0" });
});

Deno.test("resultToJSON() leaves an empty dns out of 1.x results", () => {
  for (const v of ["1.0.0", "1.1.0"]) {
    for (const dns of [undefined, {}, { nameservers: [], search: [], options: [], domain: "" }]) {
      const out = resultToJSON({ cniVersion: v, ips: [{ address: "10.0.0.5/24" }], ...{ dns } });
      assert(!("dns" in out), `${v} ${JSON.stringify(dns)}`);
    }
  }
});

Deno.test("resultToJSON() prints dns {} in 0.4 and 0.2 results", () => {
  for (const v of ["0.1.0", "0.2.0"]) {
    const out = resultToJSON({ cniVersion: v, ip4: { ip: "10.0.0.5/24" } });
    assertEquals(out, { cniVersion: v, ip4: { ip: "10.0.0.5/24" }, dns: {} });
  }
  for (const v of ["0.3.0", "0.3.1", "0.4.0"]) {
    const out = resultToJSON({ cniVersion: v, ips: [{ version: "4", address: "10.0.0.5/24" }] });
    assertEquals(out, {
      cniVersion: v,
      ips: [{ version: "4", address: "10.0.0.5/24" }],
      dns: {},
    });
  }
});

Deno.test("resultToJSON() leaves out empty dns fields, as Go's omitempty does", () => {
  const out = resultToJSON({
    cniVersion: "0.4.0",
    dns: { nameservers: [], domain: "", search: ["a"], options: [] },
  });
  assertEquals(out, { cniVersion: "0.4.0", dns: { search: ["a"] } });
  const out1 = resultToJSON({ cniVersion: "1.1.0", dns: { nameservers: ["1.1.1.1"], domain: "" } });
  assertEquals(out1, { cniVersion: "1.1.0", dns: { nameservers: ["1.1.1.1"] } });
});

Deno.test("resultToJSON() keeps a non-empty dns and drops empty lists", () => {
  const out = resultToJSON({ cniVersion: "1.1.0", interfaces: [], ips: [], routes: [], dns: DNS });
  assertEquals(out, { cniVersion: "1.1.0", dns: DNS });
});

Deno.test("resultToJSON() prints interface index 0 and leaves a missing index out", () => {
  const text = JSON.stringify(resultToJSON({
    cniVersion: "1.1.0",
    ips: [{ address: "1.2.3.30/24", interface: 0 }, { address: "1.2.3.31/24" }],
  }));
  assertEquals(JSON.parse(text).ips, [
    { address: "1.2.3.30/24", interface: 0 },
    { address: "1.2.3.31/24" },
  ]);
});

Deno.test("resultToJSON() does not change its input", () => {
  const r = rich();
  r.dns = {};
  const before = structuredClone(r);
  resultToJSON(r);
  assertEquals(r, before);
});
