import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { DIST_BIN } from "../helpers/applet.ts";
import { canNetns, sh, spawnOutput, type TestNetns, withNamespaces } from "../helpers/netns.ts";
import { withTempDir } from "../helpers/tempdir.ts";
import { PLUGINS } from "../../applets.ts";
import { CHUNK_DIR } from "../../lib/cni/paths.ts";

/** `cnikit <args>` inside `host` (a namespace playing the node). */
function cnikitIn(host: TestNetns, args: string[]) {
  return spawnOutput("ip", ["netns", "exec", host.name, `${DIST_BIN}/cnikit`, ...args]);
}

/** Gives `host` an address on a veth, as a node's underlay. */
async function underlay(host: TestNetns): Promise<void> {
  await sh("ip", ["-n", host.name, "link", "add", "eth0", "type", "veth", "peer", "name", "peer0"]);
  await sh("ip", ["-n", host.name, "addr", "add", "10.123.0.10/24", "dev", "eth0"]);
  await sh("ip", ["-n", host.name, "link", "set", "eth0", "up"]);
  await sh("ip", ["-n", host.name, "link", "set", "peer0", "up"]);
}

Deno.test({
  name: "cnikit agent: bad flags exit 2 with the reason, before touching anything",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(0, async (host) => {
      await underlay(host);
      const base = ["agent", "--etcd-endpoints", "http://127.0.0.1:2379", "--node-name", "n1"];
      for (
        const [args, message] of [
          [[...base], "--cluster-cidr is required"],
          [[...base, "--cluster-cidr", "10.244.0.0/16", "--bogus"], 'unknown flag "--bogus"'],
          [[...base, "--cluster-cidr", "10.244.0.1/16"], "has host bits set"],
          [[...base, "--cluster-cidr", "10.244.0.0/16", "--backend", "udp"], "--backend must be"],
          [
            [...base, "--cluster-cidr", "10.244.0.0/16", "--public-ip", "10.9.9.9"],
            "--public-ip 10.9.9.9 is not an address of this node",
          ],
        ] as const
      ) {
        const out = await cnikitIn(host, [...args]);
        assertEquals(out.code, 2, out.stderr);
        assertMatch(out.stderr, new RegExp(message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")));
      }
      // Nothing of the agent's was made.
      assertEquals(await sh("ip", ["-n", host.name, "route", "show", "proto", "152"]), "");
      const help = await cnikitIn(host, ["agent", "--help"]);
      assertEquals(help.code, 0);
      assertMatch(help.stdout, /--etcd-endpoints URL,\.\.\. +etcd client URLs/);
    }),
});

Deno.test({
  name: "cnikit agent: etcd unreachable at start is retried for --start-timeout, then exit 3",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(0, (host) =>
      withTempDir(async (dir) => {
        await underlay(host);
        // No --public-ip: the address of the default route's link is taken.
        await sh("ip", ["-n", host.name, "route", "add", "default", "via", "10.123.0.1"]);
        const started = Date.now();
        const out = await cnikitIn(host, [
          "agent",
          "--etcd-endpoints",
          "http://127.0.0.1:1,http://127.0.0.1:2",
          "--cluster-cidr",
          "10.244.0.0/16",
          "--node-name",
          "n1",
          "--state-dir",
          `${dir}/state`,
          "--cni-conf-dir",
          `${dir}/net.d`,
          "--start-timeout",
          "2",
        ]);
        const ms = Date.now() - started;
        assertEquals(out.code, 3, out.stderr);
        assertMatch(out.stderr, /waiting for etcd \(up to 2 s\)/);
        assertMatch(
          out.stderr,
          /gave up after 2 s: etcd unreachable at http:\/\/127\.0\.0\.1:1, http:\/\/127\.0\.0\.1:2: .*refused/,
        );
        console.log(`exit 3 after ${ms} ms`);
        // Nothing was written: no list, no lease.
        assertEquals([...Deno.readDirSync(dir)], []);
      })),
});

Deno.test("cnikit agent status: no status file is exit 1 with a hint", () =>
  withTempDir(async (dir) => {
    const out = await spawnOutput(`${DIST_BIN}/cnikit`, ["agent", "status", "--state-dir", dir]);
    assertEquals(out.code, 1);
    assertMatch(out.stderr, /no status in .* \(has the agent run on this node\?\)/);
  }));

/** The entries of a directory as `name -> target` (links) or `name (file)`. */
function listing(dir: string): string[] {
  return [...Deno.readDirSync(dir)].map((e) =>
    e.isSymlink
      ? `${e.name} -> ${Deno.readLinkSync(`${dir}/${e.name}`)}`
      : `${e.name} (${e.isDirectory ? "folder" : "file"})`
  ).sort();
}

Deno.test("cnikit install: copies cnikit and links every plugin, keeps other plugins, writes no list without a subnet", () =>
  withTempDir(async (dir) => {
    const bin = `${dir}/bin`;
    await Deno.mkdir(bin);
    // A plugin cnikit does not provide stays as it is.
    await Deno.writeTextFile(`${bin}/flannel`, "#!/bin/sh\necho flannel\n");
    await Deno.writeTextFile(`${bin}/ptp`, "#!/bin/sh\necho reference ptp\n");
    const args = [
      "--bin-dir",
      bin,
      "--state-dir",
      `${dir}/state`,
      "--cni-conf-dir",
      `${dir}/net.d`,
    ];
    const out = await spawnOutput(`${DIST_BIN}/cnikit`, ["install", ...args]);
    assertEquals(out.code, 0, out.stderr);
    assertMatch(out.stdout, /no subnet saved in .* yet; the agent writes .*10-cnikit\.conflist/);
    const plugins = PLUGINS.map((p) => p.name);
    // A launcher build's code is in its chunk folder, which comes along.
    const chunks = listing(DIST_BIN).filter((e) => e === `${CHUNK_DIR} (folder)`);
    assertEquals(
      listing(bin),
      ["cnikit (file)", "flannel (file)", ...chunks, ...plugins.map((p) => `${p} -> cnikit`)]
        .sort(),
    );
    assertEquals(await Deno.readFile(`${bin}/cnikit`), await Deno.readFile(`${DIST_BIN}/cnikit`));
    if (chunks.length) {
      assertEquals(listing(`${bin}/${CHUNK_DIR}`), listing(`${DIST_BIN}/${CHUNK_DIR}`));
    }
    assertEquals(await Deno.readTextFile(`${bin}/flannel`), "#!/bin/sh\necho flannel\n");
    const version = await spawnOutput(`${bin}/ptp`, [], { env: { CNI_COMMAND: "VERSION" } });
    assertEquals(JSON.parse(version.stdout).cniVersion, "1.1.0");
    assert(!(await Deno.stat(`${dir}/net.d`).catch(() => undefined)), "no list written");

    // --keep-existing leaves a file of another program under a plugin's name.
    await Deno.remove(`${bin}/bridge`);
    await Deno.writeTextFile(`${bin}/bridge`, "#!/bin/sh\n");
    const keep = await spawnOutput(`${DIST_BIN}/cnikit`, ["install", ...args, "--keep-existing"]);
    assertEquals(keep.code, 0, keep.stderr);
    assertMatch(keep.stdout, /kept the existing bridge/);
    assertEquals(await Deno.readTextFile(`${bin}/bridge`), "#!/bin/sh\n");
  }));

Deno.test("cnikit install writes the node's list from the subnet an earlier agent run saved", () =>
  withTempDir(async (dir) => {
    await Deno.mkdir(`${dir}/state`);
    await Deno.writeTextFile(
      `${dir}/state/subnet.json`,
      JSON.stringify({
        node: "n1",
        clusterCIDR: "10.244.0.0/16",
        subnet: "10.244.7.0/24",
        mtu: 1450,
      }),
    );
    const args = [
      "install",
      "--bin-dir",
      `${dir}/bin`,
      "--state-dir",
      `${dir}/state`,
      "--cni-conf-dir",
      `${dir}/net.d`,
      "--ipam-data-dir",
      `${dir}/ipam`,
    ];
    const out = await spawnOutput(`${DIST_BIN}/cnikit`, args);
    assertEquals(out.code, 0, out.stderr);
    assertMatch(out.stdout, /wrote .*10-cnikit\.conflist \(10\.244\.7\.0\/24\)/);
    const list = JSON.parse(await Deno.readTextFile(`${dir}/net.d/10-cnikit.conflist`));
    assertEquals(list.plugins[0].ipam.ranges, [[{ subnet: "10.244.7.0/24" }]]);
    assertEquals(list.plugins[0].ipam.dataDir, `${dir}/ipam`);
    assertEquals(list.plugins[0].mtu, 1450);
    // Only the list: the temporary file it was written through is gone.
    assertEquals(listing(`${dir}/net.d`), ["10-cnikit.conflist (file)"]);
    const again = await spawnOutput(`${DIST_BIN}/cnikit`, args);
    assertMatch(again.stdout, /kept .*10-cnikit\.conflist/);
    const bad = await spawnOutput(`${DIST_BIN}/cnikit`, ["install", "--bin-dir"]);
    assertEquals(bad.code, 2);
    assertMatch(bad.stderr, /--bin-dir needs a value/);
  }));
