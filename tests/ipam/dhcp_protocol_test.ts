/**
 * The DHCP protocol as pure units, byte for byte: messages (RFC 2131),
 * options (RFC 2132, 3396, 3397, 3442), the IPv4/UDP framing, the retry
 * schedule, the plugin's option resolution and the daemon's command line.
 */

import { assert, assertEquals, assertThrows } from "../helpers/assert.ts";
import {
  decodeMessage,
  encodeMessage,
  type Message,
  MessageError,
  MessageType,
  messageTypeOf,
  newMessage,
  Option,
} from "../../ipam/dhcp/message.ts";
import {
  classlessRoutes,
  domainSearch,
  leaseFacts,
  maskPrefix,
  OptionError,
  staticRoutes,
} from "../../ipam/dhcp/options.ts";
import { checksum, decodeUdp4, encodeUdp4 } from "../../ipam/dhcp/packet.ts";
import { releaseMessage, retryDelays } from "../../ipam/dhcp/client.ts";
import { clientIdOf, parseOptionName, resolveOptions } from "../../ipam/dhcp/mod.ts";
import { Daemon, parseDaemonFlags, parseGoDuration } from "../../ipam/dhcp/daemon.ts";
import { CniError } from "../../lib/cni/errors.ts";

const text = (s: string) => [...new TextEncoder().encode(s)];
const zeros = (n: number) => new Array<number>(n).fill(0);

/** The fixed part of a BOOTP message (RFC 2131 figure 1), each field spelled out. */
function fixedPart(f: {
  op: number;
  xid: number[];
  secs?: number[];
  flags?: number[];
  ciaddr?: number[];
  yiaddr?: number[];
  siaddr?: number[];
  chaddr: number[];
  sname?: number[];
  file?: number[];
}): number[] {
  const pad = (bytes: number[], n: number) => [...bytes, ...zeros(n - bytes.length)];
  return [
    f.op,
    1,
    f.chaddr.length,
    0,
    ...f.xid,
    ...(f.secs ?? [0, 0]),
    ...(f.flags ?? [0, 0]),
    ...(f.ciaddr ?? zeros(4)),
    ...(f.yiaddr ?? zeros(4)),
    ...(f.siaddr ?? zeros(4)),
    ...zeros(4), // giaddr
    ...pad(f.chaddr, 16),
    ...pad(f.sname ?? [], 64),
    ...pad(f.file ?? [], 128),
  ];
}

const MAC = [0x00, 0x0b, 0x82, 0x01, 0xfc, 0x42];
const COOKIE = [99, 130, 83, 99];

Deno.test("encodeMessage() writes a DISCOVER byte for byte, padded to 300 bytes", () => {
  const discover = newMessage({
    op: 1,
    xid: 0x3903f326,
    flags: 0x8000,
    chaddr: Uint8Array.from(MAC),
    options: new Map([
      [Option.messageType, Uint8Array.of(MessageType.discover)],
      [Option.clientId, Uint8Array.from([0, ...text("c1/lan/eth0")])],
      [Option.parameterRequestList, Uint8Array.of(1, 3)],
      [Option.hostName, Uint8Array.from(text("ab"))],
    ]),
  });
  const options = [
    ...[53, 1, 1],
    ...[61, 12, 0, ...text("c1/lan/eth0")],
    ...[55, 2, 1, 3],
    ...[12, 2, ...text("ab")],
    255,
  ];
  const body = [
    ...fixedPart({ op: 1, xid: [0x39, 0x03, 0xf3, 0x26], flags: [0x80, 0x00], chaddr: MAC }),
    ...COOKIE,
    ...options,
  ];
  assertEquals([...encodeMessage(discover)], [...body, ...zeros(300 - body.length)]);
});

