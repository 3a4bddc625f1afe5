/**
 * podman 4 on its CNI backend with nothing but cnikit in its plugin folder:
 * `podman network create` writes podman's own list (bridge → portmap →
 * firewall → tuning), `podman run -p 8080:80` gets an address and a
 * published port that answers from another namespace, and `podman rm -f`
 * leaves no link, rule, lease or cache entry. podman runs inside a sandbox
 * (tests/helpers/sandbox.ts): a fake host's network namespace and a private
 * mount namespace; its configuration, storage and state live in a temporary
 * folder.
 * @module
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { DIST_BIN } from "../helpers/applet.ts";
import { buildImage, IMAGE, noImage, PAGE } from "../helpers/image.ts";
import { links, vethBetween } from "../helpers/kernel.ts";
import { canNetns, sh, spawnOutput, waitFor, withNamespaces } from "../helpers/netns.ts";
import { Sandbox } from "../helpers/sandbox.ts";
import { withTempDir } from "../helpers/tempdir.ts";

function found(cmd: string): boolean {
  try {
    return new Deno.Command(cmd, { args: ["--version"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Why podman cannot run here, or undefined. */
const noPodman = !found("podman")
  ? "no podman (Debian: podman)"
  : !found("runc")
  ? "no runc (Debian: runc; crun refuses this machine's hybrid cgroups)"
  : noImage;
if (noPodman) console.error(`podman tests skipped: ${noPodman}`);

/** podman's configuration: the CNI backend, cnikit's folder only, everything else here. */
function containersConf(dir: string): string {
  return [
    "[containers]",
    // Raising limits is refused in this sandbox; stay below the host's.
    'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]',
    "[engine]",
    'cgroup_manager = "cgroupfs"',
    'events_logger = "file"',
    'runtime = "runc"',
    "[network]",
    'network_backend = "cni"',
    `cni_plugin_dirs = ["${DIST_BIN}"]`,
    `network_config_dir = "${dir}/net.d"`,
    "",
  ].join("\n");
}

Deno.test({
  name:
    "podman (CNI backend) with only cnikit: run -p 8080:80 answers from outside; rm -f cleans up",
  ignore: !canNetns || noPodman !== undefined,
  fn: () =>
    withTempDir((dir) =>
      withNamespaces(1, async (host, outside) => {
        await vethBetween(host, "ckout", outside, "ckin");
        await sh("ip", ["-n", host.name, "addr", "add", "192.0.2.1/24", "dev", "ckout"]);
        await sh("ip", ["-n", outside.name, "addr", "add", "192.0.2.2/24", "dev", "ckin"]);
        await Deno.mkdir(`${dir}/net.d`);
        await Deno.writeTextFile(`${dir}/containers.conf`, containersConf(dir));
        const image = await buildImage(`${dir}/image`);
        const box = await Sandbox.create(host, `${dir}/box`);
        const global = [
          ...["--root", `${dir}/root`, "--runroot", `${dir}/runroot`, "--tmpdir", `${dir}/tmp`],
          ...["--storage-driver", "vfs"],
        ];
        const env = { CONTAINERS_CONF: `${dir}/containers.conf` };
        const podman = (...args: string[]) => box.run("podman", [...global, ...args], env);
        try {
          await podman("load", "-i", image);
          await podman("network", "create", "--disable-dns", "--subnet", "10.89.7.0/24", "cknet");
          const list = JSON.parse(await Deno.readTextFile(`${dir}/net.d/cknet.conflist`));
          assertEquals(
            list.plugins.map((p: { type: string }) => p.type),
            ["bridge", "portmap", "firewall", "tuning"],
          );

          await podman("run", "-d", "--name", "web", "-p", "8080:80", "--network", "cknet", IMAGE);
          const net = JSON.parse(
            await podman("inspect", "web", "--format", "{{json .NetworkSettings.Networks.cknet}}"),
          );
          const ip = net.IPAddress as string;
          assertEquals(net.Gateway, "10.89.7.1");
          assert(ip.startsWith("10.89.7."), ip);
          assert((await podman("exec", "web", "ip", "-o", "addr", "show", "eth0")).includes(ip));

          // From another namespace, to the host's own address.
          const fetch = async (ns: string, url: string) =>
            (await spawnOutput("ip", ["netns", "exec", ns, "curl", "-s", "--max-time", "5", url]))
              .stdout;
          await waitFor(
            async () => (await fetch(outside.name, "http://192.0.2.1:8080/")) === PAGE,
            "the published port",
          );
          assertEquals(await fetch(host.name, `http://${ip}/`), PAGE);

          await podman("rm", "-f", "-t", "0", "web");
          assertEquals(
            (await links(host)).filter((l) =>
              l.linkinfo?.info_kind === "veth" && l.ifname !== "ckout"
            ),
            [],
          );
          const rules = (await host.exec("iptables-save", [])).split("\n").filter((l) =>
            l.includes(ip)
          );
          assertEquals(rules, []);
          assertEquals(
            await box.run("find", [
              "/var/lib/cni",
              "-type",
              "f",
              "-not",
              "-name",
              "lock",
              "-not",
              "-name",
              "last_reserved_ip.0",
            ]),
            "",
          );
          assertEquals(await fetch(outside.name, "http://192.0.2.1:8080/"), "");
        } finally {
          await box.exec("podman", [...global, "rm", "-a", "-f", "-t", "0"], env);
          await box.close();
        }
      })
    ),
});
