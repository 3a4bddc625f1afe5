import { assert, assertEquals, assertMatch } from "../../helpers/assert.ts";
import { CniError } from "../../../lib/cni/errors.ts";
import { aboutText, type CmdArgs, type Plugin, runPlugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";
import { ALL_VERSIONS } from "../../../lib/cni/spec/version.ts";

/** A netns path that does not exist, so the own-netns guard never fires by accident. */
const NETNS = "/run/netns/cnikit-skel-test-absent";

const GOOD_CONF = { cniVersion: "1.1.0", name: "net1", type: "fake" };

/** What the fake plugin's ADD returns, in the 1.1.0 shape every handler uses. */
const RESULT: Result = {
  cniVersion: "1.1.0",
  interfaces: [{ name: "eth0", mac: "00:11:22:33:44:55", mtu: 1500, sandbox: NETNS }],
  ips: [
    { address: "10.1.2.3/24", gateway: "10.1.2.1", interface: 0 },
    { address: "2001:db8::3/64", interface: 0 },
  ],
  routes: [{ dst: "0.0.0.0/0", gw: "10.1.2.1" }],
  dns: { nameservers: ["10.1.2.1"] },
};

interface Call {
  verb: string;
  args: CmdArgs;
}

interface FakeOptions {
  versions?: string[];
  /** Thrown by every handler. */
  fail?: unknown;
  /** Leave out the optional handlers (check, gc, status). */
  minimal?: boolean;
  result?: Result;
}

/** A plugin whose handlers record what they received. */
function fakePlugin(options: FakeOptions = {}): { plugin: Plugin; calls: Call[] } {
  const calls: Call[] = [];
  const handler = (verb: string) => (args: CmdArgs) => {
    calls.push({ verb, args });
    if (options.fail !== undefined) return Promise.reject(options.fail);
    return Promise.resolve();
  };
  const plugin: Plugin = {
    name: "fake",
    ...(options.versions ? { versions: options.versions } : {}),
    add: async (args) => {
      await handler("ADD")(args);
      return structuredClone(options.result ?? RESULT);
    },
    del: handler("DEL"),
    ...(options.minimal
      ? {}
      : { check: handler("CHECK"), gc: handler("GC"), status: handler("STATUS") }),
  };
  return { plugin, calls };
}

/** The "good env" of the conformance cases, with `changes` applied (undefined removes). */
function env(command: string, changes: Record<string, string | undefined> = {}) {
  const all: Record<string, string | undefined> = {
    CNI_COMMAND: command,
    CNI_CONTAINERID: "ctr1",
    CNI_NETNS: NETNS,
    CNI_IFNAME: "eth0",
    CNI_PATH: "/opt/cni/bin",
    ...changes,
  };
  return Object.fromEntries(
    Object.entries(all).filter((e): e is [string, string] => e[1] !== undefined),
  );
}

interface Run {
  code: number;
  stdout: string;
  json: Record<string, unknown> | undefined;
  stdinReads: number;
}

/** Runs the plugin in-process; `stdin` is JSON-encoded unless it is a string. */
async function run(
  plugin: Plugin,
  environment: Record<string, string>,
  stdin: unknown = GOOD_CONF,
): Promise<Run> {
  let stdinReads = 0;
  const bytes = new TextEncoder().encode(typeof stdin === "string" ? stdin : JSON.stringify(stdin));
  const out = await runPlugin(plugin, {
    env: environment,
    readStdin: () => {
      stdinReads++;
      return Promise.resolve(bytes);
    },
  });
  let json: Record<string, unknown> | undefined;
  try {
    json = JSON.parse(out.stdout);
  } catch {
    json = undefined;
  }
  return { ...out, json, stdinReads };
}

/** Asserts a failure with `code` whose message contains `msg`; returns the error object. */
function assertCniError(r: Run, code: number, msg?: string): Record<string, unknown> {
  assertEquals(r.code, 1, r.stdout);
  assert(r.json, `stdout is not JSON: ${r.stdout}`);
  assertEquals(r.json.code, code, r.stdout);
  assertEquals(typeof r.json.msg, "string");
  if (msg !== undefined) assert((r.json.msg as string).includes(msg), r.stdout);
  return r.json;
}

function assertOk(r: Run): void {
  assertEquals(r.code, 0, r.stdout);
}

// --- VERSION and the about text -------------------------------------------------------------

Deno.test("runPlugin() answers VERSION with all seven versions without reading stdin", async () => {
  const { plugin, calls } = fakePlugin();
  const r = await run(plugin, { CNI_COMMAND: "VERSION" }, "{");
  assertOk(r);
  assertEquals(r.json, { cniVersion: "1.1.0", supportedVersions: [...ALL_VERSIONS] });
  assertEquals(r.stdinReads, 0);
  assertEquals(calls.length, 0);
});

Deno.test("runPlugin() answers VERSION with the plugin's own version list", async () => {
  const { plugin } = fakePlugin({ versions: ["1.0.0", "1.1.0"] });
  const r = await run(plugin, { CNI_COMMAND: "VERSION" });
  assertEquals(r.json, { cniVersion: "1.1.0", supportedVersions: ["1.0.0", "1.1.0"] });
});

Deno.test("runPlugin() ignores the attachment variables on VERSION", async () => {
  const { plugin } = fakePlugin();
  const r = await run(plugin, env("VERSION", { CNI_CONTAINERID: "bad%%id", CNI_IFNAME: "a/b" }));
  assertOk(r);
});

async function captureStderr(fn: () => Promise<void>): Promise<string> {
  const original = Deno.stderr.write;
  let text = "";
  Deno.stderr.write = (p: Uint8Array) => {
    text += new TextDecoder().decode(p);
    return Promise.resolve(p.length);
  };
  try {
    await fn();
  } finally {
    Deno.stderr.write = original;
  }
  return text;
}

for (const environment of [{}, { CNI_COMMAND: "" }] as Record<string, string>[]) {
  Deno.test(`runPlugin() with ${JSON.stringify(environment)} prints the about text on stderr and exits 0`, async () => {
    const { plugin, calls } = fakePlugin();
    let r: Run | undefined;
    const stderr = await captureStderr(async () => {
      r = await run(plugin, environment);
    });
    assertEquals(r!.code, 0);
    assertEquals(r!.stdout, "");
    assertEquals(r!.stdinReads, 0);
    assertEquals(calls.length, 0);
    assertEquals(stderr, aboutText(plugin));
    assertEquals(
      stderr,
      "CNI fake plugin cnikit 0.1.0\nCNI protocol versions supported: " +
        "0.1.0, 0.2.0, 0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0\n",
    );
  });
}

// --- the environment ----------------------------------------------------------------------

Deno.test("runPlugin() refuses an unknown verb with code 4", async () => {
  const { plugin, calls } = fakePlugin();
  const e = assertCniError(await run(plugin, env("NOPE")), 4);
  assertEquals(e.msg, "unknown CNI_COMMAND: NOPE");
  assertCniError(await run(plugin, env("add")), 4, "unknown CNI_COMMAND: add");
  assertEquals(calls.length, 0);
});

Deno.test("runPlugin() reports bad JSON (6) before an unknown verb", async () => {
  const { plugin } = fakePlugin();
  assertCniError(await run(plugin, env("NOPE"), "{"), 6, "error unmarshall network config");
});

for (const name of ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]) {
  for (const value of [undefined, ""]) {
    Deno.test(`runPlugin() ADD without ${name}${value === "" ? " (empty)" : ""} fails with code 4 naming it`, async () => {
      const { plugin, calls } = fakePlugin();
      const r = await run(plugin, env("ADD", { [name]: value }));
      const e = assertCniError(r, 4);
      assertEquals(e.msg, `required env variables [${name}] missing`);
      assertEquals(r.stdinReads, 0, "the environment is checked before stdin is read");
      assertEquals(calls.length, 0);
    });
  }
}

