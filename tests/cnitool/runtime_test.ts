/**
 * The runtime (cnitool/runtime.ts) against in-memory fake plugins plugged
 * into its exec seam, which record their environment and stdin: libcni's
 * list operations, request building, cache use, error texts and codes, GC
 * and STATUS (cni-spec.md §3C). How plugins run as processes (deadlines,
 * in-process applets) is tested in tests/lib/cni/invoke_test.ts.
 */

import { assert, assertEquals, assertMatch, assertRejects } from "../helpers/assert.ts";
import { type FakeAnswer, FakeExec } from "../helpers/fake_exec.ts";
import { CniError } from "../../lib/cni/errors.ts";
import { parseResult, resultToJSON } from "../../lib/cni/spec/convert.ts";
import { networkConfFromBytes, type NetworkConfigList } from "../../cnitool/config.ts";
import { CniRuntime } from "../../cnitool/runtime.ts";
import type { RuntimeConf } from "../../cnitool/types.ts";

const BASE_ENV = { PATH: "/usr/bin:/bin" };

interface Fixture {
  fake: FakeExec;
  runtime: CniRuntime;
  cacheDir: string;
}

async function withFake(
  names: string[],
  fn: (f: Fixture) => Promise<void>,
  options: { env?: Record<string, string> } = {},
): Promise<void> {
  const fake = new FakeExec(...names);
  const cacheDir = Deno.makeTempDirSync({ prefix: "cnikit-cache-" });
  const runtime = new CniRuntime({
    path: [fake.bin],
    cacheDir,
    env: options.env ?? BASE_ENV,
    exec: fake,
  });
  try {
    await fn({ fake, runtime, cacheDir });
  } finally {
    Deno.removeSync(cacheDir, { recursive: true });
  }
}

function listOf(conf: Record<string, unknown>): NetworkConfigList {
  return networkConfFromBytes(new TextEncoder().encode(JSON.stringify(conf)));
}

function rtOf(extra: Partial<RuntimeConf> = {}): RuntimeConf {
  return { containerId: "some-container-id", netns: "/some/netns/path", ifname: "eth0", ...extra };
}

function cachePath(cacheDir: string, net: string, rt: RuntimeConf): string {
  return `${cacheDir}/results/${net}-${rt.containerId}-${rt.ifname}`;
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** A result of `version` with one IPv4 address, in that version's shape. */
function resultWith(version: string, address: string): Record<string, unknown> {
  if (version === "0.1.0" || version === "0.2.0") {
    return { cniVersion: version, ip4: { ip: address } };
  }
  const ip = version.startsWith("0.") ? { version: "4", address } : { address };
  return { cniVersion: version, ips: [ip], dns: {} };
}

/** The JSON libcni sends for a result: decoded in its version, re-encoded. */
function asSent(value: Record<string, unknown>): Record<string, unknown> {
  return resultToJSON(parseResult(value));
}

function chain(version: string, extra: Record<string, unknown> = {}): NetworkConfigList {
  return listOf({
    cniVersion: version,
    name: "some-list",
    plugins: [
      {
        type: "a",
        "some-key": "a",
        capabilities: { portMappings: true, otherCapability: true },
      },
      { type: "b", "some-key": "b" },
      { type: "c", "some-key": "c" },
    ],
    ...extra,
  });
}

function answerChain(fake: FakeExec, version: string): void {
  fake.respond("a", "ADD", { stdout: resultWith(version, "10.0.0.1/24") });
  fake.respond("b", "ADD", { stdout: resultWith(version, "10.0.0.2/24") });
  fake.respond("c", "ADD", { stdout: resultWith(version, "10.0.0.3/24") });
}

const PORTS = [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }];

