/**
 * Running plugins (lib/cni/invoke.ts): lookup, processes with exactly the
 * environment they are given, failure decoding, deadlines, and cnikit
 * applets run in this process. The process cases use executable fixtures
 * (tests/helpers/fake_plugin.ts), since a process is what they are about.
 */

import { assert, assertEquals, assertMatch, assertRejects } from "../../helpers/assert.ts";
import { FakePlugins, isSleep } from "../../helpers/fake_plugin.ts";
import { CniError } from "../../../lib/cni/errors.ts";
import { execPlugin, findPlugin, registerInProcess } from "../../../lib/cni/invoke.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";

const encoder = new TextEncoder();
const CONF = encoder.encode(JSON.stringify({ cniVersion: "1.0.0", name: "n", type: "a" }));

function envFor(command: string): Record<string, string> {
  return {
    PATH: "/usr/bin:/bin",
    CNI_COMMAND: command,
    CNI_CONTAINERID: "c1",
    CNI_NETNS: "/x",
    CNI_IFNAME: "eth0",
    CNI_ARGS: "",
    CNI_PATH: "/p",
  };
}

async function withPlugins(fn: (fake: FakePlugins) => Promise<void>): Promise<void> {
  const fake = FakePlugins.create("a");
  try {
    await fn(fake);
  } finally {
    fake.cleanup();
  }
}

Deno.test("findPlugin() takes the first folder that has the file and refuses path-like names", async () => {
  await withPlugins(async (fake) => {
    const second = await Deno.makeTempDir({ prefix: "cnikit-bin2-" });
    try {
      fake.add("a", second);
      fake.add("b", second);
      assertEquals(findPlugin("a", [fake.bin, second]), `${fake.bin}/a`);
      assertEquals(findPlugin("b", [fake.bin, second]), `${second}/b`);
      const missing = await assertRejects(() =>
        Promise.resolve().then(() => findPlugin("z", [fake.bin]))
      );
      assertEquals(missing.message, `failed to find plugin "z" in path [${fake.bin}]`);
      for (const bad of ["../a", ".", ".."]) {
        const e = await assertRejects(() =>
          Promise.resolve().then(() => findPlugin(bad, [fake.bin]))
        );
        assertEquals((e as CniError).code, 7);
      }
      const none = await assertRejects(() => Promise.resolve().then(() => findPlugin("a", [])));
      assertEquals(none.message, "no paths provided");
    } finally {
      await Deno.remove(second, { recursive: true });
    }
  });
});

Deno.test("execPlugin() gives the plugin exactly the environment and stdin it is handed", () =>
  withPlugins(async (fake) => {
    fake.respond("a", "ADD", { stdout: '{"cniVersion":"1.0.0"}' });
    const out = await execPlugin(`${fake.bin}/a`, envFor("ADD"), CONF);
    assertEquals(out, '{"cniVersion":"1.0.0"}');
    const call = fake.calls()[0]!;
    assertEquals(call.stdinText, new TextDecoder().decode(CONF));
    // Nothing of this process's own environment leaks in.
    const { PWD: _pwd, SHLVL: _shlvl, _: _underscore, ...env } = call.env;
    assertEquals(env, envFor("ADD"));
  }));

Deno.test("execPlugin() decodes a failed process as libcni: error JSON, stderr only, nothing, garbage", () =>
  withPlugins(async (fake) => {
    const cases: [Parameters<FakePlugins["respond"]>[2], number, string][] = [
      [{ stdout: { code: 7, msg: "bad", details: "why" }, exit: 1 }, 7, "bad"],
      [
        { stderr: "some stderr message", exit: 1 },
        0,
        'netplugin failed: "some stderr message": exit status 1',
      ],
      [{ stdout: "", exit: 2 }, 0, "netplugin failed with no error message: exit status 2"],
      [
        { stdout: "not json", exit: 3 },
        0,
        'netplugin failed but error parsing its diagnostic message "not json": ',
      ],
    ];
    for (const [answer, code, text] of cases) {
      fake.respond("a", "DEL", answer);
      const err = await assertRejects(() => execPlugin(`${fake.bin}/a`, envFor("DEL"), CONF));
      assert(err.message.startsWith(text), err.message);
      assertEquals((err as CniError).code, code);
    }
  }));