Deno.test("encodeMessage() splits an option longer than 255 bytes (RFC 3396)", () => {
  const long = new Uint8Array(300).fill(7);
  const bytes = encodeMessage(newMessage({
    op: 1,
    xid: 1,
    options: new Map([[77, long]]),
  }));
  const options = [...bytes.subarray(240, 240 + 2 + 255 + 2 + 45 + 1)];
  assertEquals(options, [77, 255, ...zeros(255).fill(7), 77, 45, ...zeros(45).fill(7), 255]);
  assertEquals(decodeMessage(bytes).options.get(77), long);
});

Deno.test("decodeMessage() reads an OFFER with pad, split and overloaded options", () => {
  const bytes = Uint8Array.from([
    ...fixedPart({
      op: 2,
      xid: [0xde, 0xad, 0xbe, 0xef],
      yiaddr: [10, 99, 0, 23],
      siaddr: [10, 99, 0, 1],
      chaddr: MAC,
      // Overloaded fields: options without an end in sname, with one in file.
      sname: [15, 4, ...text("test")],
      file: [121, 3, 99, 0, 1, 255],
    }),
    ...COOKIE,
    ...[53, 1, 2],
    0,
    0,
    ...[54, 4, 10, 99, 0, 1],
    ...[121, 2, 0, 10], // the start of 0.0.0.0/0 via 10.99.0.1, ended in file
    ...[52, 1, 3],
    ...[1, 4, 255, 255, 255, 0],
    255,
    ...[3, 4, 1, 1, 1, 1], // after end: not an option
  ]);
  const m = decodeMessage(bytes);
  assertEquals(m.op, 2);
  assertEquals(m.xid, 0xdeadbeef);
  assertEquals([m.ciaddr, m.yiaddr, m.siaddr, m.giaddr], [
    "0.0.0.0",
    "10.99.0.23",
    "10.99.0.1",
    "0.0.0.0",
  ]);
  assertEquals([...m.chaddr], MAC);
  assertEquals(messageTypeOf(m), MessageType.offer);
  assertEquals([...m.options.keys()], [53, 54, 121, 52, 1, 15]);
  assertEquals([...m.options.get(Option.classlessRoutes)!], [0, 10, 99, 0, 1]);
  assertEquals(new TextDecoder().decode(m.options.get(Option.domainName)), "test");
  assertEquals(m.options.has(Option.router), false);
});

Deno.test("decodeMessage() refuses what is not a DHCP message", () => {
  const good = encodeMessage(newMessage({ op: 2, xid: 5 }));
  assertThrows(() => decodeMessage(good.subarray(0, 239)), "shorter than a DHCP header");
  const noCookie = good.slice();
  noCookie[236] = 0;
  assertThrows(() => decodeMessage(noCookie), "no DHCP magic cookie");
  const truncated = Uint8Array.from([...good.subarray(0, 240), 53, 4, 1]);
  const e = assertThrows(() => decodeMessage(truncated), "runs past the end");
  assert(e instanceof MessageError);
  const badOp = good.slice();
  badOp[0] = 3;
  assertThrows(() => decodeMessage(badOp), "unknown op 3");
});

Deno.test("encodeMessage() and decodeMessage() agree on every field", () => {
  const m: Message = newMessage({
    op: 1,
    xid: 0x01020304,
    secs: 7,
    flags: 0x8000,
    ciaddr: "10.0.0.9",
    chaddr: Uint8Array.from(MAC),
    options: new Map([[Option.messageType, Uint8Array.of(3)], [
      Option.requestedAddress,
      Uint8Array.of(10, 0, 0, 9),
    ]]),
  });
  const back = decodeMessage(encodeMessage(m));
  assertEquals({ ...back, sname: undefined, file: undefined }, {
    ...m,
    sname: undefined,
    file: undefined,
  });
});

