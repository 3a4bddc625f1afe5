import { assert, assertEquals } from "../../helpers/assert.ts";
import {
  addToIP,
  bitsOf,
  compareIP,
  contains,
  formatCIDR,
  formatIP,
  hostPrefix,
  type IP,
  ipEquals,
  type IPNet,
  lastAddress,
  networkOf,
  overlaps,
  parseCIDR,
  parseIP,
} from "../../../lib/cni/ipnet.ts";

function ip(text: string): IP {
  const parsed = parseIP(text);
  assert(parsed, `${text} should parse`);
  return parsed;
}

function net(text: string): IPNet {
  const parsed = parseCIDR(text);
  assert(parsed, `${text} should parse`);
  return parsed;
}

Deno.test("parseIP() reads IPv4 addresses as 32-bit values", () => {
  assertEquals(parseIP("0.0.0.0"), { family: 4, value: 0n });
  assertEquals(parseIP("10.1.2.3"), { family: 4, value: 0x0a010203n });
  assertEquals(parseIP("255.255.255.255"), { family: 4, value: 0xffffffffn });
});

Deno.test("parseIP() reads IPv6 addresses as 128-bit values", () => {
  assertEquals(parseIP("::"), { family: 6, value: 0n });
  assertEquals(parseIP("::1"), { family: 6, value: 1n });
  assertEquals(parseIP("2001:db8::1"), { family: 6, value: 0x20010db8000000000000000000000001n });
  assertEquals(parseIP("2001:DB8:0:0:0:0:0:1"), parseIP("2001:db8::1"));
  assertEquals(parseIP("1:2:3:4:5:6:7:8"), {
    family: 6,
    value: 0x00010002000300040005000600070008n,
  });
  assertEquals(parseIP("1::"), { family: 6, value: 1n << 112n });
  assertEquals(parseIP("1:2:3:4:5:6:7::"), parseIP("1:2:3:4:5:6:7:0"));
  assertEquals(parseIP("::2:3:4:5:6:7:8"), parseIP("0:2:3:4:5:6:7:8"));
  assertEquals(parseIP("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), {
    family: 6,
    value: (1n << 128n) - 1n,
  });
});

Deno.test("parseIP() reads IPv4-embedded IPv6 addresses", () => {
  assertEquals(parseIP("::ffff:1.2.3.4"), { family: 6, value: 0xffff01020304n });
  assertEquals(parseIP("::1.2.3.4"), { family: 6, value: 0x01020304n });
  assertEquals(parseIP("64:ff9b::192.0.2.33"), parseIP("64:ff9b::c000:221"));
  assertEquals(parseIP("1:2:3:4:5:6:1.2.3.4"), parseIP("1:2:3:4:5:6:102:304"));
});

const BAD_IPS = [
  "",
  "1.2.3",
  "1.2.3.4.5",
  "256.0.0.1",
  "1.2.3.-1",
  "01.2.3.4",
  "1.2.3.04",
  "1.2.3.4 ",
  " 1.2.3.4",
  "0x1.2.3.4",
  "1.2.3.4/24",
  ":",
  ":::",
  "1:2:3:4:5:6:7:8:9",
  "1:2:3:4:5:6:7:8::",
  "::1:2:3:4:5:6:7:8",
  "1::2::3",
  "12345::1",
  "g::1",
  ":1::",
  "::1:",
  "1:2:3:4:5:6:7",
  "fe80::1%eth0",
  "1.2.3.4::",
  "::1.2.3",
  "::1.2.3.4:5",
  "1:2:3:4:5:6:7:1.2.3.4",
  "1:2:3:4:5:6::1.2.3.4",
  "::ffff:01.2.3.4",
];
for (const bad of BAD_IPS) {
  Deno.test(`parseIP() rejects ${JSON.stringify(bad)}`, () => {
    assertEquals(parseIP(bad), null);
  });
}

Deno.test("formatIP() prints IPv4 dotted-decimal without leading zeros", () => {
  for (const text of ["0.0.0.0", "10.1.2.3", "192.168.100.254", "255.255.255.255"]) {
    assertEquals(formatIP(ip(text)), text);
  }
});

