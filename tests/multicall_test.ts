import { APPLET_NAMES, PLUGINS } from "../applets.ts";
import { assert, assertEquals, assertMatch } from "./helpers/assert.ts";
import { ALL_TEST_VERSIONS, DIST_BIN } from "./helpers/applet.ts";
import { canNetns, spawnOutput, withNamespaces } from "./helpers/netns.ts";

const APPLETS = APPLET_NAMES;

/** Runs `argv` with only `env` as its environment. */
function exec(argv: string[], env: Record<string, string>, stdin?: string) {
  return spawnOutput(argv[0]!, argv.slice(1), { env, clearEnv: true, stdin });
}

Deno.test("build-info.json names the kind of build, and dist/bin/cnikit is that kind", async () => {
  const info = JSON.parse(await Deno.readTextFile(`${DIST_BIN}/../build-info.json`));
  const head = (await Deno.readFile(`${DIST_BIN}/cnikit`)).subarray(0, 4);
  const isElf = head[0] === 0x7f && head[1] === 0x45 && head[2] === 0x4c && head[3] === 0x46;
  assertEquals(info.kind, isElf ? "compiled" : "launcher");
  for (const name of APPLETS) assertEquals(await Deno.readLink(`${DIST_BIN}/${name}`), "cnikit");
});

Deno.test("cnikit --help, --list and --version describe the applets; an unknown applet fails", async () => {
  const help = await exec([`${DIST_BIN}/cnikit`, "--help"], {});
  assertEquals(help.code, 0);
  for (const name of APPLETS) assertMatch(help.stdout, new RegExp(`\\b${name}\\b`));
  const list = await exec([`${DIST_BIN}/cnikit`, "--list"], {});
  assertEquals(list.stdout.trim().split("\n").sort(), [...APPLETS].sort());
  assertMatch(
    (await exec([`${DIST_BIN}/cnikit`, "--version"], {})).stdout,
    /^cnikit \d+\.\d+\.\d+/,
  );
  for (const bad of ["nosuchplugin", "--bogus"]) {
    const unknown = await exec([`${DIST_BIN}/cnikit`, bad], {});
    assertEquals(unknown.code, 1);
    assertMatch(unknown.stderr, new RegExp(`unknown applet "${bad}"`));
  }
  assertEquals((await exec([`${DIST_BIN}/cnikit`], {})).code, 1);
});

for (const plugin of PLUGINS) {
  const name = plugin.name;
  Deno.test(`${name} answers VERSION by its symlink name and as "cnikit ${name}", with no PATH or HOME`, async () => {
    // Every version, unless the plugin names fewer (bandwidth: 0.3.0 on, as the reference).
    const versions = (await plugin.load()).versions ?? ALL_TEST_VERSIONS;
    for (const argv of [[`${DIST_BIN}/${name}`], [`${DIST_BIN}/cnikit`, name]]) {
      const run = await exec(argv, { CNI_COMMAND: "VERSION" });
      assertEquals(run.code, 0, run.stderr);
      assertEquals(JSON.parse(run.stdout).supportedVersions, [...versions]);
    }
  });
}

Deno.test("a plugin started without CNI_COMMAND prints what it is on stderr and exits 0", async () => {
  const run = await exec([`${DIST_BIN}/ptp`], {});
  assertEquals(run.code, 0);
  assertMatch(run.stderr, /CNI ptp plugin/);
  assertMatch(run.stderr, /CNI protocol versions supported: 0\.1\.0, .*1\.1\.0/);
});