for (const version of ["0.2.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]) {
  Deno.test(`ADD runs a chain of 3 in order, passing each result on (${version})`, () =>
    withFake(["a", "b", "c"], async ({ fake, runtime, cacheDir }) => {
      answerChain(fake, version);
      const rt = rtOf({ args: [["DEBUG", "/x"]], capabilityArgs: { portMappings: PORTS } });
      const result = await runtime.addNetworkList(chain(version), rt);
      const calls = fake.calls();
      assertEquals(calls.map((c) => c.plugin), ["a", "b", "c"]);
      for (const call of calls) {
        const { CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH } =
          call.env;
        assertEquals(
          [CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS, CNI_PATH],
          ["ADD", "some-container-id", "/some/netns/path", "eth0", "DEBUG=/x", fake.bin],
        );
        assertEquals(call.stdin.name, "some-list");
        assertEquals(call.stdin.cniVersion, version);
        assertEquals(call.stdin["some-key"], call.plugin);
      }
      assertEquals(calls[0]!.stdin.prevResult, undefined);
      assertEquals(calls[1]!.stdin.prevResult, asSent(resultWith(version, "10.0.0.1/24")));
      assertEquals(calls[2]!.stdin.prevResult, asSent(resultWith(version, "10.0.0.2/24")));
      assertEquals(resultToJSON(result!), asSent(resultWith(version, "10.0.0.3/24")));
      assertEquals(calls[0]!.stdin.runtimeConfig, { portMappings: PORTS });
      assertEquals(calls[1]!.stdin.runtimeConfig, undefined);
      assert(exists(cachePath(cacheDir, "some-list", rt)));
    }));
}

Deno.test("ADD request: keys sorted and compact as Go marshals them", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime }) => {
    answerChain(fake, "1.0.0");
    await runtime.addNetworkList(chain("1.0.0"), rtOf());
    assertEquals(
      fake.calls()[0]!.stdinText,
      '{"capabilities":{"otherCapability":true,"portMappings":true},"cniVersion":"1.0.0",' +
        '"name":"some-list","some-key":"a","type":"a"}',
    );
  }));

Deno.test("capabilities: only enabled ones the runtime supplies reach runtimeConfig", () =>
  withFake(["a"], async ({ fake, runtime }) => {
    const list = listOf({
      cniVersion: "1.0.0",
      name: "caps",
      plugins: [{
        type: "a",
        capabilities: { portMappings: true, somethingElse: true, noCapability: false },
      }],
    });
    await runtime.addNetworkList(
      list,
      rtOf({
        capabilityArgs: {
          portMappings: PORTS,
          somethingElse: [1, 2],
          noCapability: true,
          notAdded: ["x"],
        },
      }),
    );
    assertEquals(fake.calls()[0]!.stdin.runtimeConfig, {
      portMappings: PORTS,
      somethingElse: [1, 2],
    });
    fake.clearCalls();
    await runtime.addNetworkList(list, rtOf({ capabilityArgs: { notAdded: ["x"] } }));
    assert(!("runtimeConfig" in fake.calls()[0]!.stdin));
  }));

Deno.test("capabilities: runtimeConfig replaces the file's only when something intersects", () =>
  withFake(["a"], async ({ fake, runtime }) => {
    const list = listOf({
      cniVersion: "1.0.0",
      name: "caps",
      plugins: [{ type: "a", capabilities: { mac: true }, runtimeConfig: { fromFile: 1 } }],
    });
    await runtime.addNetworkList(list, rtOf());
    assertEquals(fake.calls()[0]!.stdin.runtimeConfig, { fromFile: 1 });
    await runtime.addNetworkList(list, rtOf({ capabilityArgs: { mac: "aa:bb:cc:dd:ee:ff" } }));
    assertEquals(fake.calls()[1]!.stdin.runtimeConfig, { mac: "aa:bb:cc:dd:ee:ff" });
  }));