Deno.test("execPlugin() kills a plugin past its deadline and reports it as libcni does", () =>
  withPlugins(async (fake) => {
    fake.respond("a", "ADD", { sleep: 60 });
    const started = Date.now();
    const err = await assertRejects(() =>
      execPlugin(`${fake.bin}/a`, envFor("ADD"), CONF, { timeoutMs: 300 })
    );
    assertMatch(err.message, /netplugin failed with no error message: signal: killed/);
    // The plugin sleeps for a minute: returning well before that means it was killed.
    assert(Date.now() - started < 30_000);
    // On a busy machine the kill may come before the plugin starts its sleep.
    const pid = fake.sleepPid("a", "ADD");
    assert(pid === undefined || !isSleep(pid), "the plugin still runs");
  }));

Deno.test("execPlugin() does not wait for a killed plugin's leftover child holding the pipes", () =>
  withPlugins(async (fake) => {
    fake.respond("a", "ADD", { orphan: true });
    const started = Date.now();
    const err = await assertRejects(() =>
      execPlugin(`${fake.bin}/a`, envFor("ADD"), CONF, { timeoutMs: 300 })
    );
    assertMatch(err.message, /signal: killed/);
    // The leftover child sleeps for a minute.
    assert(Date.now() - started < 30_000);
  }));

/** A file standing in for the cnikit executable, linked in a folder under an applet's name. */
async function withSelf(
  name: string,
  plugin: Plugin,
  fn: (path: string) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "cnikit-self-" });
  try {
    // Not executable: only the in-process path can run it.
    await Deno.writeTextFile(`${dir}/cnikit`, "");
    await Deno.symlink(`${dir}/cnikit`, `${dir}/${name}`);
    registerInProcess(`${dir}/cnikit`, [{ name, load: () => Promise.resolve(plugin) }]);
    await fn(`${dir}/${name}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("execPlugin() runs a cnikit applet in this process, with the same inputs and output", async () => {
  const seen: CmdArgs[] = [];
  const inproc: Plugin = {
    name: "inproc",
    add(args: CmdArgs): Promise<Result> {
      seen.push(args);
      return Promise.resolve({ cniVersion: "1.0.0", ips: [{ address: "10.9.9.9/32" }] });
    },
    del: () => Promise.resolve(),
  };
  await withSelf("inproc", inproc, async (path) => {
    const out = JSON.parse(await execPlugin(path, envFor("ADD"), CONF));
    assertEquals(out, { cniVersion: "1.0.0", ips: [{ address: "10.9.9.9/32" }] });
    assertEquals(seen.length, 1);
    assertEquals([seen[0]!.containerId, seen[0]!.ifname, seen[0]!.netns], ["c1", "eth0", "/x"]);
    assertEquals(seen[0]!.stdin, CONF);
  });
});

Deno.test("execPlugin() applies the deadline to an in-process applet too", async () => {
  let release = () => {};
  const gate = new Promise<void>((resolve) => release = resolve);
  const slow: Plugin = {
    name: "slowproc",
    async add(): Promise<Result> {
      await gate;
      return { cniVersion: "1.0.0" };
    },
    del: () => Promise.resolve(),
  };
  try {
    await withSelf("slowproc", slow, async (path) => {
      const err = await assertRejects(() =>
        execPlugin(path, envFor("ADD"), CONF, { timeoutMs: 200 })
      );
      assertMatch(err.message, /netplugin failed with no error message: context deadline exceeded/);
    });
  } finally {
    release();
    await gate;
  }
});
