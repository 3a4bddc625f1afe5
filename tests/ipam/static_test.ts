import { assertEquals } from "../helpers/assert.ts";
import {
  ALL_TEST_VERSIONS,
  assertSuccess,
  cniEnv,
  haveReference,
  type PluginRun,
  REFERENCE_BIN,
  runApplet,
} from "../helpers/applet.ts";

const NETNS = "/run/netns/cnikit-ipam-unused";

const ADDRESSES = [
  { address: "10.10.0.1/24", gateway: "10.10.0.254" },
  { address: "3ffe:ffff:0:01FF::1/64", gateway: "3ffe:ffff:0::1" },
];
const ROUTES = [
  { dst: "0.0.0.0/0" },
  { dst: "192.168.0.0/16", gw: "10.10.5.1" },
  { dst: "3ffe:ffff:0:01ff::1/64" },
];
const DNS = { nameservers: ["8.8.8.8"], domain: "example.com", search: ["example.com"] };

function conf(
  version: string,
  ipam: Record<string, unknown> = {},
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    cniVersion: version,
    name: "static-net",
    type: "bridge",
    ...extra,
    ipam: { type: "static", ...ipam },
  };
}

function run(
  command: string,
  config: unknown,
  args = "",
  bin?: string,
): Promise<PluginRun> {
  return runApplet("static", {
    env: cniEnv(command, { netns: NETNS, args }),
    stdin: config as object,
    ...(bin ? { bin } : {}),
  });
}

function ipsOf(r: PluginRun): unknown {
  assertEquals(r.code, 0, r.stdout + r.stderr);
  return r.json!.ips;
}

for (const version of ALL_TEST_VERSIONS) {
  Deno.test(`static ADD/CHECK/DEL/DEL (cniVersion ${version})`, async () => {
    const config = conf(version, { addresses: ADDRESSES, routes: ROUTES, dns: DNS });
    const add = assertSuccess(await run("ADD", config));
    if (version < "0.3.0") {
      assertEquals(add.json, {
        cniVersion: version,
        ip4: {
          ip: "10.10.0.1/24",
          gateway: "10.10.0.254",
          routes: [{ dst: "0.0.0.0/0" }, { dst: "192.168.0.0/16", gw: "10.10.5.1" }],
        },
        ip6: {
          ip: "3ffe:ffff:0:1ff::1/64",
          gateway: "3ffe:ffff::1",
          routes: [{ dst: "3ffe:ffff:0:1ff::1/64" }],
        },
        dns: DNS,
      });
    } else {
      const v = (family: string) => (version < "1.0.0" ? { version: family } : {});
      assertEquals(add.json, {
        cniVersion: version,
        ips: [
          { ...v("4"), address: "10.10.0.1/24", gateway: "10.10.0.254" },
          { ...v("6"), address: "3ffe:ffff:0:1ff::1/64", gateway: "3ffe:ffff::1" },
        ],
        routes: [
          { dst: "0.0.0.0/0" },
          { dst: "192.168.0.0/16", gw: "10.10.5.1" },
          { dst: "3ffe:ffff:0:1ff::1/64" },
        ],
        dns: DNS,
      });
    }
    if (version >= "0.4.0") {
      assertSuccess(await run("CHECK", { ...config, prevResult: add.json }));
    }
    for (let i = 0; i < 2; i++) assertSuccess(await run("DEL", config));
  });
}

Deno.test("static CNI_ARGS: IP appended, GATEWAY given to the addresses that hold it", async () => {
  const config = conf("1.0.0", { addresses: [{ address: "10.0.0.5/24" }] });
  const add = await run(
    "ADD",
    config,
    "IgnoreUnknown=1;K8S_POD_NAME=p;IP=10.1.0.5/24, 10.1.1.5/16,2001:db8::5/64;GATEWAY=10.1.0.1,2001:db8::1,10.0.0.1",
  );
  assertEquals(ipsOf(add), [
    // A configured address never gets a CNI_ARGS gateway, as in the reference.
    { address: "10.0.0.5/24" },
    { address: "10.1.0.5/24", gateway: "10.1.0.1" },
    { address: "10.1.1.5/16", gateway: "10.1.0.1" },
    { address: "2001:db8::5/64", gateway: "2001:db8::1" },
  ]);
});