Deno.test("DEL runs in reverse with the cached result as prevResult, then drops the cache", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime, cacheDir }) => {
    answerChain(fake, "1.1.0");
    // The last plugin answers in an older version: DEL converts the cache.
    fake.respond("c", "ADD", { stdout: resultWith("0.4.0", "10.0.0.3/24") });
    const rt = rtOf({ capabilityArgs: { portMappings: PORTS } });
    await runtime.addNetworkList(chain("1.1.0"), rt);
    fake.clearCalls();
    await runtime.delNetworkList(chain("1.1.0"), rt);
    const calls = fake.calls();
    assertEquals(calls.map((c) => `${c.plugin}:${c.command}`), ["c:DEL", "b:DEL", "a:DEL"]);
    const expected = { cniVersion: "1.1.0", ips: [{ address: "10.0.0.3/24" }] };
    for (const call of calls) assertEquals(call.stdin.prevResult, expected);
    assertEquals(calls[2]!.stdin.runtimeConfig, { portMappings: PORTS });
    assert(!exists(cachePath(cacheDir, "some-list", rt)));
  }));

Deno.test("DEL on a 0.3.1 list sends no prevResult", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime }) => {
    answerChain(fake, "0.3.1");
    await runtime.addNetworkList(chain("0.3.1"), rtOf());
    fake.clearCalls();
    await runtime.delNetworkList(chain("0.3.1"), rtOf());
    for (const call of fake.calls()) assert(!("prevResult" in call.stdin));
  }));

Deno.test("DEL with a corrupt cache succeeds without prevResult and removes the file", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime, cacheDir }) => {
    const rt = rtOf();
    const path = cachePath(cacheDir, "some-list", rt);
    Deno.mkdirSync(`${cacheDir}/results`, { recursive: true });
    Deno.writeTextFileSync(path, "adfadsfasdfasfdsafaf");
    await runtime.delNetworkList(chain("1.0.0"), rt);
    assertEquals(fake.log(), ["c:DEL", "b:DEL", "a:DEL"]);
    for (const call of fake.calls()) assert(!("prevResult" in call.stdin));
    assert(!exists(path));
  }));

Deno.test("DEL twice: the second has no cache and no prevResult, and succeeds", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime }) => {
    answerChain(fake, "1.0.0");
    await runtime.addNetworkList(chain("1.0.0"), rtOf());
    await runtime.delNetworkList(chain("1.0.0"), rtOf());
    fake.clearCalls();
    await runtime.delNetworkList(chain("1.0.0"), rtOf());
    assertEquals(fake.calls().length, 3);
    for (const call of fake.calls()) assert(!("prevResult" in call.stdin));
  }));

Deno.test("DEL failing in the middle: wrapped error, code kept, cache kept", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime, cacheDir }) => {
    answerChain(fake, "1.0.0");
    await runtime.addNetworkList(chain("1.0.0"), rtOf());
    fake.respond("b", "DEL", { stdout: { code: 11, msg: "try later", details: "busy" }, exit: 1 });
    fake.clearCalls();
    const err = await assertRejects(() => runtime.delNetworkList(chain("1.0.0"), rtOf()));
    assertEquals(String(err), 'plugin type="b" failed (delete): try later; busy');
    assertEquals((err as CniError).code, 11);
    assertEquals(fake.log(), ["c:DEL", "b:DEL"]);
    assert(exists(cachePath(cacheDir, "some-list", rtOf())));
  }));

Deno.test("CHECK on a 0.3.1 list fails before any plugin runs, even with disableCheck", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime }) => {
    for (const extra of [{}, { disableCheck: true }]) {
      const err = await assertRejects(() =>
        runtime.checkNetworkList(chain("0.3.1", extra), rtOf())
      );
      assertEquals(err.message, 'configuration version "0.3.1" does not support the CHECK command');
    }
    const noVersion = await assertRejects(() => runtime.checkNetworkList(chain(""), rtOf()));
    assertMatch(noVersion.message, /configuration version "" does not support the CHECK/);
    assertEquals(fake.calls(), []);
  }));

Deno.test("CHECK with disableCheck runs nothing", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime }) => {
    await runtime.checkNetworkList(chain("1.0.0", { disableCheck: "TRUE" }), rtOf());
    assertEquals(fake.calls(), []);
  }));