Deno.test("runPlugin() ADD lists several missing variables in env-table order", async () => {
  const { plugin } = fakePlugin();
  const cases: [Record<string, undefined>, string][] = [
    [{ CNI_NETNS: undefined, CNI_IFNAME: undefined }, "[CNI_NETNS,CNI_IFNAME]"],
    [
      { CNI_IFNAME: undefined, CNI_NETNS: undefined, CNI_PATH: undefined },
      "[CNI_NETNS,CNI_IFNAME,CNI_PATH]",
    ],
    [
      { CNI_CONTAINERID: undefined, CNI_NETNS: undefined, CNI_IFNAME: undefined },
      "[CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME]",
    ],
  ];
  for (const [changes, list] of cases) {
    const e = assertCniError(await run(plugin, env("ADD", changes)), 4);
    assertEquals(e.msg, `required env variables ${list} missing`);
  }
});

Deno.test("runPlugin() CHECK needs CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME and CNI_PATH", async () => {
  const { plugin } = fakePlugin();
  const conf = { ...GOOD_CONF, prevResult: RESULT };
  for (const name of ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]) {
    const e = assertCniError(await run(plugin, env("CHECK", { [name]: undefined }), conf), 4);
    assertEquals(e.msg, `required env variables [${name}] missing`);
  }
});

