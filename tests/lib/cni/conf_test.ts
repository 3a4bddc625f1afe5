import * as z from "zod/mini";
import { assertEquals, assertThrows } from "../../helpers/assert.ts";
import {
  DnsConf,
  dnsIsSet,
  GoInt,
  goList,
  goStruct,
  NETCONF_FIELDS,
  parseConf,
  toDns,
  unknownKeys,
} from "../../../lib/cni/conf.ts";
import { CniError } from "../../../lib/cni/errors.ts";

const Conf = goStruct({
  ...NETCONF_FIELDS,
  ipMasq: z.optional(z.boolean()),
  mtu: z.optional(GoInt),
  vlanTrunk: goList(goStruct({ id: z.optional(GoInt) })),
});

Deno.test("goStruct() reads null as absent, as Go leaves the field alone", () => {
  const conf = parseConf(Conf, { name: "n", ipMasq: null, mtu: null, dns: null, ipam: null });
  assertEquals(conf, { name: "n" });
});

Deno.test("goStruct() matches keys case-insensitively; an exact match wins; the later of two wins", () => {
  assertEquals(parseConf(Conf, { name: "n", IPMASQ: true, Mtu: 1400 }), {
    name: "n",
    ipMasq: true,
    mtu: 1400,
  });
  assertEquals(parseConf(Conf, { name: "n", ipmasq: true, ipMasq: false }).ipMasq, false);
  assertEquals(parseConf(Conf, { name: "n", ipMasq: false, IPMASQ: true }).ipMasq, true);
  // Nested structs follow the same rules.
  assertEquals(parseConf(Conf, { name: "n", vlanTrunk: [{ ID: 5 }, { id: null }] }).vlanTrunk, [
    { id: 5 },
    {},
  ]);
  assertEquals(parseConf(Conf, { name: "n", IPAM: { TYPE: "host-local", subnet: "x" } }).ipam, {
    type: "host-local",
  });
});

Deno.test("parseConf() refuses a wrong type with code 6 and a bad value with code 7, naming the key", () => {
  const wrongType = assertThrows(() => parseConf(Conf, { name: "n", ipMasq: "yes" }));
  assertEquals((wrongType as CniError).code, 6);
  assertEquals((wrongType as CniError).message, "failed to load netconf: ipMasq: expected boolean");
  // Go cannot decode 1.5 into an int either: undecodable.
  assertEquals((assertThrows(() => parseConf(Conf, { name: "n", mtu: 1.5 })) as CniError).code, 6);
  assertEquals((assertThrows(() => parseConf(Conf, {})) as CniError).code, 7);
});

Deno.test("unknownKeys() names what no field takes, matching keys as Go does", () => {
  assertEquals(
    unknownKeys({ name: "n", IPMasq: true, subnet: "10.0.0.0/8", Routes: [] }, {
      ...NETCONF_FIELDS,
      ipMasq: 0,
    }),
    ["subnet", "Routes"],
  );
});

Deno.test("dnsIsSet() and toDns() follow the reference: any field set replaces, empty fields are omitted", () => {
  const parse = (v: unknown) => parseConf(DnsConf, v);
  assertEquals(dnsIsSet(undefined), false);
  assertEquals(dnsIsSet(parse({})), false);
  assertEquals(dnsIsSet(parse({ nameservers: null, domain: "" })), false);
  assertEquals(dnsIsSet(parse({ nameservers: [] })), true);
  assertEquals(dnsIsSet(parse({ domain: "example.org" })), true);
  assertEquals(toDns(parse({ nameservers: [], domain: "d", search: ["a"], options: [] })), {
    domain: "d",
    search: ["a"],
  });
});
