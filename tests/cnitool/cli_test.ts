/**
 * The cnitool command line (dist/bin/cnitool) against fake plugins, and end
 * to end with the real loopback applet inside test namespaces
 * (cni-spec.md §2.7, §3E).
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { DIST_BIN, runApplet } from "../helpers/applet.ts";
import { FakePlugins } from "../helpers/fake_plugin.ts";
import { canNetns, type TestNetns, withNamespaces } from "../helpers/netns.ts";

interface Env {
  fake: FakePlugins;
  netconf: string;
  cache: string;
  /** The environment cnitool runs with. */
  env: Record<string, string>;
}

async function withTool(fn: (t: Env) => Promise<void>, names = ["noop"]): Promise<void> {
  const fake = FakePlugins.create(...names);
  const netconf = Deno.makeTempDirSync({ prefix: "cnikit-netconf-" });
  const cache = Deno.makeTempDirSync({ prefix: "cnikit-cache-" });
  const env = {
    NETCONFPATH: netconf,
    CNI_PATH: fake.bin,
    CNI_CACHE_DIR: cache,
    CNI_IFNAME: "",
    CNI_ARGS: "",
    CAP_ARGS: "",
    CNI_TIMEOUT: "",
  };
  try {
    await fn({ fake, netconf, cache, env });
  } finally {
    fake.cleanup();
    Deno.removeSync(netconf, { recursive: true });
    Deno.removeSync(cache, { recursive: true });
  }
}

function writeNet(dir: string, conf: Record<string, unknown>, file = "10-net.conflist"): void {
  Deno.writeTextFileSync(`${dir}/${file}`, JSON.stringify(conf));
}

const net = (version: string, plugins: unknown[] = [{ type: "noop" }]) => ({
  cniVersion: version,
  name: "mynet",
  plugins,
});

const RESULT = { cniVersion: "1.1.0", ips: [{ address: "10.1.0.5/24", gateway: "10.1.0.1" }] };

function cnitool(env: Record<string, string>, ...args: string[]) {
  return runApplet("cnitool", { env, args });
}