Deno.test("runPlugin() requires CNI_PATH for every verb but VERSION, as the Go skel does", async () => {
  for (const verb of ["ADD", "DEL", "CHECK", "GC", "STATUS"]) {
    const { plugin, calls } = fakePlugin();
    for (const path of [undefined, ""]) {
      const r = await run(plugin, env(verb, { CNI_PATH: path }), {
        ...GOOD_CONF,
        prevResult: RESULT,
      });
      const e = assertCniError(r, 4);
      assertEquals(e.msg, "required env variables [CNI_PATH] missing");
      assertEquals(r.stdinReads, 0, "the environment is checked before stdin is read");
    }
    assertEquals(calls.length, 0);
  }
  const { plugin } = fakePlugin();
  assertOk(await run(plugin, { CNI_COMMAND: "VERSION" }));
});

Deno.test("runPlugin() names every missing variable at once, CNI_PATH last", async () => {
  const { plugin } = fakePlugin();
  const cases: [string, string][] = [
    ["ADD", "[CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH]"],
    ["CHECK", "[CNI_CONTAINERID,CNI_NETNS,CNI_IFNAME,CNI_PATH]"],
    ["DEL", "[CNI_CONTAINERID,CNI_IFNAME,CNI_PATH]"],
    ["GC", "[CNI_PATH]"],
    ["STATUS", "[CNI_PATH]"],
  ];
  for (const [verb, list] of cases) {
    const e = assertCniError(await run(plugin, { CNI_COMMAND: verb }), 4);
    assertEquals(e.msg, `required env variables ${list} missing`);
  }
});

Deno.test("runPlugin() does not require CNI_ARGS", async () => {
  const { plugin, calls } = fakePlugin();
  assertOk(await run(plugin, env("ADD", { CNI_ARGS: undefined })));
  assertEquals(calls[0]!.args.args, "");
});

Deno.test("runPlugin() DEL succeeds without CNI_NETNS", async () => {
  const { plugin, calls } = fakePlugin();
  for (const netns of [undefined, ""]) {
    const r = await run(plugin, env("DEL", { CNI_NETNS: netns }));
    assertOk(r);
    assertEquals(r.stdout, "");
  }
  assertEquals(calls.map((c) => [c.verb, c.args.netns]), [["DEL", ""], ["DEL", ""]]);
});

Deno.test("runPlugin() DEL without CNI_CONTAINERID or CNI_IFNAME fails with code 4", async () => {
  const { plugin, calls } = fakePlugin();
  for (const name of ["CNI_CONTAINERID", "CNI_IFNAME"]) {
    const e = assertCniError(await run(plugin, env("DEL", { [name]: undefined })), 4);
    assertEquals(e.msg, `required env variables [${name}] missing`);
  }
  assertEquals(calls.length, 0);
});

Deno.test("runPlugin() GC and STATUS need only CNI_COMMAND and CNI_PATH", async () => {
  for (const verb of ["GC", "STATUS"]) {
    const { plugin, calls } = fakePlugin();
    const r = await run(plugin, { CNI_COMMAND: verb, CNI_PATH: "/opt/cni/bin" });
    assertOk(r);
    assertEquals(r.stdout, "");
    assertEquals(calls.length, 1);
  }
});

Deno.test("runPlugin() GC and STATUS do not validate attachment variables", async () => {
  const { plugin } = fakePlugin();
  for (const verb of ["GC", "STATUS"]) {
    assertOk(await run(plugin, env(verb, { CNI_CONTAINERID: "bad%%id", CNI_IFNAME: "a/b" })));
  }
});

// --- container ID, ifname, network name ----------------------------------------------------

for (const verb of ["ADD", "CHECK", "DEL"]) {
  Deno.test(`runPlugin() ${verb} refuses a bad container ID with code 4 and the ID in details`, async () => {
    const { plugin, calls } = fakePlugin();
    const r = await run(plugin, env(verb, { CNI_CONTAINERID: "some-%%container-id" }));
    const e = assertCniError(r, 4);
    assertEquals(e.msg, "invalid characters in containerID");
    assertEquals(e.details, "some-%%container-id");
    assertEquals(calls.length, 0);
  });
}

Deno.test("runPlugin() refuses container IDs that do not start with a letter or digit", async () => {
  const { plugin } = fakePlugin();
  for (const id of ["-abc", ".abc", "_abc", "a b", "a/b", "ä"]) {
    assertCniError(await run(plugin, env("ADD", { CNI_CONTAINERID: id })), 4, "containerID");
  }
  for (const id of ["a", "0", "abc-DEF_1.2", "a".repeat(200)]) {
    assertOk(await run(plugin, env("ADD", { CNI_CONTAINERID: id })));
  }
});

Deno.test("runPlugin() reports a bad container ID before variables missing further down", async () => {
  const { plugin } = fakePlugin();
  const r = await run(plugin, env("ADD", { CNI_CONTAINERID: "bad%%id", CNI_NETNS: undefined }));
  assertEquals(assertCniError(r, 4).msg, "invalid characters in containerID");
});