Deno.test("static: args.cni.ips replaces, runtimeConfig.ips replaces everything", async () => {
  const ipam = { addresses: ADDRESSES };
  const viaArgs = await run(
    "ADD",
    conf("1.0.0", ipam, { args: { cni: { ips: ["10.2.0.5/24"] } } }),
    "IP=10.9.0.9/24",
  );
  assertEquals(ipsOf(viaArgs), [{ address: "10.2.0.5/24" }]);
  const viaRuntime = await run(
    "ADD",
    conf("1.0.0", ipam, {
      args: { cni: { ips: ["10.2.0.5/24"] } },
      runtimeConfig: { ips: ["10.3.0.5/24", "2001:db8::7/64"] },
    }),
  );
  assertEquals(ipsOf(viaRuntime), [{ address: "10.3.0.5/24" }, { address: "2001:db8::7/64" }]);
  // An invalid config address that was replaced is never looked at.
  const replaced = await run(
    "ADD",
    conf("1.0.0", { addresses: [{ address: "bogus" }] }, {
      runtimeConfig: { ips: ["10.4.0.5/24"] },
    }),
  );
  assertEquals(ipsOf(replaced), [{ address: "10.4.0.5/24" }]);
  // No addresses at all is allowed.
  assertEquals(ipsOf(await run("ADD", conf("1.0.0"))), undefined);
});

Deno.test("static error texts and codes", async () => {
  const cases: [Record<string, unknown>, string, number, string][] = [
    [
      conf("1.0.0", { addresses: [{ address: "10.0.0.5" }] }),
      "",
      7,
      "the 'address' field is expected to be in CIDR notation, got: '10.0.0.5'",
    ],
    [
      conf("1.0.0"),
      "IP=10.0.0.5",
      4,
      "the 'ip' field is expected to be in CIDR notation, got: '10.0.0.5'",
    ],
    [conf("1.0.0"), "IP=10.0.0.5/24;GATEWAY=x", 4, "invalid gateway address: x"],
    [conf("1.0.0"), "FOO=1", 4, 'ARGS: unknown args ["FOO=1"]'],
    [
      conf("1.0.0", {}, { args: { cni: { ips: ["10.0.0.5"] } } }),
      "",
      7,
      "an entry in the 'ips' field is NOT in CIDR notation, got: '10.0.0.5'",
    ],
    [
      conf("1.0.0", {}, { runtimeConfig: { ips: ["nope"] } }),
      "",
      7,
      "an entry in the 'ips' field is NOT in CIDR notation, got: 'nope'",
    ],
    [
      conf("0.2.0", { addresses: [{ address: "10.0.0.5/24" }, { address: "10.0.1.5/24" }] }),
      "",
      7,
      "CNI version 0.2.0 does not support more than 1 address per family",
    ],
    [
      { cniVersion: "1.0.0", name: "static-net", type: "bridge" },
      "",
      7,
      "IPAM config missing 'ipam' key",
    ],
    [
      conf("1.0.0", { addresses: [{ address: "10.0.0.5/24", gateway: "1.2.3" }] }),
      "",
      7,
      "invalid IP address: 1.2.3",
    ],
  ];
  for (const [config, args, code, msg] of cases) {
    const r = await run("ADD", config, args);
    assertEquals(
      [r.code, r.json?.code, r.json?.msg],
      [1, code, msg],
      JSON.stringify(config) + args,
    );
  }
});

