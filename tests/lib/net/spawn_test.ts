import { assert, assertEquals, assertRejects, assertThrows } from "../../helpers/assert.ts";
import { canNetns, withNamespaces } from "../../helpers/netns.ts";
import { spawn } from "../../../lib/net/spawn.ts";
import { closeLibc } from "../../../lib/net/libc.ts";
import { withNetnsSync } from "../../../lib/net/netns.ts";
import { run } from "../../../lib/net/exec.ts";
import { CniError } from "../../../lib/cni/errors.ts";

const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

/** Each test unloads libc after itself, so the resource sanitizer stays quiet. */
function test(name: string, fn: () => Promise<void>, ignore = false): void {
  Deno.test({
    name,
    ignore,
    fn: async () => {
      try {
        await fn();
      } finally {
        closeLibc();
      }
    },
  });
}

test("spawn: stdin reaches the child, stdout and stderr come back apart, the exit code too", async () => {
  const cat = await spawn("/bin/cat", [], "line one\nline two\n").wait();
  assertEquals(cat, {
    code: 0,
    stdout: new TextEncoder().encode("line one\nline two\n"),
    stderr: new Uint8Array(),
  });
  const ls = await spawn("/bin/ls", ["/nonexistent-cnikit"]).wait();
  assertEquals(ls.code, 2);
  assertEquals(text(ls.stdout), "");
  assert(text(ls.stderr).includes("/nonexistent-cnikit"), text(ls.stderr));
});

test("spawn: output far beyond a pipe's 64 KiB neither blocks the child nor is cut", async () => {
  const out = await spawn("/usr/bin/head", ["-c", "1000000", "/dev/zero"]).wait();
  assertEquals(out.code, 0);
  assertEquals(out.stdout.length, 1_000_000);
  const input = "x".repeat(300_000);
  const echoed = await spawn("/usr/bin/wc", ["-c"], input).wait();
  assertEquals(text(echoed.stdout).trim(), "300000");
});

test("spawn: a child without stdin reads end of file at once", async () => {
  const out = await spawn("/usr/bin/wc", ["-c"]).wait();
  assertEquals(text(out.stdout).trim(), "0");
});

test("spawn: the child gets this process's environment as it is now", async () => {
  Deno.env.set("CNIKIT_SPAWN_TEST", "value with spaces");
  try {
    const out = await spawn("/usr/bin/printenv", ["CNIKIT_SPAWN_TEST"]).wait();
    assertEquals(text(out.stdout), "value with spaces\n");
  } finally {
    Deno.env.delete("CNIKIT_SPAWN_TEST");
  }
});

test("spawn: a child ended by a signal reports 128 + the signal; its pid is the real one", async () => {
  const sleeper = spawn("/bin/sleep", ["30"]);
  Deno.kill(sleeper.pid, "SIGTERM");
  assertEquals((await sleeper.wait()).code, 128 + 15);
});

test("spawn: SIGPIPE is back at its default in the child, though Deno ignores it", async () => {
  // `yes` ends by SIGPIPE when its reader goes away; with SIGPIPE ignored it would
  // instead fail with EPIPE and exit 1.
  const script = "yes | head -n 1 >/dev/null; echo ${PIPESTATUS[0]}";
  const status = await spawn("/bin/bash", ["-c", script]).wait();
  assertEquals(text(status.stdout).trim(), String(128 + 13));
});

test("spawn: twenty children at once each get their own output", async () => {
  const children = Array.from({ length: 20 }, (_, i) => spawn("/bin/echo", [`child ${i}`]));
  const outputs = await Promise.all(children.map((c) => c.wait()));
  outputs.forEach((out, i) => assertEquals(text(out.stdout), `child ${i}\n`));
});

test("spawn: a program that cannot be started throws at once, naming it", async () => {
  assertThrows(() => spawn("/nonexistent/cnikit-tool", []), "/nonexistent/cnikit-tool");
  await Promise.resolve();
});

test(
  "spawn inside withNetnsSync starts the child in that namespace",
  () =>
    withNamespaces(1, async (_host, ns) => {
      await ns.exec("ip", ["link", "add", "ckspawn0", "type", "bridge"]);
      const child = withNetnsSync(ns.path, () => spawn("/usr/sbin/ip", ["-o", "link", "show"]));
      const links = text((await child.wait()).stdout);
      assert(links.includes("ckspawn0"), links);
      const home = text((await spawn("/usr/sbin/ip", ["-o", "link", "show"]).wait()).stdout);
      assert(!home.includes("ckspawn0"), home);
    }),
  !canNetns,
);

test("run: a failing command is a CniError with the command line and its stderr", async () => {
  const e = await assertRejects(() => run("ls", ["/nonexistent-cnikit"]), "/nonexistent-cnikit");
  assert(e instanceof CniError);
  assertEquals(e.code, 5);
  assertEquals(e.details, "ls /nonexistent-cnikit");
  assertEquals((await run("ls", ["/nonexistent-cnikit"], { allowFailure: true })).code, 2);
});