Deno.test("CHECK gives every plugin the same cached result, in list order", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime }) => {
    answerChain(fake, "0.4.0");
    await runtime.addNetworkList(chain("0.4.0"), rtOf());
    fake.clearCalls();
    await runtime.checkNetworkList(chain("0.4.0"), rtOf());
    assertEquals(fake.log(), ["a:CHECK", "b:CHECK", "c:CHECK"]);
    for (const call of fake.calls()) {
      assertEquals(call.stdin.prevResult, asSent(resultWith("0.4.0", "10.0.0.3/24")));
      assert(!("kind" in call.stdin) && !("config" in call.stdin));
    }
  }));

Deno.test("CHECK cache handling: missing, garbage, convertible, unknown version, legacy", () =>
  withFake(["a"], async ({ fake, runtime, cacheDir }) => {
    const list = listOf({ cniVersion: "1.1.0", name: "apitest", plugins: [{ type: "a" }] });
    const path = cachePath(cacheDir, "apitest", rtOf());
    await runtime.checkNetworkList(list, rtOf());
    assert(!("prevResult" in fake.calls()[0]!.stdin));

    Deno.mkdirSync(`${cacheDir}/results`, { recursive: true });
    Deno.writeTextFileSync(path, "adfadsfasdfasfdsafaf");
    const garbage = await assertRejects(() => runtime.checkNetworkList(list, rtOf()));
    assertMatch(
      garbage.message,
      /^failed to get network "apitest" cached result: decoding version from network config: /,
    );

    Deno.writeTextFileSync(
      path,
      '{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.1.2.3/24"}],"dns":{}}',
    );
    fake.clearCalls();
    await runtime.checkNetworkList(list, rtOf());
    assertEquals(fake.calls()[0]!.stdin.prevResult, {
      cniVersion: "1.1.0",
      ips: [{ address: "10.1.2.3/24" }],
    });

    Deno.writeTextFileSync(
      path,
      '{"cniVersion":"0.4567.0","ips":[{"version":"4","address":"10.1.2.3/24"}],"dns":{}}',
    );
    const unknown = await assertRejects(() => runtime.checkNetworkList(list, rtOf()));
    assertEquals(
      unknown.toString(),
      'failed to get network "apitest" cached result: unsupported CNI result version "0.4567.0"',
    );
  }));

Deno.test("ADD failing in the middle: error text and code kept, no cache, no DEL", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime, cacheDir }) => {
    answerChain(fake, "1.0.0");
    fake.respond("b", "ADD", { stdout: { code: 100, msg: "plugin error: banana" }, exit: 1 });
    const err = await assertRejects(() => runtime.addNetworkList(chain("1.0.0"), rtOf()));
    assertEquals(err.message, 'plugin type="b" failed (add): plugin error: banana');
    assertEquals((err as CniError).code, 100);
    assertEquals(fake.log(), ["a:ADD", "b:ADD"]);
    assert(!exists(cachePath(cacheDir, "some-list", rtOf())));
  }));

Deno.test("ADD error names a plugin-level name too, as libcni's description does", () =>
  withFake(["a"], async ({ fake, runtime }) => {
    fake.respond("a", "ADD", { stdout: { code: 7, msg: "bad" }, exit: 1 });
    const list = listOf({ cniVersion: "1.0.0", name: "n", plugins: [{ type: "a", name: "p1" }] });
    const err = await assertRejects(() => runtime.addNetworkList(list, rtOf()));
    assertEquals(err.message, 'plugin type="a" name="p1" failed (add): bad');
  }));