Deno.test("static CHECK: prevResult required; a configured gateway must match", async () => {
  const config = conf("1.0.0", { addresses: ADDRESSES });
  const missing = await run("CHECK", config);
  assertEquals(missing.json!.msg, "Required prevResult missing");
  const wrong = await run("CHECK", {
    ...config,
    prevResult: {
      cniVersion: "1.0.0",
      ips: [{ address: "10.10.0.1/24", gateway: "10.10.0.1" }],
    },
  });
  assertEquals(wrong.json!.msg, "static: Failed to match addr 10.10.0.1 on interface eth0");
  // Addresses missing from prevResult pass, as in the reference.
  assertSuccess(
    await run("CHECK", {
      ...config,
      prevResult: {
        cniVersion: "1.0.0",
        ips: [{ address: "3ffe:ffff:0:1ff::1/64", gateway: "3ffe:ffff::1" }],
      },
    }),
  );
});

/** A result or an error text: comparable across implementations. */
function outcome(r: PluginRun): unknown {
  if (r.code !== 0) return { failed: r.json?.msg ?? r.stdout };
  if (!r.json) return r.stdout;
  // v1.1.1's libcni printed an empty `dns: {}` in 1.0.0 results; newer ones leave it out.
  const { dns, ...rest } = r.json as { dns?: Record<string, unknown>; cniVersion?: string };
  const emptyDns = String(rest.cniVersion).startsWith("1.") && dns && !Object.keys(dns).length;
  return emptyDns ? rest : r.json;
}

for (const version of ["0.1.0", "0.2.0", "0.3.1", "0.4.0", "1.0.0"]) {
  Deno.test({
    name: `static vs reference (cniVersion ${version})`,
    ignore: !haveReference,
    fn: async () => {
      const many = version >= "0.3.0";
      const cases: [Record<string, unknown>, string][] = [
        [conf(version, { addresses: ADDRESSES, routes: ROUTES, dns: DNS }), ""],
        [conf(version), ""],
        [
          conf(version, { addresses: [{ address: "10.0.0.5/24" }] }),
          "IP=10.1.0.5/24;GATEWAY=10.1.0.1",
        ],
        [
          conf(version),
          `IP=10.1.0.5/24${many ? ",10.1.1.5/16" : ""},2001:db8::5/64;GATEWAY=10.1.0.1,2001:db8::1`,
        ],
        [conf(version, { addresses: ADDRESSES }, { args: { cni: { ips: ["10.2.0.5/24"] } } }), ""],
        [
          conf(version, { addresses: ADDRESSES }, { runtimeConfig: { ips: ["10.3.0.5/24"] } }),
          "IP=10.9.0.9/24",
        ],
        [conf(version, { addresses: [{ address: "10.0.0.5" }] }), ""],
        [conf(version), "IP=10.0.0.5"],
        [conf(version), "IP=10.0.0.5/24;GATEWAY=x"],
        [conf(version), "FOO=1"],
        [conf(version, {}, { runtimeConfig: { ips: ["nope"] } }), ""],
        [
          conf(version, { addresses: [{ address: "10.0.0.5/24" }, { address: "10.0.1.5/24" }] }),
          "",
        ],
        [{ cniVersion: version, name: "static-net", type: "bridge" }, ""],
      ];
      for (const [config, args] of cases) {
        const [a, b] = await Promise.all([
          run("ADD", config, args),
          run("ADD", config, args, REFERENCE_BIN),
        ]);
        assertEquals(outcome(a), outcome(b), JSON.stringify(config) + args);
        if (version >= "0.4.0" && a.code === 0) {
          const withPrev = { ...config, prevResult: a.json };
          const [c, d] = await Promise.all([
            run("CHECK", withPrev, args),
            run("CHECK", withPrev, args, REFERENCE_BIN),
          ]);
          assertEquals(outcome(c), outcome(d), `CHECK ${JSON.stringify(config)}${args}`);
        }
      }
      const del = await Promise.all([
        run("DEL", conf(version)),
        run("DEL", conf(version), "", REFERENCE_BIN),
      ]);
      assertEquals(del.map(outcome), ["", ""]);
    },
  });
}