const CANONICAL_V6: [string, string][] = [
  ["2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
  ["0:0:0:0:0:0:0:0", "::"],
  ["0:0:0:0:0:0:0:1", "::1"],
  ["1:0:0:0:0:0:0:0", "1::"],
  ["2001:DB8::ABCD", "2001:db8::abcd"],
  // the longest run of zero groups is compressed
  ["1:0:0:2:0:0:0:3", "1:0:0:2::3"],
  ["1:0:0:0:2:0:0:3", "1::2:0:0:3"],
  // of equal runs, the leftmost
  ["1:0:0:2:3:0:0:4", "1::2:3:0:0:4"],
  ["0:0:1:2:3:4:0:0", "::1:2:3:4:0:0"],
  // a single zero group is not compressed
  ["1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"],
  ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
  ["0:1:2:3:4:5:6:0", "0:1:2:3:4:5:6:0"],
  ["fe80:0000:0000:0000:0202:b3ff:fe1e:8329", "fe80::202:b3ff:fe1e:8329"],
  ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
  // IPv4-mapped addresses keep the dotted tail (RFC 5952 §5)
  ["::ffff:1.2.3.4", "::ffff:1.2.3.4"],
  ["::ffff:0102:0304", "::ffff:1.2.3.4"],
  ["0:0:0:0:0:ffff:c000:0201", "::ffff:192.0.2.1"],
  // other embeddings are not recognisable by prefix: plain hex
  ["::1.2.3.4", "::102:304"],
  ["64:ff9b::192.0.2.33", "64:ff9b::c000:221"],
];
for (const [input, want] of CANONICAL_V6) {
  Deno.test(`formatIP() prints ${input} as ${want}`, () => {
    assertEquals(formatIP(ip(input)), want);
    assertEquals(parseIP(want), parseIP(input), "the canonical form reads back");
  });
}

Deno.test("parseCIDR() keeps host bits and the prefix", () => {
  assertEquals(parseCIDR("10.1.0.5/16"), { ip: { family: 4, value: 0x0a010005n }, prefix: 16 });
  assertEquals(parseCIDR("0.0.0.0/0"), { ip: { family: 4, value: 0n }, prefix: 0 });
  assertEquals(parseCIDR("1.2.3.4/32")!.prefix, 32);
  assertEquals(parseCIDR("2001:db8::5/64"), {
    ip: { family: 6, value: 0x20010db8000000000000000000000005n },
    prefix: 64,
  });
  assertEquals(parseCIDR("::/0")!.prefix, 0);
  assertEquals(parseCIDR("::1/128")!.prefix, 128);
});

const BAD_CIDRS = [
  "10.0.0.0/33",
  "10.0.0.0/-1",
  "10.0.0.0/",
  "10.0.0.0",
  "/24",
  "10.0.0.0/8/8",
  "10.0.0.0/ 8",
  "10.0.0.0/8 ",
  "10.0.0.0/x",
  "010.0.0.0/8",
  "10.00.0.0/16",
  "10.0.0.256/24",
  "2001:db8::/129",
  "2001:db8::",
  "2001:db8:::/64",
  "fe80::1%eth0/64",
  "",
];
for (const bad of BAD_CIDRS) {
  Deno.test(`parseCIDR() rejects ${JSON.stringify(bad)}`, () => {
    assertEquals(parseCIDR(bad), null);
  });
}

Deno.test("formatCIDR() prints the canonical address with its prefix, host bits kept", () => {
  assertEquals(formatCIDR(net("1.2.3.30/24")), "1.2.3.30/24");
  assertEquals(formatCIDR(net("2001:0DB8:0:0::0005/64")), "2001:db8::5/64");
  assertEquals(formatCIDR(net("::/0")), "::/0");
});

Deno.test("networkOf() clears host bits and keeps the prefix", () => {
  assertEquals(formatCIDR(networkOf(net("10.1.2.3/16"))), "10.1.0.0/16");
  assertEquals(formatCIDR(networkOf(net("10.1.2.3/32"))), "10.1.2.3/32");
  assertEquals(formatCIDR(networkOf(net("10.1.2.3/0"))), "0.0.0.0/0");
  assertEquals(formatCIDR(networkOf(net("2001:db8:1:2::ff/48"))), "2001:db8:1::/48");
  assertEquals(formatCIDR(networkOf(net("2001:db8::1/127"))), "2001:db8::/127");
});

Deno.test("lastAddress() gives the IPv4 broadcast or the last IPv6 address of a prefix", () => {
  assertEquals(formatIP(lastAddress(net("10.1.2.3/16"))), "10.1.255.255");
  assertEquals(formatIP(lastAddress(net("10.1.2.3/32"))), "10.1.2.3");
  assertEquals(formatIP(lastAddress(net("0.0.0.0/0"))), "255.255.255.255");
  assertEquals(formatIP(lastAddress(net("192.168.1.0/31"))), "192.168.1.1");
  assertEquals(formatIP(lastAddress(net("2001:db8::/64"))), "2001:db8::ffff:ffff:ffff:ffff");
  assertEquals(formatIP(lastAddress(net("::/0"))), "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
});

Deno.test("contains() checks prefix membership within one family", () => {
  const n = net("10.1.0.5/16");
  assert(contains(n, ip("10.1.0.0")));
  assert(contains(n, ip("10.1.255.255")));
  assert(contains(n, ip("10.1.0.5")));
  assert(!contains(n, ip("10.2.0.0")));
  assert(!contains(n, ip("10.0.255.255")));
  assert(contains(net("0.0.0.0/0"), ip("203.0.113.9")));
  assert(contains(net("10.0.0.1/32"), ip("10.0.0.1")));
  assert(!contains(net("10.0.0.1/32"), ip("10.0.0.2")));
  assert(contains(net("2001:db8::/32"), ip("2001:db8:ffff::1")));
  assert(!contains(net("2001:db8::/32"), ip("2001:db9::1")));
});

Deno.test("contains() never matches across families", () => {
  assert(!contains(net("0.0.0.0/0"), ip("::")));
  assert(!contains(net("::/0"), ip("0.0.0.0")));
  assert(!contains(net("::/96"), ip("1.2.3.4")));
  assert(!contains(net("::ffff:0:0/96"), ip("1.2.3.4")));
});

Deno.test("overlaps() is true when two prefixes share an address", () => {
  assert(overlaps(net("10.0.0.0/8"), net("10.1.0.0/16")));
  assert(overlaps(net("10.1.0.0/16"), net("10.0.0.0/8")));
  assert(overlaps(net("10.1.2.3/16"), net("10.1.200.0/24")), "host bits do not matter");
  assert(overlaps(net("10.0.0.0/24"), net("10.0.0.0/24")));
  assert(!overlaps(net("10.0.0.0/24"), net("10.0.1.0/24")));
  assert(!overlaps(net("10.0.0.0/25"), net("10.0.0.128/25")));
  assert(overlaps(net("2001:db8::/32"), net("2001:db8:1::/48")));
  assert(!overlaps(net("2001:db8::/48"), net("2001:db8:1::/48")));
  assert(!overlaps(net("0.0.0.0/0"), net("::/0")));
});

Deno.test("addToIP() steps forward and back across octet and group boundaries", () => {
  assertEquals(formatIP(addToIP(ip("10.0.0.255"), 1n)), "10.0.1.0");
  assertEquals(formatIP(addToIP(ip("10.0.1.0"), -1n)), "10.0.0.255");
  assertEquals(formatIP(addToIP(ip("10.0.0.1"), 0n)), "10.0.0.1");
  assertEquals(formatIP(addToIP(ip("10.0.0.0"), 65536n)), "10.1.0.0");
  assertEquals(formatIP(addToIP(ip("2001:db8::ffff"), 1n)), "2001:db8::1:0");
  assertEquals(formatIP(addToIP(ip("2001:db8::1:0"), -1n)), "2001:db8::ffff");
  assertEquals(formatIP(addToIP(ip("2001:db8::"), 1n << 64n)), "2001:db8:0:1::");
  assertEquals(addToIP(ip("::1"), 1n).family, 6);
});

Deno.test("ipEquals() and compareIP() compare values within a family", () => {
  assert(ipEquals(ip("10.0.0.1"), ip("10.0.0.1")));
  assert(!ipEquals(ip("10.0.0.1"), ip("10.0.0.2")));
  assert(!ipEquals(ip("0.0.0.1"), ip("::1")), "the same value in two families differs");
  assert(ipEquals(ip("2001:DB8::1"), ip("2001:db8:0::1")));
  assertEquals(compareIP(ip("10.0.0.1"), ip("10.0.0.2")), -1);
  assertEquals(compareIP(ip("10.0.0.2"), ip("10.0.0.1")), 1);
  assertEquals(compareIP(ip("10.0.0.2"), ip("10.0.0.2")), 0);
  assertEquals(compareIP(ip("10.0.0.9"), ip("10.0.0.10")), -1, "numeric, not textual");
  assertEquals(compareIP(ip("2001:db8::9"), ip("2001:db8::a")), -1);
});

Deno.test("hostPrefix() and bitsOf() give /32 for IPv4 and /128 for IPv6", () => {
  assertEquals(bitsOf(4), 32);
  assertEquals(bitsOf(6), 128);
  assertEquals(formatCIDR(hostPrefix(ip("10.0.0.1"))), "10.0.0.1/32");
  assertEquals(formatCIDR(hostPrefix(ip("2001:db8::1"))), "2001:db8::1/128");
});