Deno.test("ADD validates container ID, network name and ifname before running anything", () =>
  withFake(["a"], async ({ fake, runtime }) => {
    const cases: [NetworkConfigList, RuntimeConf, number, string][] = [
      [
        chain1(),
        rtOf({ containerId: "some-%%container-id" }),
        4,
        "invalid characters in containerID",
      ],
      [chain1(), rtOf({ containerId: "" }), 3, "missing containerID"],
      [chain1("invalid-%%-name"), rtOf(), 7, "invalid characters found in network name"],
      [chain1(), rtOf({ ifname: "" }), 4, "interface name is empty"],
      [chain1(), rtOf({ ifname: "a-very-long-ifname" }), 4, "interface name is too long"],
      [chain1(), rtOf({ ifname: "a/b" }), 4, "interface name contains / or :"],
    ];
    for (const [list, rt, code, text] of cases) {
      const err = await assertRejects(() => runtime.addNetworkList(list, rt));
      assertEquals((err as CniError).code, code, err.message);
      assert(err.message.startsWith(`plugin type="a" failed (add): ${text}`), err.message);
    }
    assertEquals(fake.calls(), []);
  }));

function chain1(name = "net1", version = "1.0.0"): NetworkConfigList {
  return listOf({ cniVersion: version, name, plugins: [{ type: "a" }] });
}

Deno.test("plugin lookup: missing, path-like names, no paths, first folder wins", () =>
  withFake(["a"], async ({ fake, runtime, cacheDir }) => {
    const missing = listOf({
      cniVersion: "1.0.0",
      name: "n",
      plugins: [{ type: "does-not-exist" }],
    });
    const err = await assertRejects(() => runtime.addNetworkList(missing, rtOf()));
    assertEquals(
      err.message,
      `plugin type="does-not-exist" failed (add): failed to find plugin "does-not-exist" in path [${fake.bin}]`,
    );
    const sneaky = listOf({ cniVersion: "1.0.0", name: "n", plugins: [{ type: "../x" }] });
    assertMatch(
      (await assertRejects(() => runtime.addNetworkList(sneaky, rtOf()))).message,
      /invalid plugin name/,
    );
    const nowhere = new CniRuntime({ path: [], cacheDir, env: BASE_ENV, exec: fake });
    assertMatch(
      (await assertRejects(() => nowhere.addNetworkList(chain1(), rtOf()))).message,
      /no paths provided/,
    );

    const second = "/fake/bin2";
    fake.add("a", second);
    fake.add("only2", second);
    const both = new CniRuntime({ path: [fake.bin, second], cacheDir, env: BASE_ENV, exec: fake });
    await both.addNetworkList(chain1(), rtOf());
    const list = listOf({ cniVersion: "1.0.0", name: "n", plugins: [{ type: "only2" }] });
    await both.addNetworkList(list, rtOf());
    assertEquals(fake.calls().map((c) => c.path), [`${fake.bin}/a`, `${second}/only2`]);
  }));

Deno.test("plugin failures: stderr only, no output, undecodable stdout", () =>
  withFake(["a"], async ({ fake, runtime }) => {
    const cases: [FakeAnswer, string][] = [
      [
        { stdout: "", stderr: "some stderr message", exit: 1 },
        'netplugin failed: "some stderr message": exit status 1',
      ],
      [{ stdout: "", exit: 1 }, "netplugin failed with no error message: exit status 1"],
      [
        { stdout: "not json", exit: 3 },
        'netplugin failed but error parsing its diagnostic message "not json": ',
      ],
    ];
    for (const [answer, text] of cases) {
      fake.respond("a", "ADD", answer);
      const err = await assertRejects(() => runtime.addNetworkList(chain1(), rtOf()));
      assert(err.message.startsWith(`plugin type="a" failed (add): ${text}`), err.message);
      assertEquals((err as CniError).code, 0);
    }
  }));