const BAD_IFNAMES: [string, string][] = [
  ["1234567890123456", "interface name is too long"],
  ["ééééééééé", "interface name is too long"],
  [".", "interface name is . or .."],
  ["..", "interface name is . or .."],
  ["a/b", "interface name contains / or : or whitespace characters"],
  ["a:b", "interface name contains / or : or whitespace characters"],
  ["a b", "interface name contains / or : or whitespace characters"],
  ["a\tb", "interface name contains / or : or whitespace characters"],
  ["eth0\n", "interface name contains / or : or whitespace characters"],
];
for (const [ifname, msg] of BAD_IFNAMES) {
  Deno.test(`runPlugin() refuses CNI_IFNAME ${JSON.stringify(ifname)} with code 4`, async () => {
    const { plugin, calls } = fakePlugin();
    for (const verb of ["ADD", "DEL"]) {
      const e = assertCniError(await run(plugin, env(verb, { CNI_IFNAME: ifname })), 4);
      assertEquals(e.msg, msg);
    }
    assertEquals(calls.length, 0);
  });
}

Deno.test("runPlugin() gives the length limit in the details of a too-long ifname", async () => {
  const { plugin } = fakePlugin();
  const e = assertCniError(await run(plugin, env("ADD", { CNI_IFNAME: "1234567890123456" })), 4);
  assertEquals(e.details, "interface name should be less than 16 characters");
});

Deno.test("runPlugin() accepts a 15-byte ifname and names with dots and dashes", async () => {
  const { plugin } = fakePlugin();
  for (const ifname of ["123456789012345", "eth0.100", "veth-a_b", "...", "a.", "é"]) {
    assertOk(await run(plugin, env("ADD", { CNI_IFNAME: ifname })));
  }
});

for (const bad of ["{", "", "not json", '{"name":"n",}']) {
  Deno.test(`runPlugin() refuses stdin ${JSON.stringify(bad)} as undecodable (6)`, async () => {
    const { plugin, calls } = fakePlugin();
    assertCniError(await run(plugin, env("ADD"), bad), 6, "error unmarshall network config");
    assertEquals(calls.length, 0);
  });
}

Deno.test("runPlugin() refuses JSON that is not an object, or a name that is not a string (6)", async () => {
  const { plugin } = fakePlugin();
  for (const stdin of ["[]", '"net1"', "5", '{"name":5}', '{"name":["n"]}']) {
    assertCniError(await run(plugin, env("ADD"), stdin), 6, "error unmarshall network config");
  }
});

Deno.test("runPlugin() refuses a config without network name with code 7", async () => {
  const { plugin } = fakePlugin();
  for (const conf of [{ cniVersion: "1.1.0", type: "x" }, { cniVersion: "1.1.0", name: "" }]) {
    const e = assertCniError(await run(plugin, env("ADD"), conf), 7);
    assertEquals(e.msg, "missing network name");
  }
});

Deno.test("runPlugin() refuses a bad network name with code 7 and the name in details", async () => {
  const { plugin } = fakePlugin();
  for (const name of ["te%%st", "-net", "a/b", "a b"]) {
    const e = assertCniError(await run(plugin, env("ADD"), { ...GOOD_CONF, name }), 7);
    assertEquals(e.msg, "invalid characters found in network name");
    assertEquals(e.details, name);
  }
});

Deno.test("runPlugin() reports a stdin read failure with code 5", async () => {
  const { plugin } = fakePlugin();
  const out = await runPlugin(plugin, {
    env: env("ADD"),
    readStdin: () => Promise.reject(new Error("broken pipe")),
  });
  assertEquals(out.code, 1);
  assertEquals(JSON.parse(out.stdout).code, 5);
  assertEquals(JSON.parse(out.stdout).msg, "error reading from stdin: broken pipe");
});

// --- versions --------------------------------------------------------------------------------

Deno.test("runPlugin() treats a config without cniVersion as 0.1.0", async () => {
  const { plugin, calls } = fakePlugin();
  const r = await run(plugin, env("ADD"), { name: "n" });
  assertOk(r);
  assertEquals(calls[0]!.args.cniVersion, "0.1.0");
  assertEquals(r.json, {
    cniVersion: "0.1.0",
    ip4: { ip: "10.1.2.3/24", gateway: "10.1.2.1", routes: [{ dst: "0.0.0.0/0", gw: "10.1.2.1" }] },
    ip6: { ip: "2001:db8::3/64" },
    dns: { nameservers: ["10.1.2.1"] },
  });
  assertOk(await run(plugin, env("ADD"), { name: "n", cniVersion: "" }));
});