Deno.test({
  name: "an ADD exec'd with an empty environment (no PATH, no HOME) still finds ip and works",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      await ctr.exec("ip", ["link", "set", "lo", "down"]);
      const env = {
        CNI_COMMAND: "ADD",
        CNI_CONTAINERID: "bare-env",
        CNI_NETNS: ctr.path,
        CNI_IFNAME: "eth0",
        CNI_PATH: DIST_BIN,
      };
      // `ip netns exec` needs a PATH itself; `env -i` then drops everything.
      const argv = [
        "ip",
        "netns",
        "exec",
        host.name,
        "/usr/bin/env",
        "-i",
        ...Object.entries(env).map(([k, v]) => `${k}=${v}`),
        `${DIST_BIN}/loopback`,
      ];
      const run = await exec(
        argv,
        { PATH: "/usr/sbin:/usr/bin:/sbin:/bin" },
        JSON.stringify({ cniVersion: "1.0.0", name: "bare", type: "loopback" }),
      );
      assertEquals(run.code, 0, run.stdout + run.stderr);
      assertEquals(JSON.parse(run.stdout).interfaces[0].name, "lo");
      const [lo] = await ctr.ipJson<{ flags: string[] }[]>("link", "show", "dev", "lo");
      assert(lo!.flags.includes("UP"));
    }),
});

Deno.test("a name cnikit has no applet for answers a CNI error (code 50) when CNI_COMMAND is set", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cnikit-alias-" });
  try {
    await Deno.symlink(`${DIST_BIN}/cnikit`, `${dir}/macvlan-x`);
    for (const command of ["ADD", "DEL", "VERSION"]) {
      const run = await exec([`${dir}/macvlan-x`], { CNI_COMMAND: command }, "{}");
      assertEquals(run.code, 1);
      const error = JSON.parse(run.stdout);
      assertEquals(error.code, 50);
      assertEquals(error.msg, 'cnikit has no plugin named "macvlan-x"');
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("each plugin's VERSION answer in the applet table is the one the loaded plugin has", async () => {
  for (const plugin of PLUGINS) {
    assertEquals(plugin.versions, (await plugin.load()).versions, plugin.name);
  }
});

Deno.test("a symlink to cnikit in another folder works (the launcher finds its chunks by its real path)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "cnikit-elsewhere-" });
  try {
    await Deno.symlink(`${DIST_BIN}/cnikit`, `${dir}/bridge`);
    const run = await exec([`${dir}/bridge`], { CNI_COMMAND: "VERSION" });
    assertEquals(run.code, 0, run.stderr);
    assertEquals(JSON.parse(run.stdout).supportedVersions, [...ALL_TEST_VERSIONS]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name:
    "a plugin writes nothing to Deno's cache, and what it starts sees the DENO_DIR it was given",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(1, async (host, ctr) => {
      const dir = await Deno.makeTempDir({ prefix: "cnikit-denodir-" });
      try {
        const cache = `${dir}/cache`;
        await Deno.mkdir(cache);
        // An IPAM plugin that records the DENO_DIR it got and fails.
        await Deno.mkdir(`${dir}/bin`);
        await Deno.writeTextFile(
          `${dir}/bin/envdump`,
          `#!/bin/sh\necho "\${DENO_DIR-unset}" >> ${dir}/seen\necho '{"code":7,"msg":"envdump"}'\nexit 1\n`,
        );
        await Deno.chmod(`${dir}/bin/envdump`, 0o755);
        const conf = { cniVersion: "1.0.0", name: "dd", type: "ptp", ipam: { type: "envdump" } };
        for (const denoDir of [cache, undefined]) {
          const env: Record<string, string> = {
            PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
            CNI_COMMAND: "ADD",
            CNI_CONTAINERID: "denodir",
            CNI_NETNS: ctr.path,
            CNI_IFNAME: "eth0",
            CNI_PATH: `${dir}/bin`,
            ...(denoDir ? { DENO_DIR: denoDir } : {}),
          };
          const argv = ["ip", "netns", "exec", host.name, `${DIST_BIN}/ptp`];
          const run = await exec(argv, env, JSON.stringify(conf));
          assertEquals(JSON.parse(run.stdout).msg, "envdump", run.stdout + run.stderr);
        }
        assertEquals((await Deno.readTextFile(`${dir}/seen`)).split("\n"), [cache, "unset", ""]);
        assertEquals([...Deno.readDirSync(cache)], [], "the plugin wrote into DENO_DIR");
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }),
});