Deno.test("ADD output: empty is an error; {} and a missing cniVersion take the config's", () =>
  withFake(["a"], async ({ fake, runtime }) => {
    fake.respond("a", "ADD", { stdout: "" });
    const err = await assertRejects(() => runtime.addNetworkList(chain1(), rtOf()));
    assertMatch(err.message, /failed \(add\): failed to unmarshal raw result: /);

    fake.respond("a", "ADD", { stdout: "{}" });
    assertEquals((await runtime.addNetworkList(chain1("n", "1.0.0"), rtOf()))!.cniVersion, "1.0.0");
    fake.respond("a", "ADD", { stdout: "null" });
    assertEquals((await runtime.addNetworkList(chain1("n", "0.4.0"), rtOf()))!.cniVersion, "0.4.0");
    fake.respond("a", "ADD", { stdout: { ips: [{ address: "10.1.1.1/24" }] } });
    const r = await runtime.addNetworkList(chain1("n", "1.1.0"), rtOf());
    assertEquals(resultToJSON(r!), { cniVersion: "1.1.0", ips: [{ address: "10.1.1.1/24" }] });
    fake.respond("a", "ADD", { stdout: "{}" });
    const noVersion = listOf({ name: "n", plugins: [{ type: "a" }] });
    assertEquals((await runtime.addNetworkList(noVersion, rtOf()))!.cniVersion, "0.1.0");
  }));

Deno.test("ADD passes results on in their own version; libcni does not require a match", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime }) => {
    answerChain(fake, "1.0.0");
    fake.respond("a", "ADD", { stdout: resultWith("0.4.0", "10.0.0.1/24") });
    await runtime.addNetworkList(chain("1.0.0"), rtOf());
    assertEquals(
      fake.calls()[1]!.stdin.prevResult,
      { cniVersion: "0.4.0", ips: [{ version: "4", address: "10.0.0.1/24" }], dns: {} },
    );
  }));

Deno.test("ADD with an unknown result version fails with libcni's text", () =>
  withFake(["a"], async ({ fake, runtime }) => {
    fake.respond("a", "ADD", { stdout: { cniVersion: "9.9.9" } });
    const err = await assertRejects(() => runtime.addNetworkList(chain1(), rtOf()));
    assertEquals(
      err.message,
      'plugin type="a" failed (add): unsupported CNI result version "9.9.9"',
    );
  }));

Deno.test("VERSION probe: env and stdin, old plugins, 0.2.0 answers, bad answers", () =>
  withFake(["a"], async ({ fake, runtime }) => {
    fake.respond("a", "VERSION", {
      stdout: { cniVersion: "1.1.0", supportedVersions: ["0.4.0", "1.0.0"] },
    });
    assertEquals(await runtime.versionInfo("a"), ["0.4.0", "1.0.0"]);
    const call = fake.calls()[0]!;
    assertEquals(call.stdin, { cniVersion: "1.1.0" });
    assertEquals(
      [call.env.CNI_COMMAND, call.env.CNI_NETNS, call.env.CNI_IFNAME, call.env.CNI_PATH],
      ["VERSION", "dummy", "dummy", "dummy"],
    );
    assertEquals(call.env.CNI_CONTAINERID, "");

    fake.respond("a", "VERSION", {
      stdout: { code: 4, msg: "unknown CNI_COMMAND: VERSION" },
      exit: 1,
    });
    assertEquals(await runtime.versionInfo("a"), ["0.1.0"]);
    fake.respond("a", "VERSION", { stdout: { cniVersion: "0.2.0" } });
    assertEquals(await runtime.versionInfo("a"), ["0.1.0", "0.2.0"]);
    fake.respond("a", "VERSION", { stdout: { supportedVersions: ["1.0.0"] } });
    assertMatch(
      (await assertRejects(() => runtime.versionInfo("a"))).message,
      /missing field cniVersion/,
    );
    fake.respond("a", "VERSION", { stdout: { cniVersion: "1.0.0" } });
    assertMatch(
      (await assertRejects(() => runtime.versionInfo("a"))).message,
      /missing field supportedVersions/,
    );
  }));

Deno.test("validate: every plugin's VERSION is checked and all failures reported", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime }) => {
    for (const p of ["a", "b", "c"]) {
      fake.respond(p, "VERSION", { stdout: { cniVersion: "1.1.0", supportedVersions: ["1.0.0"] } });
    }
    const caps = await runtime.validateNetworkList(chain("1.0.0"));
    assertEquals(caps.sort(), ["otherCapability", "portMappings"]);
    const err = await assertRejects(() => runtime.validateNetworkList(chain("broken")));
    const one = 'does not support config version "broken"';
    assertEquals(err.message, `[plugin a ${one} plugin b ${one} plugin c ${one}]`);
  }));