function cacheFiles(dir: string): string[] {
  try {
    return [...Deno.readDirSync(`${dir}/results`)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

Deno.test("add: result on stdout, 4-space JSON; container ID from the netns path; eth0", () =>
  withTool(async ({ fake, netconf, env, cache }) => {
    writeNet(netconf, net("1.1.0"));
    fake.respond("noop", "ADD", { stdout: RESULT });
    const run = await cnitool(env, "add", "mynet", "/var/run/netns/t");
    assertEquals(run.code, 0, run.stderr);
    assertEquals(run.stdout, JSON.stringify(RESULT, null, 4));
    const call = fake.calls()[0]!;
    assertEquals(call.env.CNI_CONTAINERID, "cnitool-231bdc86cfd630851e4f");
    assertEquals(call.env.CNI_IFNAME, "eth0");
    assertEquals(call.env.CNI_NETNS, "/var/run/netns/t");
    assertEquals(cacheFiles(cache), ["mynet-cnitool-231bdc86cfd630851e4f-eth0"]);
  }));

Deno.test("the netns argument is made absolute and clean first", () =>
  withTool(async ({ fake, netconf, env }) => {
    writeNet(netconf, net("1.1.0"));
    const cwd = Deno.makeTempDirSync({ prefix: "cnikit-cwd-" });
    try {
      const child = await new Deno.Command(`${DIST_BIN}/cnitool`, {
        args: ["add", "mynet", "./x/../ns1"],
        env,
        cwd,
      }).output();
      assertEquals(child.code, 0, new TextDecoder().decode(child.stderr));
      assertEquals(fake.calls()[0]!.env.CNI_NETNS, `${cwd}/ns1`);
    } finally {
      Deno.removeSync(cwd, { recursive: true });
    }
  }));

Deno.test("ifname: the flag wins over CNI_IFNAME; an empty CNI_IFNAME means eth0", () =>
  withTool(async ({ fake, netconf, env }) => {
    writeNet(netconf, net("1.1.0"));
    const cases: [Record<string, string>, string[], string][] = [
      [{ CNI_IFNAME: "eth3" }, ["-i", "eth5"], "eth5"],
      [{ CNI_IFNAME: "eth3" }, [], "eth3"],
      [{ CNI_IFNAME: "" }, [], "eth0"],
      [{}, ["--ifname=eth6"], "eth6"],
      [{}, ["-ieth7"], "eth7"],
      [{}, ["--ifname", "eth8"], "eth8"],
    ];
    for (const [extra, flags, want] of cases) {
      fake.clearCalls();
      const run = await cnitool({ ...env, ...extra }, "add", ...flags, "mynet", "/run/netns/x");
      assertEquals(run.code, 0, run.stderr);
      assertEquals(fake.calls()[0]!.env.CNI_IFNAME, want, flags.join(" "));
    }
  }));

Deno.test("CNI_ARGS: strict pairs; CAP_ARGS: JSON passed on as runtimeConfig", () =>
  withTool(async ({ fake, netconf, env }) => {
    writeNet(netconf, net("1.1.0", [{ type: "noop", capabilities: { portMappings: true } }]));
    const bad = await cnitool({ ...env, CNI_ARGS: "a=b;c" }, "add", "mynet", "/run/netns/x");
    assertEquals(bad.code, 1);
    assertMatch(bad.stderr, /invalid CNI_ARGS pair "c"/);
    for (const pair of ["=b", "a=", "a=b=c"]) {
      const run = await cnitool({ ...env, CNI_ARGS: pair }, "add", "mynet", "/run/netns/x");
      assertEquals(run.code, 1, pair);
    }
    const badCaps = await cnitool({ ...env, CAP_ARGS: "{nope" }, "add", "mynet", "/run/netns/x");
    assertEquals(badCaps.code, 1);
    assertMatch(badCaps.stderr, /CAP_ARGS/);
    assertEquals(fake.calls(), []);

    const ports = [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }];
    const run = await cnitool(
      { ...env, CNI_ARGS: "K1=V1;K2=V2", CAP_ARGS: JSON.stringify({ portMappings: ports }) },
      "add",
      "mynet",
      "/run/netns/x",
    );
    assertEquals(run.code, 0, run.stderr);
    const call = fake.calls()[0]!;
    assertEquals(call.env.CNI_ARGS, "K1=V1;K2=V2");
    assertEquals(call.stdin.runtimeConfig, { portMappings: ports });
  }));

Deno.test("usage errors: missing netns, unknown command or flag; help and version", () =>
  withTool(async ({ netconf, env }) => {
    writeNet(netconf, net("1.1.0"));
    const missing = await cnitool(env, "add", "mynet");
    assertEquals(missing.code, 1);
    assertMatch(missing.stderr, /requires at least 2 arg/);
    const unknown = await cnitool(env, "frobnicate", "mynet", "/x");
    assertEquals(unknown.code, 1);
    assertMatch(unknown.stderr, /unknown command "frobnicate"/);
    const flag = await cnitool(env, "add", "--bogus", "mynet", "/x");
    assertEquals(flag.code, 1);
    assertMatch(flag.stderr, /unknown flag: --bogus/);
    const noValue = await cnitool(env, "add", "mynet", "/x", "-i");
    assertEquals(noValue.code, 1);
    for (const args of [[], ["--help"], ["help"], ["add", "--help"], ["help", "gc"]]) {
      const help = await cnitool(env, ...args);
      assertEquals(help.code, 0, args.join(" "));
      assertMatch(help.stdout, /Usage:\n {2}cnitool /);
      assertMatch(help.stdout, /CNI_CACHE_DIR/);
    }
    const version = await cnitool(env, "version");
    assertEquals(version.code, 0);
    assertMatch(version.stdout, /1\.1\.0/);
  }));

Deno.test("check on a 0.3.1 network fails; del and status print nothing", () =>
  withTool(async ({ fake, netconf, env, cache }) => {
    writeNet(netconf, net("0.3.1"));
    const check = await cnitool(env, "check", "mynet", "/run/netns/x");
    assertEquals(check.code, 1);
    assertMatch(
      check.stderr,
      /configuration version "0\.3\.1" does not support the CHECK command/,
    );
    assertEquals(fake.calls(), []);

    writeNet(netconf, net("1.1.0"));
    fake.respond("noop", "ADD", { stdout: RESULT });
    assertEquals((await cnitool(env, "add", "mynet", "/run/netns/x")).code, 0);
    const ok = await cnitool(env, "check", "mynet", "/run/netns/x");
    assertEquals([ok.code, ok.stdout], [0, ""], ok.stderr);
    const status = await cnitool(env, "status", "mynet", "/run/netns/x");
    assertEquals([status.code, status.stdout], [0, ""], status.stderr);
    const del = await cnitool(env, "del", "mynet", "/run/netns/x");
    assertEquals([del.code, del.stdout], [0, ""], del.stderr);
    assertEquals(fake.log(), ["noop:ADD", "noop:CHECK", "noop:STATUS", "noop:DEL"]);
    assertEquals(fake.calls()[3]!.stdin.prevResult, RESULT);
    assertEquals(cacheFiles(cache), []);
  }));

Deno.test("gc deletes every cached attachment of that network, then sends GC", () =>
  withTool(async ({ fake, netconf, env, cache }) => {
    writeNet(netconf, net("1.1.0"));
    writeNet(netconf, { ...net("1.1.0"), name: "othernet" }, "20-other.conflist");
    for (const ns of ["/run/netns/a", "/run/netns/b"]) {
      assertEquals((await cnitool(env, "add", "mynet", ns)).code, 0);
    }
    assertEquals((await cnitool(env, "add", "othernet", "/run/netns/a")).code, 0);
    fake.clearCalls();
    const gc = await cnitool(env, "gc", "mynet", "/run/netns/unused");
    assertEquals([gc.code, gc.stdout], [0, ""], gc.stderr);
    assertEquals(fake.log(), ["noop:DEL", "noop:DEL", "noop:GC"]);
    assert(!("cni.dev/valid-attachments" in fake.calls()[2]!.stdin));
    assertEquals(cacheFiles(cache).length, 1);
    assertMatch(cacheFiles(cache)[0]!, /^othernet-cnitool-/);
  }));

Deno.test("errors: one line on stderr with the plugin's code, exit 1, no stack trace", () =>
  withTool(async ({ fake, netconf, env }) => {
    writeNet(netconf, net("1.1.0"));
    fake.respond("noop", "ADD", { stdout: { code: 100, msg: "plugin error: banana" }, exit: 1 });
    const run = await cnitool(env, "add", "mynet", "/run/netns/x");
    assertEquals(run.code, 1);
    assertEquals(run.stdout, "");
    assertEquals(
      run.stderr,
      'Error: plugin type="noop" failed (add): plugin error: banana (code 100)\n',
    );
    const missing = await cnitool(env, "add", "nosuchnet", "/run/netns/x");
    assertEquals(
      missing.stderr,
      `Error: no net configuration with name "nosuchnet" in ${netconf}\n`,
    );
  }));

Deno.test("a plugin's stderr on success reaches cnitool's stderr", () =>
  withTool(async ({ fake, netconf, env }) => {
    writeNet(netconf, net("1.1.0"));
    fake.respond("noop", "ADD", { stdout: RESULT, stderr: "note from the plugin\n" });
    const run = await cnitool(env, "add", "mynet", "/run/netns/x");
    assertEquals(run.code, 0);
    assertEquals(run.stderr, "note from the plugin\n");
    assertEquals(JSON.parse(run.stdout), RESULT);
  }));

Deno.test("CNI_TIMEOUT bounds each plugin call", () =>
  withTool(async ({ fake, netconf, env }) => {
    writeNet(netconf, net("1.1.0"));
    fake.respond("noop", "ADD", { sleep: 60 });
    const started = Date.now();
    const run = await cnitool({ ...env, CNI_TIMEOUT: "0.5" }, "add", "mynet", "/run/netns/x");
    assertEquals(run.code, 1);
    assertMatch(run.stderr, /netplugin failed with no error message: signal: killed/);
    // The plugin sleeps for a minute: returning well before that means it was killed.
    assert(Date.now() - started < 30_000);
    const bad = await cnitool({ ...env, CNI_TIMEOUT: "soon" }, "add", "mynet", "/run/netns/x");
    assertEquals(bad.code, 1);
    assertMatch(bad.stderr, /invalid CNI_TIMEOUT "soon"/);
  }));

Deno.test("cnikit cnitool … works like the cnitool symlink", () =>
  withTool(async ({ fake, netconf, env }) => {
    writeNet(netconf, net("1.1.0"));
    fake.respond("noop", "ADD", { stdout: RESULT });
    const run = await runApplet("cnikit", {
      env,
      args: ["cnitool", "add", "mynet", "/run/netns/x"],
    });
    assertEquals(run.code, 0, run.stderr);
    assertEquals(JSON.parse(run.stdout), RESULT);
  }));

async function loUp(ns: TestNetns): Promise<boolean> {
  const [lo] = await ns.ipJson<{ flags: string[] }[]>("link", "show", "dev", "lo");
  return lo!.flags.includes("UP");
}

Deno.test({
  name: "end to end: cnitool with the loopback applet in a namespace",
  ignore: !canNetns,
  fn: () =>
    withTool(async ({ netconf, cache }) => {
      await withNamespaces(1, async (host, ctr) => {
        await ctr.exec("ip", ["link", "set", "lo", "down"]);
        writeNet(netconf, { cniVersion: "1.1.0", name: "lonet", plugins: [{ type: "loopback" }] });
        const env = { NETCONFPATH: netconf, CNI_PATH: DIST_BIN, CNI_CACHE_DIR: cache };
        const run = (verb: string) =>
          runApplet("cnitool", { env, args: [verb, "lonet", ctr.path], host });
        const add = await run("add");
        assertEquals(add.code, 0, add.stderr);
        assertEquals((add.json!.interfaces as { name: string }[])[0]!.name, "lo");
        assertEquals(await loUp(ctr), true);
        assertEquals(cacheFiles(cache).length, 1);
        for (const verb of ["check", "status"]) {
          const r = await run(verb);
          assertEquals(r.code, 0, `${verb}: ${r.stderr}`);
        }
        const del = await run("del");
        assertEquals(del.code, 0, del.stderr);
        assertEquals(await loUp(ctr), false);
        assertEquals(cacheFiles(cache), []);
      });
    }),
});

Deno.test({
  name: "end to end: a chain mixing external plugins and a cnikit applet",
  ignore: !canNetns,
  fn: () =>
    withTool(async ({ fake, netconf, cache }) => {
      await withNamespaces(1, async (host, ctr) => {
        await ctr.exec("ip", ["link", "set", "lo", "down"]);
        writeNet(netconf, {
          cniVersion: "1.0.0",
          name: "mixnet",
          plugins: [{ type: "first" }, { type: "loopback" }, { type: "last" }],
        });
        const first = { cniVersion: "1.0.0", ips: [{ address: "10.7.0.2/24" }] };
        fake.respond("first", "ADD", { stdout: first });
        fake.respond("last", "ADD", { stdout: { ...first, dns: { nameservers: ["10.7.0.1"] } } });
        const env = {
          NETCONFPATH: netconf,
          CNI_PATH: `${fake.bin}:${DIST_BIN}`,
          CNI_CACHE_DIR: cache,
        };
        const add = await runApplet("cnitool", { env, args: ["add", "mixnet", ctr.path], host });
        assertEquals(add.code, 0, add.stderr);
        assertEquals(await loUp(ctr), true);
        assertEquals(fake.log(), ["first:ADD", "last:ADD"]);
        // loopback passed the first plugin's result through to the last one.
        assertEquals(fake.calls()[1]!.stdin.prevResult, first);
        assertEquals(add.json!.dns, { nameservers: ["10.7.0.1"] });
        const del = await runApplet("cnitool", { env, args: ["del", "mixnet", ctr.path], host });
        assertEquals(del.code, 0, del.stderr);
        assertEquals(await loUp(ctr), false);
        assertEquals(fake.log().slice(2), ["last:DEL", "first:DEL"]);
      });
    }, ["first", "last"]),
});