Deno.test("releaseMessage() carries ciaddr, the server id and only the client id", () => {
  const ack = newMessage({
    op: 2,
    xid: 9,
    yiaddr: "10.99.0.23",
    chaddr: Uint8Array.from(MAC),
    options: new Map([[Option.serverId, Uint8Array.of(10, 99, 0, 1)]]),
  });
  const identity = {
    options: new Map([
      [Option.clientId, Uint8Array.from([0, ...text("c1/lan/eth0")])],
      [Option.hostName, Uint8Array.from(text("web"))],
    ]),
    request: [3, 1],
  };
  const release = releaseMessage({ ack, serverMac: new Uint8Array(6) }, identity);
  assertEquals(release.ciaddr, "10.99.0.23");
  assertEquals([...release.chaddr], MAC);
  assertEquals(
    [...release.options].map(([code, value]) => [code, [...value]]),
    [[53, [7]], [54, [10, 99, 0, 1]], [61, [0, ...text("c1/lan/eth0")]]],
  );
});

Deno.test("classlessRoutes() reads RFC 3442 routes of every width", () => {
  const value = Uint8Array.from([
    ...[0, 10, 99, 0, 1], // default route
    ...[16, 10, 17, 10, 0, 0, 1],
    ...[25, 10, 229, 0, 128, 10, 0, 0, 2],
    ...[32, 192, 168, 1, 1, 0, 0, 0, 0],
    ...[9, 10, 128, 10, 99, 0, 1],
  ]);
  assertEquals(classlessRoutes(value), [
    { dst: "0.0.0.0/0", router: "10.99.0.1" },
    { dst: "10.17.0.0/16", router: "10.0.0.1" },
    { dst: "10.229.0.128/25", router: "10.0.0.2" },
    { dst: "192.168.1.1/32", router: "0.0.0.0" },
    { dst: "10.128.0.0/9", router: "10.99.0.1" },
  ]);
  assertThrows(() => classlessRoutes(Uint8Array.of(33, 1, 2, 3, 4, 5, 6, 7, 8, 9)), "width 33");
  assertThrows(() => classlessRoutes(Uint8Array.of(24, 10, 1, 2, 10, 0)), "truncated route");
});

Deno.test("staticRoutes() takes each destination's class as its mask", () => {
  const value = Uint8Array.from([
    ...[10, 1, 2, 3, 10, 99, 0, 1],
    ...[172, 16, 5, 0, 10, 99, 0, 2],
    ...[192, 168, 7, 0, 10, 99, 0, 3],
    ...[224, 0, 0, 9, 10, 99, 0, 4], // class D: no mask, skipped
  ]);
  assertEquals(staticRoutes(value), [
    { dst: "10.1.2.3/8", router: "10.99.0.1" },
    { dst: "172.16.5.0/16", router: "10.99.0.2" },
    { dst: "192.168.7.0/24", router: "10.99.0.3" },
  ]);
  assertThrows(() => staticRoutes(Uint8Array.of(1, 2, 3)), "not a list of pairs");
});

Deno.test("domainSearch() follows RFC 1035 compression (the RFC 3397 example)", () => {
  const value = Uint8Array.from([
    3,
    ...text("eng"),
    5,
    ...text("apple"),
    3,
    ...text("com"),
    0,
    9,
    ...text("marketing"),
    0xc0,
    4,
  ]);
  assertEquals(domainSearch(value), ["eng.apple.com", "marketing.apple.com"]);
  assertThrows(() => domainSearch(Uint8Array.of(0xc0, 0)), "compression loop");
});

Deno.test("maskPrefix() counts contiguous masks and refuses others", () => {
  assertEquals(maskPrefix(Uint8Array.of(255, 255, 255, 0)), 24);
  assertEquals(maskPrefix(Uint8Array.of(255, 255, 240, 0)), 20);
  assertEquals(maskPrefix(Uint8Array.of(0, 0, 0, 0)), 0);
  assertEquals(maskPrefix(Uint8Array.of(255, 255, 255, 255)), 32);
  assertEquals(maskPrefix(Uint8Array.of(255, 0, 255, 0)), null);
});

function ack(options: [number, number[]][]): Message {
  return newMessage({
    op: 2,
    xid: 1,
    yiaddr: "10.99.0.23",
    siaddr: "10.99.0.1",
    options: new Map(options.map(([c, v]) => [c, Uint8Array.from(v)])),
  });
}