Deno.test("GC sequence: disableGC, valid attachments kept, stale ones DELeted first", () =>
  withFake(["a", "b"], async ({ fake, runtime, cacheDir }) => {
    const conf = {
      cniVersion: "1.1.0",
      name: "gcnet",
      plugins: [{ type: "a", capabilities: { portMappings: true } }, { type: "b" }],
    };
    const list = listOf(conf);
    const rt: RuntimeConf = {
      containerId: "c1",
      netns: "/run/netns/c1",
      ifname: "eth0",
      args: [["K", "V"]],
      capabilityArgs: { portMappings: PORTS },
    };
    fake.respond("a", "ADD", { stdout: resultWith("1.1.0", "10.0.0.1/24") });
    fake.respond("b", "ADD", { stdout: resultWith("1.1.0", "10.0.0.1/24") });
    await runtime.addNetworkList(list, rt);

    await runtime.gcNetworkList(listOf({ ...conf, disableGC: true }), { validAttachments: [] });
    assertEquals(fake.log(), ["a:ADD", "b:ADD"]);

    fake.clearCalls();
    const valid = [{ containerID: "c1", ifname: "eth0" }];
    await runtime.gcNetworkList(list, { validAttachments: valid });
    assertEquals(fake.log(), ["a:GC", "b:GC"]);
    for (const call of fake.calls()) {
      assertEquals(call.stdin["cni.dev/valid-attachments"], valid);
      assertEquals(call.stdin["cni.dev/attachments"], valid);
      assertEquals(call.stdin.name, "gcnet");
      assert(!("runtimeConfig" in call.stdin) && !("prevResult" in call.stdin));
      assertEquals(
        [call.env.CNI_CONTAINERID, call.env.CNI_NETNS, call.env.CNI_IFNAME, call.env.CNI_ARGS],
        ["", "", "", ""],
      );
      assertEquals(call.env.CNI_PATH, fake.bin);
    }

    fake.clearCalls();
    await runtime.gcNetworkList(list, { validAttachments: [] });
    assertEquals(fake.log(), ["b:DEL", "a:DEL", "a:GC", "b:GC"]);
    const del = fake.calls()[1]!;
    assertEquals(
      [del.env.CNI_CONTAINERID, del.env.CNI_NETNS, del.env.CNI_IFNAME, del.env.CNI_ARGS],
      ["c1", "/run/netns/c1", "eth0", "K=V"],
    );
    assertEquals(del.stdin.runtimeConfig, { portMappings: PORTS });
    assertEquals(del.stdin.prevResult, asSent(resultWith("1.1.0", "10.0.0.1/24")));
    assertEquals(fake.calls()[2]!.stdin["cni.dev/valid-attachments"], []);
    assert(!exists(cachePath(cacheDir, "gcnet", rt)));
  }));

Deno.test("GC without args: every cached attachment of the network goes; no valid-attachments key", () =>
  withFake(["a"], async ({ fake, runtime, cacheDir }) => {
    const list = listOf({ cniVersion: "1.1.0", name: "gcnet", plugins: [{ type: "a" }] });
    const other = listOf({ cniVersion: "1.1.0", name: "othernet", plugins: [{ type: "a" }] });
    for (const containerId of ["c1", "c2"]) {
      await runtime.addNetworkList(list, rtOf({ containerId }));
    }
    await runtime.addNetworkList(other, rtOf({ containerId: "c3" }));
    fake.clearCalls();
    await runtime.gcNetworkList(list);
    assertEquals(fake.log(), ["a:DEL", "a:DEL", "a:GC"]);
    assertEquals(fake.calls().slice(0, 2).map((c) => c.env.CNI_CONTAINERID), ["c1", "c2"]);
    const gc = fake.calls()[2]!.stdin;
    assert(!("cni.dev/valid-attachments" in gc) && !("cni.dev/attachments" in gc));
    assertEquals([...Deno.readDirSync(`${cacheDir}/results`)].map((e) => e.name), [
      "othernet-c3-eth0",
    ]);
  }));

