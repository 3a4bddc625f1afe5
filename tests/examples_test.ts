/**
 * The SDK examples (examples/hello, examples/sample): plugins outside
 * cnikit's applets, built on the SDK entry mod.ts alone and run as their own
 * executables, alone and in a chain run by cnitool.
 */

import { assert, assertEquals, assertMatch } from "./helpers/assert.ts";
import { cniEnv, runApplet } from "./helpers/applet.ts";
import { FakePlugins } from "./helpers/fake_plugin.ts";

const EXAMPLES = new URL("../examples/", import.meta.url).pathname.replace(/\/$/, "");
const HELLO = { bin: `${EXAMPLES}/hello`, name: "hello.ts" };
const SAMPLE = { bin: `${EXAMPLES}/sample`, name: "sample.ts" };

Deno.test("the SDK examples import only the SDK entry (mod.ts) and zod", async () => {
  for (const file of [`${HELLO.bin}/${HELLO.name}`, `${SAMPLE.bin}/${SAMPLE.name}`]) {
    const text = await Deno.readTextFile(file);
    const specifiers = [...text.matchAll(/^import[^"]*"([^"]+)";/gm)].map((m) => m[1]);
    assert(specifiers.length > 0, file);
    for (const specifier of specifiers) {
      assert(["../../mod.ts", "zod/mini"].includes(specifier!), `${file} imports ${specifier}`);
    }
  }
});

const PREV = { cniVersion: "1.1.0", ips: [{ address: "10.2.0.7/24", gateway: "10.2.0.1" }] };

function run(
  plugin: { bin: string; name: string },
  command: string,
  stdin: object,
  path?: string,
) {
  return runApplet(plugin.name, {
    bin: plugin.bin,
    env: cniEnv(command, { netns: "/run/netns/sdk", ifname: "eth0", path }),
    stdin,
  });
}

Deno.test("hello: a minimal result first in a chain, logged on stderr", async () => {
  const conf = { cniVersion: "1.1.0", name: "demo", type: "hello" };
  const add = await run(HELLO, "ADD", conf);
  assertEquals(add.code, 0, add.stdout + add.stderr);
  assertEquals(add.json, {
    cniVersion: "1.1.0",
    interfaces: [{ name: "eth0", sandbox: "/run/netns/sdk" }],
  });
  assertMatch(add.stderr, /^hello: ADD network=demo container=ctr1 ifname=eth0 .*minimal/);
  const old = await run(HELLO, "ADD", { ...conf, cniVersion: "0.4.0" });
  assertEquals(old.json, {
    cniVersion: "0.4.0",
    interfaces: [{ name: "eth0", sandbox: "/run/netns/sdk" }],
    dns: {},
  });
});

Deno.test("hello: passes prevResult on; DEL and CHECK succeed; 0.2.0 is refused", async () => {
  const conf = { cniVersion: "1.1.0", name: "demo", type: "hello" };
  const add = await run(HELLO, "ADD", { ...conf, prevResult: PREV });
  assertEquals(add.json, PREV);
  assertMatch(add.stderr, /passing prevResult on/);
  for (const command of ["DEL", "CHECK"]) {
    const r = await run(HELLO, command, { ...conf, prevResult: PREV });
    assertEquals([r.code, r.stdout], [0, ""], r.stderr);
  }
  const version = await run(HELLO, "VERSION", {});
  assertEquals((version.json!.supportedVersions as string[])[0], "0.3.0");
  const refused = await run(HELLO, "ADD", { ...conf, cniVersion: "0.2.0" });
  assertEquals(refused.code, 1);
  assertEquals(refused.json!.code, 1);
});

Deno.test("sample: needs anotherAwesomeArg and a prevResult with IPs, passes it through", async () => {
  const conf = { cniVersion: "1.0.0", name: "demo", type: "sample" };
  const noArg = await run(SAMPLE, "ADD", { ...conf, prevResult: PREV });
  assertEquals(noArg.code, 1);
  assertEquals(noArg.json!.code, 7);
  assertEquals(noArg.json!.msg, "anotherAwesomeArg must be specified");
  const withArg = { ...conf, anotherAwesomeArg: "yes" };
  const alone = await run(SAMPLE, "ADD", withArg);
  assertEquals(alone.json!.msg, "must be called as chained plugin");
  const noIps = await run(SAMPLE, "ADD", { ...withArg, prevResult: { cniVersion: "1.0.0" } });
  assertEquals(noIps.json!.msg, "got no container IPs");
  const add = await run(SAMPLE, "ADD", {
    ...withArg,
    prevResult: { ...PREV, cniVersion: "1.0.0" },
  });
  assertEquals(add.code, 0, add.stdout);
  assertEquals(add.json, { ...PREV, cniVersion: "1.0.0" });
  const del = await run(SAMPLE, "DEL", withArg);
  assertEquals(del.code, 0, del.stdout);
  const delNoArg = await run(SAMPLE, "DEL", conf);
  assertEquals(delNoArg.json!.code, 7);
  const badType = await run(SAMPLE, "ADD", { ...withArg, myAwesomeFlag: "yes", prevResult: PREV });
  assertEquals(badType.json!.code, 6);
  assertEquals(badType.json!.msg, "failed to load netconf: myAwesomeFlag: expected boolean");
});

Deno.test("sample: STATUS asks its IPAM plugin", async () => {
  const fake = FakePlugins.create("myipam");
  try {
    fake.respond("myipam", "STATUS", { stdout: { code: 50, msg: "pool gone" }, exit: 1 });
    const conf = {
      cniVersion: "1.1.0",
      name: "demo",
      type: "sample",
      anotherAwesomeArg: "yes",
      ipam: { type: "myipam" },
    };
    const status = await run(SAMPLE, "STATUS", conf, fake.bin);
    assertEquals(status.json!.code, 50);
    assertEquals(fake.log(), ["myipam:STATUS"]);
    fake.respond("myipam", "STATUS", {});
    assertEquals((await run(SAMPLE, "STATUS", conf, fake.bin)).code, 0);
  } finally {
    fake.cleanup();
  }
});

Deno.test("the examples in a chain run by cnitool", async () => {
  const fake = FakePlugins.create("first");
  const netconf = Deno.makeTempDirSync({ prefix: "cnikit-netconf-" });
  const cache = Deno.makeTempDirSync({ prefix: "cnikit-cache-" });
  try {
    // A symlinked script would resolve its relative imports next to the
    // link; a one-line wrapper keeps them next to the example.
    for (const [name, file] of [["sample", "sample/sample.ts"], ["hello", "hello/hello.ts"]]) {
      Deno.writeTextFileSync(
        `${fake.bin}/${name}`,
        `#!/bin/sh\nexec ${EXAMPLES}/${file} "$@"\n`,
        { mode: 0o755 },
      );
    }
    Deno.writeTextFileSync(
      `${netconf}/10-sdk.conflist`,
      JSON.stringify({
        cniVersion: "1.1.0",
        name: "sdknet",
        plugins: [{ type: "first" }, { type: "sample", anotherAwesomeArg: "yes" }, {
          type: "hello",
        }],
      }),
    );
    fake.respond("first", "ADD", { stdout: PREV });
    const env = { NETCONFPATH: netconf, CNI_PATH: fake.bin, CNI_CACHE_DIR: cache };
    const add = await runApplet("cnitool", { env, args: ["add", "sdknet", "/run/netns/sdk"] });
    assertEquals(add.code, 0, add.stderr);
    assertEquals(add.json, PREV);
    assertMatch(add.stderr, /hello: ADD network=sdknet container=cnitool-[0-9a-f]{20} /);
    const check = await runApplet("cnitool", { env, args: ["check", "sdknet", "/run/netns/sdk"] });
    assertEquals(check.code, 0, check.stderr);
    assertMatch(check.stderr, /hello: CHECK .*prevResult present/);
    const del = await runApplet("cnitool", { env, args: ["del", "sdknet", "/run/netns/sdk"] });
    assertEquals(del.code, 0, del.stderr);
    assert(del.stderr.includes("hello: DEL"));
  } finally {
    fake.cleanup();
    Deno.removeSync(netconf, { recursive: true });
    Deno.removeSync(cache, { recursive: true });
  }
});