Deno.test("runPlugin() refuses a missing cniVersion when the plugin lacks 0.1.0 (1)", async () => {
  const { plugin, calls } = fakePlugin({ versions: ["1.0.0", "1.1.0"] });
  const e = assertCniError(await run(plugin, env("ADD"), { name: "n" }), 1);
  assertEquals(e.msg, "incompatible CNI versions");
  assertEquals(e.details, 'config is "0.1.0", plugin supports ["1.0.0" "1.1.0"]');
  assertEquals(calls.length, 0);
});

Deno.test("runPlugin() refuses cniVersion 9.9.9 with code 1 and lists what it supports", async () => {
  const { plugin, calls } = fakePlugin();
  for (const verb of ["ADD", "DEL"]) {
    const e = assertCniError(
      await run(plugin, env(verb), { ...GOOD_CONF, cniVersion: "9.9.9" }),
      1,
    );
    assertEquals(e.msg, "incompatible CNI versions");
    assertEquals(
      e.details,
      'config is "9.9.9", plugin supports ["0.1.0" "0.2.0" "0.3.0" "0.3.1" "0.4.0" "1.0.0" "1.1.0"]',
    );
    assertEquals(e.cniVersion, "1.1.0", "an unknown version is not echoed back");
  }
  assertEquals(calls.length, 0);
});

Deno.test("runPlugin() refuses a malformed cniVersion on ADD with code 1", async () => {
  const { plugin } = fakePlugin();
  const e = assertCniError(await run(plugin, env("ADD"), { ...GOOD_CONF, cniVersion: "adsf" }), 1);
  assertEquals(e.cniVersion, "1.1.0");
});

Deno.test("runPlugin() refuses a cniVersion that is not a string with code 6", async () => {
  const { plugin } = fakePlugin();
  assertCniError(await run(plugin, env("ADD"), { ...GOOD_CONF, cniVersion: 1 }), 6);
});

Deno.test("runPlugin() CHECK on 0.3.1 (or older) fails: config version does not allow CHECK", async () => {
  const { plugin, calls } = fakePlugin();
  for (const cniVersion of ["0.3.1", "0.3.0", "0.2.0", undefined]) {
    const e = assertCniError(await run(plugin, env("CHECK"), { name: "n", cniVersion }), 1);
    assertEquals(e.msg, "config version does not allow CHECK");
  }
  assertEquals(calls.length, 0);
});

Deno.test("runPlugin() CHECK with a malformed cniVersion fails with code 6", async () => {
  const { plugin } = fakePlugin();
  for (const cniVersion of ["adsf", "1.2.3.4", "0."]) {
    assertCniError(await run(plugin, env("CHECK"), { ...GOOD_CONF, cniVersion }), 6);
  }
});

Deno.test("runPlugin() CHECK runs on 0.4.0 and later, and prints nothing", async () => {
  for (const cniVersion of ["0.4.0", "1.0.0", "1.1.0"]) {
    const { plugin, calls } = fakePlugin();
    const r = await run(plugin, env("CHECK"), { ...GOOD_CONF, cniVersion });
    assertOk(r);
    assertEquals(r.stdout, "");
    assertEquals(calls.map((c) => c.verb), ["CHECK"]);
  }
});

Deno.test("runPlugin() CHECK succeeds when the plugin has no check handler", async () => {
  const { plugin } = fakePlugin({ minimal: true });
  assertOk(await run(plugin, env("CHECK")));
});

for (const verb of ["GC", "STATUS"]) {
  Deno.test(`runPlugin() ${verb} on 1.0.0 or older fails: config version does not allow ${verb}`, async () => {
    const { plugin, calls } = fakePlugin();
    for (const cniVersion of ["1.0.0", "0.4.0", undefined]) {
      const e = assertCniError(
        await run(plugin, { CNI_COMMAND: verb, CNI_PATH: "/opt/cni/bin" }, {
          name: "n",
          cniVersion,
        }),
        1,
      );
      assertEquals(e.msg, `config version does not allow ${verb}`);
    }
    assertCniError(
      await run(plugin, { CNI_COMMAND: verb, CNI_PATH: "/opt/cni/bin" }, {
        ...GOOD_CONF,
        cniVersion: "x",
      }),
      6,
    );
    assertEquals(calls.length, 0);
  });

  Deno.test(`runPlugin() ${verb} succeeds silently when the plugin has no handler`, async () => {
    const { plugin, calls } = fakePlugin({ minimal: true });
    const r = await run(plugin, { CNI_COMMAND: verb, CNI_PATH: "/opt/cni/bin" }, GOOD_CONF);
    assertOk(r);
    assertEquals(r.stdout, "");
    assertEquals(calls.length, 0);
  });
}

Deno.test("runPlugin() STATUS passes a plugin's code 50 through", async () => {
  const { plugin } = fakePlugin({ fail: new CniError(50, "daemon down") });
  const e = assertCniError(
    await run(plugin, { CNI_COMMAND: "STATUS", CNI_PATH: "/opt/cni/bin" }),
    50,
  );
  assertEquals(e.msg, "daemon down");
});