Deno.test("GC on a 1.0.0 list: only the stale DELs, no GC verb", () =>
  withFake(["a"], async ({ fake, runtime }) => {
    const list = listOf({ cniVersion: "1.0.0", name: "gcnet", plugins: [{ type: "a" }] });
    await runtime.addNetworkList(list, rtOf());
    fake.clearCalls();
    await runtime.gcNetworkList(list, { validAttachments: [] });
    assertEquals(fake.log(), ["a:DEL"]);
  }));

Deno.test("GC goes on past failures and reports them all", () =>
  withFake(["a", "b"], async ({ fake, runtime }) => {
    const list = listOf({
      cniVersion: "1.1.0",
      name: "gcnet",
      plugins: [{ type: "a" }, { type: "b" }],
    });
    fake.respond("a", "GC", { stdout: { code: 5, msg: "a broke" }, exit: 1 });
    fake.respond("b", "GC", { stdout: { code: 5, msg: "b broke" }, exit: 1 });
    const err = await assertRejects(() => runtime.gcNetworkList(list, { validAttachments: [] }));
    assertEquals(err.message, "failed to GC plugin a: a broke\nfailed to GC plugin b: b broke");
    assertEquals(fake.log(), ["a:GC", "b:GC"]);

    fake.respond("b", "GC", {});
    const one = await assertRejects(() => runtime.gcNetworkList(list, { validAttachments: [] }));
    assertEquals((one as CniError).code, 5);
  }));

Deno.test("STATUS: code 50 stops the chain; before 1.1.0 nothing runs", () =>
  withFake(["a", "b", "c"], async ({ fake, runtime }) => {
    fake.respond("b", "STATUS", { stdout: { code: 50, msg: "not ready" }, exit: 1 });
    const err = await assertRejects(() => runtime.statusNetworkList(chain("1.1.0")));
    assertEquals((err as CniError).code, 50);
    assertEquals(err.message, "not ready");
    assertEquals(fake.log(), ["a:STATUS", "b:STATUS"]);
    const call = fake.calls()[0]!;
    assertEquals([call.env.CNI_CONTAINERID, call.env.CNI_IFNAME], ["", ""]);
    assertEquals(call.stdin.name, "some-list");

    fake.clearCalls();
    await runtime.statusNetworkList(chain("1.0.0"));
    assertEquals(fake.calls(), []);
  }));

Deno.test("environment: the runtime's own is passed on; the CNI_* values win", () =>
  withFake(["a"], async ({ fake, runtime }) => {
    await runtime.addNetworkList(
      chain1(),
      rtOf({ ifname: "eth7", args: [["KEY1", "VALUE1"], ["KEY2", "VALUE2"]] }),
    );
    const env = fake.calls()[0]!.env;
    assertEquals(
      [env.CNI_COMMAND, env.CNI_IFNAME, env.CNI_ARGS, env.OTHER],
      ["ADD", "eth7", "KEY1=VALUE1;KEY2=VALUE2", "kept"],
    );
  }, { env: { ...BASE_ENV, CNI_COMMAND: "DEL", CNI_IFNAME: "eth0", OTHER: "kept" } }));

Deno.test("ADD fails when its result cannot be cached", () =>
  withFake(["a"], async ({ fake }) => {
    const file = Deno.makeTempFileSync({ prefix: "cnikit-notadir-" });
    try {
      const runtime = new CniRuntime({
        path: [fake.bin],
        cacheDir: file,
        env: BASE_ENV,
        exec: fake,
      });
      const err = await assertRejects(() => runtime.addNetworkList(chain1(), rtOf()));
      assertMatch(err.message, /^failed to set network "net1" cached result: /);
      assertEquals(fake.log(), ["a:ADD"]);
    } finally {
      Deno.removeSync(file);
    }
  }));