Deno.test("leaseFacts() builds routes from option 121, on-link routes with scope link", () => {
  const facts = leaseFacts(ack([
    [Option.subnetMask, [255, 255, 255, 0]],
    [Option.router, [10, 99, 0, 1, 10, 99, 0, 2]],
    [Option.serverId, [10, 99, 0, 1]],
    [Option.leaseTime, [0, 0, 0x0e, 0x10]],
    [Option.renewalTime, [0, 0, 0, 30]],
    [Option.rebindingTime, [0, 0, 0, 60]],
    [Option.classlessRoutes, [24, 192, 168, 50, 10, 99, 0, 1, 16, 10, 200, 0, 0, 0, 0]],
    [Option.staticRoutes, [10, 0, 0, 0, 10, 99, 0, 9]], // ignored when 121 is there
    [Option.domainNameServer, [10, 99, 0, 53, 10, 99, 0, 54]],
    [Option.domainName, [...text("example.test"), 0]],
    [Option.domainSearch, [1, ...text("a"), 4, ...text("test"), 0, 1, ...text("b"), 0xc0, 2]],
  ]));
  assertEquals(facts, {
    address: "10.99.0.23",
    prefix: 24,
    serverId: "10.99.0.1",
    routers: ["10.99.0.1", "10.99.0.2"],
    routes: [
      { dst: "192.168.50.0/24", gw: "10.99.0.1" },
      { dst: "10.200.0.0/16", gw: "0.0.0.0", scope: 253 },
    ],
    dns: {
      nameservers: ["10.99.0.53", "10.99.0.54"],
      domain: "example.test",
      search: ["a.test", "b.test"],
    },
    leaseTime: 3600,
    renewalTime: 30,
    rebindingTime: 60,
  });
});

Deno.test("leaseFacts() without option 121: static routes, then the default route", () => {
  const facts = leaseFacts(ack([
    [Option.subnetMask, [255, 255, 0, 0]],
    [Option.router, [10, 99, 0, 1]],
    [Option.leaseTime, [0, 0, 0, 200]],
    [Option.staticRoutes, [10, 0, 0, 0, 10, 99, 0, 9]],
  ]));
  assertEquals(facts.routes, [{ dst: "10.0.0.0/8", gw: "10.99.0.9" }, {
    dst: "0.0.0.0/0",
    gw: "10.99.0.1",
  }]);
  assertEquals(facts.dns, {});
  // No option 54: siaddr; no 58/59: half and 85 % of the lease.
  assertEquals([facts.serverId, facts.renewalTime, facts.rebindingTime], ["10.99.0.1", 100, 170]);
  assertEquals(leaseFacts(ack([[Option.subnetMask, [255, 255, 255, 0]]])).leaseTime, 3600);
});

Deno.test("leaseFacts() refuses an ACK without a usable subnet mask", () => {
  const e = assertThrows(() => leaseFacts(ack([])), "Subnet Mask not found in DHCPACK");
  assert(e instanceof OptionError);
  assertThrows(() => leaseFacts(ack([[Option.subnetMask, [255, 0, 255, 0]]])), "not contiguous");
});

Deno.test("encodeUdp4() frames a datagram byte for byte with both checksums", () => {
  const packet = encodeUdp4(
    { ip: "0.0.0.0", port: 68 },
    { ip: "255.255.255.255", port: 67 },
    Uint8Array.of(1, 2, 3, 4),
  );
  assertEquals([...packet], [
    ...[0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0x7a, 0xce, 0, 0, 0, 0, 255, 255, 255, 255],
    ...[0, 68, 0, 67, 0, 12, 0xfb, 0x49],
    ...[1, 2, 3, 4],
  ]);
  assertEquals(checksum(packet.subarray(0, 20)), 0);
  assertEquals(decodeUdp4(packet), {
    src: { ip: "0.0.0.0", port: 68 },
    dst: { ip: "255.255.255.255", port: 67 },
    payload: Uint8Array.of(1, 2, 3, 4),
  });
});