// --- GC attachments --------------------------------------------------------------------------

const ATTACHMENTS = [{ containerID: "c1", ifname: "eth0" }, { containerID: "c2", ifname: "net1" }];

Deno.test("runPlugin() GC hands cni.dev/valid-attachments to the handler", async () => {
  const { plugin, calls } = fakePlugin();
  const conf = { ...GOOD_CONF, "cni.dev/valid-attachments": ATTACHMENTS };
  const r = await run(plugin, { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" }, conf);
  assertOk(r);
  assertEquals(r.stdout, "");
  assertEquals(calls[0]!.args.validAttachments, ATTACHMENTS);
});

Deno.test("runPlugin() GC accepts the tagged spec's cni.dev/attachments", async () => {
  const { plugin, calls } = fakePlugin();
  const conf = { ...GOOD_CONF, "cni.dev/attachments": ATTACHMENTS };
  assertOk(await run(plugin, { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" }, conf));
  assertEquals(calls[0]!.args.validAttachments, ATTACHMENTS);
});

Deno.test("runPlugin() GC reads null, [] or a missing list as no valid attachments", async () => {
  const { plugin, calls } = fakePlugin();
  for (
    const extra of [
      { "cni.dev/valid-attachments": null },
      { "cni.dev/valid-attachments": [] },
      { "cni.dev/attachments": null },
      {},
    ]
  ) {
    assertOk(
      await run(plugin, { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" }, {
        ...GOOD_CONF,
        ...extra,
      }),
    );
  }
  assertEquals(calls.map((c) => c.args.validAttachments), [[], [], [], []]);
});

Deno.test("runPlugin() GC refuses a malformed attachment list with code 6", async () => {
  const { plugin, calls } = fakePlugin();
  for (const list of [[{ containerID: "c1" }], "c1", [{ containerID: 1, ifname: "eth0" }]]) {
    const conf = { ...GOOD_CONF, "cni.dev/valid-attachments": list };
    assertCniError(await run(plugin, { CNI_COMMAND: "GC", CNI_PATH: "/opt/cni/bin" }, conf), 6);
  }
  assertEquals(calls.length, 0);
});

// --- results and prevResult -----------------------------------------------------------------

const EXPECTED_BY_VERSION: Record<string, (v: string) => unknown> = {
  "0.2": (v) => ({
    cniVersion: v,
    ip4: { ip: "10.1.2.3/24", gateway: "10.1.2.1", routes: [{ dst: "0.0.0.0/0", gw: "10.1.2.1" }] },
    ip6: { ip: "2001:db8::3/64" },
    dns: { nameservers: ["10.1.2.1"] },
  }),
  "0.4": (v) => ({
    cniVersion: v,
    interfaces: [{ name: "eth0", mac: "00:11:22:33:44:55", sandbox: NETNS }],
    ips: [
      { version: "4", address: "10.1.2.3/24", gateway: "10.1.2.1", interface: 0 },
      { version: "6", address: "2001:db8::3/64", interface: 0 },
    ],
    routes: [{ dst: "0.0.0.0/0", gw: "10.1.2.1" }],
    dns: { nameservers: ["10.1.2.1"] },
  }),
  "1.x": (v) => ({ ...structuredClone(RESULT), cniVersion: v }),
};

for (const version of ALL_VERSIONS) {
  Deno.test(`runPlugin() prints the ADD result in the config's version ${version}`, async () => {
    const { plugin, calls } = fakePlugin();
    const r = await run(plugin, env("ADD"), { ...GOOD_CONF, cniVersion: version });
    assertOk(r);
    assertEquals(calls[0]!.args.cniVersion, version);
    const family = version < "0.3.0" ? "0.2" : version < "1.0.0" ? "0.4" : "1.x";
    assertEquals(r.json, EXPECTED_BY_VERSION[family]!(version));
    assertEquals(r.stdout, JSON.stringify(r.json, null, 4), "4-space indented");
  });
}

Deno.test("runPlugin() leaves an empty dns out of 1.x results and prints {} in 0.4.0", async () => {
  const { dns: _, ...noDns } = RESULT;
  const { plugin } = fakePlugin({ result: noDns });
  const r1 = await run(plugin, env("ADD"));
  assert(!("dns" in r1.json!));
  const r04 = await run(plugin, env("ADD"), { ...GOOD_CONF, cniVersion: "0.4.0" });
  assertEquals(r04.json!.dns, {});
});

Deno.test("runPlugin() fails an ADD whose result cannot be written in the config's version", async () => {
  const { plugin } = fakePlugin({
    result: { cniVersion: "1.1.0", interfaces: [{ name: "eth0" }] },
  });
  const e = assertCniError(
    await run(plugin, env("ADD"), { ...GOOD_CONF, cniVersion: "0.2.0" }),
    1,
    "cannot convert: no valid IP addresses",
  );
  assertEquals(e.cniVersion, "0.2.0");
});

Deno.test("runPlugin() hands the handler prevResult in the 1.1.0 shape", async () => {
  const prev04 = {
    cniVersion: "0.4.0",
    interfaces: [{ name: "eth0", sandbox: NETNS }],
    ips: [{ version: "4", address: "10.1.2.3/24", gateway: "10.1.2.1", interface: 0 }],
    routes: [{ dst: "0.0.0.0/0" }],
    dns: {},
  };
  const { plugin, calls } = fakePlugin();
  for (const verb of ["ADD", "CHECK", "DEL"]) {
    assertOk(
      await run(plugin, env(verb), { ...GOOD_CONF, cniVersion: "0.4.0", prevResult: prev04 }),
    );
  }
  for (const call of calls) {
    assertEquals(call.args.prevResult, {
      cniVersion: "1.1.0",
      interfaces: [{ name: "eth0", sandbox: NETNS }],
      ips: [{ address: "10.1.2.3/24", gateway: "10.1.2.1", interface: 0 }],
      routes: [{ dst: "0.0.0.0/0" }],
      dns: {},
    }, call.verb);
  }
});

Deno.test("runPlugin() reads a prevResult without cniVersion in the config's version", async () => {
  const { plugin, calls } = fakePlugin();
  const conf = { name: "n", cniVersion: "0.2.0", prevResult: { ip4: { ip: "10.1.2.3/24" } } };
  assertOk(await run(plugin, env("ADD"), conf));
  assertEquals(JSON.parse(JSON.stringify(calls[0]!.args.prevResult)), {
    cniVersion: "1.1.0",
    ips: [{ address: "10.1.2.3/24" }],
    routes: [],
    dns: {},
  });
});

Deno.test("runPlugin() accepts a prevResult of another version with the same shape", async () => {
  const { plugin, calls } = fakePlugin();
  const conf = { ...GOOD_CONF, cniVersion: "1.0.0", prevResult: RESULT };
  assertOk(await run(plugin, env("ADD"), conf));
  assertEquals(calls[0]!.args.prevResult, RESULT);
});

Deno.test("runPlugin() passes no prevResult when it is absent or null", async () => {
  const { plugin, calls } = fakePlugin();
  assertOk(await run(plugin, env("DEL")));
  assertOk(await run(plugin, env("DEL"), { ...GOOD_CONF, prevResult: null }));
  assertEquals(calls.map((c) => "prevResult" in c.args), [false, false]);
});

Deno.test("runPlugin() refuses a prevResult whose version does not match the config's", async () => {
  const { plugin, calls } = fakePlugin();
  const conf = {
    ...GOOD_CONF,
    cniVersion: "1.1.0",
    prevResult: { cniVersion: "0.2.0", ip4: { ip: "10.1.2.3/24" } },
  };
  const e = assertCniError(await run(plugin, env("ADD"), conf), 6, "prevResult");
  assertMatch(e.msg as string, /"0\.2\.0"/);
  assertCniError(
    await run(plugin, env("ADD"), { ...conf, prevResult: { cniVersion: "5678.456" } }),
    6,
    "unsupported CNI result version",
  );
  assertEquals(calls.length, 0);
});

const BAD_PREV_RESULTS = [
  { cniVersion: "1.1.0", ips: [{ address: "10.0.0.0/33" }] },
  { cniVersion: "0.2.0", ip4: { ip: "10.1.2.3/24" } },
  { ips: "x" },
  "x",
  [1],
  5,
];

Deno.test("runPlugin() refuses an undecodable prevResult with code 6 on ADD and CHECK", async () => {
  const { plugin, calls } = fakePlugin();
  for (const prevResult of BAD_PREV_RESULTS) {
    for (const verb of ["ADD", "CHECK"]) {
      assertCniError(await run(plugin, env(verb), { ...GOOD_CONF, prevResult }), 6);
    }
  }
  assertEquals(calls.length, 0);
});

Deno.test("runPlugin() DEL runs without a prevResult it cannot decode: cleanup must not depend on it", async () => {
  const { plugin, calls } = fakePlugin();
  for (const prevResult of BAD_PREV_RESULTS) {
    const r = await run(plugin, env("DEL"), { ...GOOD_CONF, prevResult });
    assertOk(r);
    assertEquals(r.stdout, "");
  }
  assertEquals(
    calls.map((c) => [c.verb, "prevResult" in c.args]),
    BAD_PREV_RESULTS.map(() => [
      "DEL",
      false,
    ]),
  );
});

// --- what the handler gets -------------------------------------------------------------------

Deno.test("runPlugin() hands the handler the environment, the raw stdin and the parsed config", async () => {
  const { plugin, calls } = fakePlugin();
  const environment = env("ADD", {
    CNI_ARGS: "IgnoreUnknown=1;K8S_POD_NAME=p",
    CNI_PATH: "/opt/cni/bin::/usr/lib/cni",
  });
  const stdin = '{"cniVersion":"1.0.0","name":"net1","type":"fake","extra":{"a":1}}';
  assertOk(await run(plugin, environment, stdin));
  const args = calls[0]!.args;
  assertEquals(args.command, "ADD");
  assertEquals(args.containerId, "ctr1");
  assertEquals(args.netns, NETNS);
  assertEquals(args.ifname, "eth0");
  assertEquals(args.args, "IgnoreUnknown=1;K8S_POD_NAME=p");
  assertEquals(args.path, ["/opt/cni/bin", "/usr/lib/cni"]);
  assertEquals(new TextDecoder().decode(args.stdin), stdin);
  assertEquals(args.config, JSON.parse(stdin));
  assertEquals(args.cniVersion, "1.0.0");
  assertEquals(args.env, environment);
  assert(!("prevResult" in args));
  assert(!("validAttachments" in args));
});

// --- errors ----------------------------------------------------------------------------------

Deno.test("runPlugin() passes a handler's CniError code and details through", async () => {
  for (const verb of ["ADD", "DEL", "CHECK", "GC", "STATUS"]) {
    const { plugin } = fakePlugin({ fail: new CniError(1234, "custom failure", "why") });
    const e = assertCniError(await run(plugin, env(verb)), 1234);
    assertEquals(e, { cniVersion: "1.1.0", code: 1234, msg: "custom failure", details: "why" });
  }
});

Deno.test("runPlugin() reports an untyped handler error as code 999", async () => {
  for (const fail of [new Error("kaboom"), new TypeError("kaboom"), "kaboom"]) {
    const { plugin } = fakePlugin({ fail });
    const e = assertCniError(await run(plugin, env("ADD")), 999);
    assertEquals(e, { cniVersion: "1.1.0", code: 999, msg: "kaboom" });
  }
});

Deno.test("runPlugin() prints the error object 4-space indented with cniVersion, code, msg, details", async () => {
  const { plugin } = fakePlugin({ fail: new CniError(7, "bad", "detail") });
  const r = await run(plugin, env("ADD"), { ...GOOD_CONF, cniVersion: "0.4.0" });
  assertEquals(r.code, 1);
  assertEquals(
    r.stdout,
    '{\n    "cniVersion": "0.4.0",\n    "code": 7,\n    "msg": "bad",\n    "details": "detail"\n}',
  );
});

Deno.test("runPlugin() labels errors found before the config is read with the newest version", async () => {
  const { plugin } = fakePlugin();
  const e = assertCniError(await run(plugin, env("ADD", { CNI_IFNAME: undefined })), 4);
  assertEquals(e, {
    cniVersion: "1.1.0",
    code: 4,
    msg: "required env variables [CNI_IFNAME] missing",
  });
});

// --- the own-netns guard ---------------------------------------------------------------------

for (const verb of ["ADD", "DEL"]) {
  Deno.test(`runPlugin() ${verb} refuses the plugin's own netns with code 8`, async () => {
    const { plugin, calls } = fakePlugin();
    const e = assertCniError(await run(plugin, env(verb, { CNI_NETNS: "/proc/self/ns/net" })), 8);
    assertEquals(e.msg, "plugin's netns and netns from CNI_NETNS should not be the same");
    assertEquals(calls.length, 0, "the handler must not run in the host's netns");
  });
}

for (const override of ["1", "true", "TRUE", "True"]) {
  Deno.test(`runPlugin() CNI_NETNS_OVERRIDE=${override} turns the own-netns guard off`, async () => {
    const { plugin, calls } = fakePlugin();
    for (const verb of ["ADD", "DEL"]) {
      const environment = env(verb, {
        CNI_NETNS: "/proc/self/ns/net",
        CNI_NETNS_OVERRIDE: override,
      });
      assertOk(await run(plugin, environment));
    }
    assertEquals(calls.map((c) => c.verb), ["ADD", "DEL"]);
  });
}

Deno.test("runPlugin() keeps the own-netns guard for other CNI_NETNS_OVERRIDE values", async () => {
  const { plugin } = fakePlugin();
  for (const override of ["0", "false", "yes", ""]) {
    const environment = env("ADD", {
      CNI_NETNS: "/proc/self/ns/net",
      CNI_NETNS_OVERRIDE: override,
    });
    assertCniError(await run(plugin, environment), 8);
  }
});
