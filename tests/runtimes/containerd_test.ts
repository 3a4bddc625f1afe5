/**
 * containerd's `ctr run --cni` with a bridge → portmap list and nothing but
 * cnikit as /opt/cni/bin: the container gets its address and serves on it,
 * and when its task ends ctr's CNI DEL leaves no link, rule, lease or cache
 * entry. A containerd of the test's own (root, state and socket in a
 * temporary folder, ended by its PID) runs with ctr in a sandbox
 * (tests/helpers/sandbox.ts), where /etc and /opt are overlays, so the
 * machine's /etc/cni and /opt/cni are never touched.
 * @module
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { DIST_BIN } from "../helpers/applet.ts";
import { buildImage, IMAGE, noImage, PAGE } from "../helpers/image.ts";
import { links } from "../helpers/kernel.ts";
import { canNetns, spawnOutput, waitFor, withNamespaces } from "../helpers/netns.ts";
import { Sandbox } from "../helpers/sandbox.ts";
import { withTempDir } from "../helpers/tempdir.ts";

function found(cmd: string, arg = "--version"): boolean {
  try {
    return new Deno.Command(cmd, { args: [arg], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
}

/** Why containerd cannot run here, or undefined. */
const noContainerd = !found("containerd") || !found("ctr")
  ? "no containerd (Debian: containerd)"
  : !found("runc")
  ? "no runc (Debian: runc)"
  : noImage;
if (noContainerd) console.error(`containerd tests skipped: ${noContainerd}`);

const NETWORK = {
  cniVersion: "1.0.0",
  name: "cknet",
  plugins: [
    {
      type: "bridge",
      bridge: "ckcd0",
      isGateway: true,
      ipMasq: true,
      ipam: {
        type: "host-local",
        ranges: [[{ subnet: "10.89.8.0/24" }]],
        routes: [{ dst: "0.0.0.0/0" }],
      },
    },
    { type: "portmap", capabilities: { portMappings: true } },
  ],
};

Deno.test({
  name: "containerd: ctr run --cni with bridge → portmap and only cnikit; the task's end cleans up",
  ignore: !canNetns || noContainerd !== undefined,
  fn: () =>
    withTempDir((dir) =>
      withNamespaces(0, async (host) => {
        const image = await buildImage(`${dir}/image`);
        const socket = `${dir}/containerd.sock`;
        await Deno.writeTextFile(
          `${dir}/containerd.toml`,
          [
            "version = 2",
            `root = "${dir}/root"`,
            `state = "${dir}/state"`,
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
            "[grpc]",
            `  address = "${socket}"`,
            "[ttrpc]",
            `  address = "${dir}/containerd.ttrpc.sock"`,
            "",
          ].join("\n"),
        );
        const box = await Sandbox.create(host, `${dir}/box`);
        await box.run("mkdir", ["-p", "/etc/cni/net.d", "/opt/cni"]);
        await box.run("ln", ["-s", DIST_BIN, "/opt/cni/bin"]);
        await Deno.writeTextFile(`${dir}/cknet.conflist`, JSON.stringify(NETWORK));
        await box.run("cp", [`${dir}/cknet.conflist`, "/etc/cni/net.d/10-cknet.conflist"]);

        const [program, ...args] = box.argv("containerd", ["--config", `${dir}/containerd.toml`]);
        const daemon = new Deno.Command(program!, { args, stdout: "null", stderr: "null" }).spawn();
        let task: Deno.ChildProcess | undefined;
        const ctr = (...a: string[]) =>
          box.run("ctr", ["--address", socket, "--namespace", "cnikit", ...a]);
        try {
          await waitFor(
            async () => (await box.exec("ctr", ["--address", socket, "version"])).code === 0,
            "containerd",
          );
          await ctr("image", "import", "--snapshotter", "native", image);
          // ctr runs CNI ADD itself once the task exists, and DEL when it ends.
          const [p, ...rest] = box.argv("ctr", [
            "--address",
            socket,
            "--namespace",
            "cnikit",
            "run",
            "--rm",
            "--cni",
            "--snapshotter",
            "native",
            IMAGE,
            "web",
          ]);
          task = new Deno.Command(p!, { args: rest, stdout: "null", stderr: "piped" }).spawn();
          // What ctr says about its CNI calls, for the assertion messages.
          const said = new Response(task.stderr).text();
          const leases = async () =>
            (await box.exec("ls", ["/var/lib/cni/networks/cknet"])).stdout.split("\n")
              .filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
          await waitFor(async () => (await leases()).length === 1, "the container's lease");
          const [ip] = await leases();
          const page = async () =>
            (await spawnOutput("ip", [
              "netns",
              "exec",
              host.name,
              "curl",
              "-s",
              "--max-time",
              "5",
              `http://${ip}/`,
            ]))
              .stdout;
          await waitFor(async () => (await page()) === PAGE, "the container's web server");
          assert(
            (await links(host)).some((l) => l.ifname === "ckcd0"),
            "no bridge",
          );
          assertEquals(
            (await box.run("ls", ["/var/lib/cni/results"])).trim().split("\n").length,
            1,
          );

          await ctr("task", "kill", "-s", "SIGKILL", "web");
          await task.status;
          task = undefined;
          const log = await said;
          assertEquals(
            (await links(host)).filter((l) => l.linkinfo?.info_kind === "veth"),
            [],
            log,
          );
          assertEquals(await leases(), [], log);
          const rules = (await host.exec("iptables-save", [])).split("\n").filter((l) =>
            l.includes(ip!)
          );
          assertEquals(rules, []);
          assertEquals((await box.exec("ls", ["/var/lib/cni/results"])).stdout.trim(), "");
        } finally {
          if (task) {
            await box.exec("ctr", [
              "--address",
              socket,
              "--namespace",
              "cnikit",
              "task",
              "kill",
              "-s",
              "SIGKILL",
              "web",
            ]);
            await Promise.all([task.status, task.stderr.cancel().catch(() => {})]);
          }
          await box.exec("ctr", [
            "--address",
            socket,
            "--namespace",
            "cnikit",
            "container",
            "rm",
            "web",
          ]);
          daemon.kill("SIGTERM");
          await daemon.status;
          await box.close();
        }
      })
    ),
});