Deno.test("decodeUdp4() skips fragments, other protocols and damaged headers", () => {
  const packet = encodeUdp4(
    { ip: "10.0.0.1", port: 67 },
    { ip: "10.0.0.2", port: 68 },
    Uint8Array.of(9),
  );
  const edit = (at: number, value: number) => {
    const copy = packet.slice();
    copy[at] = value;
    return copy;
  };
  assertEquals(decodeUdp4(edit(9, 6)), null); // TCP
  assertEquals(decodeUdp4(edit(6, 0x20)), null); // more fragments
  assertEquals(decodeUdp4(edit(15, 3)), null); // header checksum no longer matches
  assertEquals(decodeUdp4(packet.subarray(0, 27)), null); // shorter than its total length
  assertEquals(decodeUdp4(packet)?.payload, Uint8Array.of(9));
});

Deno.test("retryDelays() is the reference's schedule: 4 fast retries, then doubling, ±1 s", () => {
  const take = (random: () => number, n: number) => {
    const out: number[] = [];
    for (const d of retryDelays(62_000, random)) {
      out.push(Math.round(d));
      if (out.length === n) break;
    }
    return out;
  };
  assertEquals(take(() => 0.5, 10), [
    2000,
    2000,
    2000,
    2000,
    4000,
    8000,
    16000,
    32000,
    64000,
    64000,
  ]);
  assertEquals(take(() => 0, 6), [1000, 1000, 1000, 1000, 3000, 7000]);
  assertEquals(take(() => 0.999999, 5).map((d) => Math.round(d / 10) * 10), [
    3000,
    3000,
    3000,
    3000,
    5000,
  ]);
});

Deno.test("resolveOptions() sends client id 61 with type 0, then what `provide` gives", () => {
  const { options, request } = resolveOptions(
    {
      provide: [
        { option: "host-name", value: "web-1" },
        { option: "60", value: "vendor" },
        { option: "user-class", fromArg: "CLASS" },
        { option: "dhcp-client-identifier", fromArg: "MISSING" },
      ],
    },
    "IgnoreUnknown=1;CLASS=gold=1;junk",
    "c1/lan/eth0",
  );
  assertEquals([...options].map(([c, v]) => [c, new TextDecoder().decode(v)]), [
    [61, "\0c1/lan/eth0"],
    [12, "web-1"],
    [60, "vendor"],
    [77, "gold=1"],
  ]);
  assertEquals(request, [3, 1]);
});

Deno.test("resolveOptions() lets `provide` replace the client id; fromArg wins over value", () => {
  const { options } = resolveOptions(
    {
      provide: [{ option: "dhcp-client-identifier", value: "fixed", fromArg: "ID" }],
    },
    "ID=from-args",
    "c1/lan/eth0",
  );
  assertEquals(new TextDecoder().decode(options.get(61)), "from-args");
});

Deno.test("resolveOptions() asks for routers and mask after the requested options unless skipDefault", () => {
  const ask = (request: { option?: string | number; skipDefault?: boolean }[]) =>
    resolveOptions({ request }, "", "x").request;
  assertEquals(ask([{ option: "121" }, { option: "domain-name-servers" }, { option: 121 }]), [
    121,
    6,
    3,
    1,
  ]);
  assertEquals(ask([{ option: "routers" }]), [3, 1]);
  assertEquals(ask([{ skipDefault: true }, { option: "subnet-mask" }]), [1]);
  assertEquals(ask([{ skipDefault: true }]), []);
});

Deno.test("resolveOptions() refuses bad options with code 7", () => {
  const refuse = (ipam: Parameters<typeof resolveOptions>[0], args: string, msg: string) => {
    const e = assertThrows(() => resolveOptions(ipam, args, "x"), msg);
    assert(e instanceof CniError);
    assertEquals(e.code, 7);
  };
  refuse({ provide: [{ option: "host-name", value: "a".repeat(256) }] }, "", "value too long");
  refuse({ provide: [{ option: "host-name", fromArg: "H" }] }, `H=${"é".repeat(128)}`, "256 bytes");
  refuse(
    { provide: [{ option: "no-such-option", value: "x" }] },
    "",
    'Can not parse option "no-such-option"',
  );
  refuse({ provide: [{ option: "256", value: "x" }] }, "", "Can not parse option");
  refuse({ provide: [{ option: "53", value: "x" }] }, "", "the daemon sets it");
  refuse({ request: [{ option: "255" }] }, "", "cannot be requested");
  // 255 bytes is the most an option holds.
  assertEquals(
    resolveOptions({ provide: [{ option: 12, value: "a".repeat(255) }] }, "", "x").options.get(12)!
      .length,
    255,
  );
  assertEquals(parseOptionName("routers"), 3);
  assertEquals(parseOptionName("042"), 42);
});

Deno.test("clientIdOf() is <containerID>/<network>/<ifname>, cut to 254 bytes", () => {
  assertEquals(clientIdOf("c1", "lan", "eth0"), "c1/lan/eth0");
  const long = clientIdOf("c".repeat(300), "lan", "eth0");
  assertEquals(long, "c".repeat(254));
});

Deno.test("parseGoDuration() reads Go's duration syntax", () => {
  assertEquals(parseGoDuration("10s"), 10_000);
  assertEquals(parseGoDuration("1m30s"), 90_000);
  assertEquals(parseGoDuration("1.5h"), 5_400_000);
  assertEquals(parseGoDuration("250ms"), 250);
  assertEquals(parseGoDuration("0"), 0);
  assertEquals(parseGoDuration("10"), null);
  assertEquals(parseGoDuration("3 s"), null);
  assertEquals(parseGoDuration("2d"), null);
});

Deno.test("parseDaemonFlags() takes the reference's flags as Go's flag package does", () => {
  assertEquals(parseDaemonFlags([]), {
    socketPath: "/run/cni/dhcp.sock",
    pidFile: "",
    hostPrefix: "",
    stateDir: "/run/cni/dhcp-leases",
    broadcast: false,
    timeoutMs: 10_000,
    resendMaxMs: 62_000,
    resendTimeoutMs: 208_000,
  });
  assertEquals(
    parseDaemonFlags([
      "-socketpath",
      "/tmp/x/d.sock",
      "--timeout=2s",
      "-broadcast",
      "-resendmax=5s",
      "-resendtimeout",
      "1m",
      "-hostprefix=/host",
      "-pidfile",
      "/run/d.pid",
      "ignored-positional",
      "-bogus",
    ]),
    {
      socketPath: "/tmp/x/d.sock",
      pidFile: "/run/d.pid",
      hostPrefix: "/host",
      stateDir: "/host/tmp/x/dhcp-leases",
      broadcast: true,
      timeoutMs: 2000,
      resendMaxMs: 5000,
      resendTimeoutMs: 60_000,
    },
  );
  assertEquals(parseDaemonFlags(["-broadcast=false", "-statedir", "/var/x"])?.stateDir, "/var/x");
  assertEquals(parseDaemonFlags(["-h"]), null);
  assertThrows(() => parseDaemonFlags(["-nope"]), "flag provided but not defined: -nope");
  assertThrows(() => parseDaemonFlags(["-timeout", "10"]), 'invalid value "10" for flag -timeout');
  assertThrows(() => parseDaemonFlags(["-socketpath"]), "flag needs an argument");
});

Deno.test("the daemon answers a malformed request with code 6 and touches nothing", async () => {
  const flags = parseDaemonFlags(["-statedir", "/nonexistent/never-created"])!;
  const daemon = new Daemon(flags);
  const answer = await daemon.handle({ v: 2, op: "add" });
  assert("error" in answer);
  assertEquals(answer.error.code, 6);
  const del = await daemon.handle({
    v: 1,
    op: "del",
    clientId: "c/n/eth0",
    netns: "",
    ifname: "eth0",
  });
  assertEquals(del, { ok: {} });
});
