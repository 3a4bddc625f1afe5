/**
 * host-device against the kernel: the "host devices" are veth ends the test
 * makes in the fake host (this kernel has veth; a dummy needs the second
 * kernel, host-device_dummy_test.ts), moved into a container namespace and
 * back. Device selection by sysfs runs on a fake sysfs tree in a temporary
 * directory (`CNIKIT_SYSFS`), as the reference's tests fake theirs: the real
 * /sys is never read for it.
 * @module
 */

import { assert, assertEquals, assertMatch } from "../../helpers/assert.ts";
import {
  ALL_TEST_VERSIONS,
  assertSuccess,
  currentResult,
  type PluginRun,
} from "../../helpers/applet.ts";
import { type Device, hdConf, hostDevice, hostVeth, shape } from "../../helpers/host_device.ts";
import { hostLocal, leases } from "../../helpers/ipam.ts";
import { addresses, link, links } from "../../helpers/kernel.ts";
import { canNetns, sh, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { withTempDir } from "../../helpers/tempdir.ts";
import { versionAtLeast } from "../../../lib/cni/spec/version.ts";

function assertFailed(run: PluginRun, code: number, msg: RegExp): void {
  assert(run.code !== 0, `expected a failure: ${run.stdout}`);
  assertEquals(run.json?.code, code, run.stdout + run.stderr);
  assertMatch(String(run.json?.msg), msg);
}

for (const version of ALL_TEST_VERSIONS) {
  Deno.test({
    name: `host-device ADD/CHECK/DEL/DEL moves a device in and back (cniVersion ${version})`,
    ignore: !canNetns,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const dev = await hostVeth(host, "hostdev0");
        const conf = hdConf(version, {
          device: "hostdev0",
          ipam: hostLocal("dual", dataDir, { routes: [{ dst: "10.66.0.0/16" }] }),
        });
        const at = { netns: ctr.path, ifname: "net1" };
        const add = assertSuccess(await hostDevice("ADD", host, at, conf));
        const result = currentResult(add, version);
        if (versionAtLeast(version, "0.3.0")) {
          assertEquals(result.interfaces, [{ name: "net1", mac: dev.address, sandbox: ctr.path }]);
        }
        assertEquals(result.ips?.map((ip) => ip.address), ["10.88.0.2/24", "fd00:88::2/64"]);
        assertEquals(await link(host, "hostdev0"), undefined);
        const inside = (await link(ctr, "net1")) as Device;
        assertEquals(shape(inside), {
          ifname: "net1",
          kind: "veth",
          mac: dev.address,
          up: true,
          alias: "hostdev0",
          addrs: ["10.88.0.2/24 brd 10.88.0.255", "fd00:88::2/64"],
        });
        assertEquals(
          (await ctr.ipJson<{ dst: string; gateway?: string }[]>("route", "show", "dev", "net1"))
            .map((r) => `${r.dst} ${r.gateway ?? ""}`.trim()),
          ["10.66.0.0/16 10.88.0.1", "10.88.0.0/24"],
        );
        assertEquals(await leases(dataDir, "hdnet"), ["10.88.0.2", "fd00:88::2"]);
        if (versionAtLeast(version, "0.4.0")) {
          assertSuccess(await hostDevice("CHECK", host, at, { ...conf, prevResult: add.json }));
        }
        const delConf = versionAtLeast(version, "0.4.0") ? { ...conf, prevResult: add.json } : conf;
        for (let i = 0; i < 2; i++) {
          assertSuccess(await hostDevice("DEL", host, at, delConf));
          // Back under its name, alias cleared, down (as the reference leaves it).
          assertEquals(shape((await link(host, "hostdev0")) as Device), {
            ifname: "hostdev0",
            kind: "veth",
            mac: dev.address,
            up: false,
            alias: "",
            addrs: [],
          });
          assertEquals(await link(ctr, "net1"), undefined);
          assertEquals(await leases(dataDir, "hdnet"), []);
        }
      }),
  });
}

Deno.test({
  name:
    "host-device without IPAM keeps the device's MAC and up state; a name taken in the container is no clash",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (_dataDir, host, ctr) => {
      const dev = await hostVeth(host, "eth0");
      // The container has an eth0 of its own: the device is renamed on the way in.
      await sh("ip", [
        "-n",
        ctr.name,
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0p",
      ]);
      const own = (await link(ctr, "eth0")) as Device;
      const conf = hdConf("1.1.0", { device: "eth0" });
      const at = { netns: ctr.path, ifname: "net1" };
      const add = assertSuccess(await hostDevice("ADD", host, at, conf));
      assertEquals(add.json, {
        cniVersion: "1.1.0",
        interfaces: [{ name: "net1", mac: dev.address, sandbox: ctr.path }],
      });
      assertEquals(shape((await link(ctr, "net1")) as Device), {
        ifname: "net1",
        kind: "veth",
        mac: dev.address,
        up: true,
        alias: "eth0",
        addrs: [],
      });
      assertSuccess(await hostDevice("CHECK", host, at, { ...conf, prevResult: add.json }));
      assertSuccess(await hostDevice("DEL", host, at, { ...conf, prevResult: add.json }));
      assertEquals((await link(host, "eth0"))?.address, dev.address);
      assertEquals(shape((await link(ctr, "eth0")) as Device), shape(own));
    }),
});

Deno.test({
  name: "host-device: IPv6 on a device without carrier, where DAD cannot run, is no failure",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      await hostVeth(host, "nocarrier0");
      await sh("ip", ["-n", host.name, "link", "set", "nocarrier0p", "down"]);
      const conf = hdConf("1.0.0", { device: "nocarrier0", ipam: hostLocal("v6", dataDir) });
      const at = { netns: ctr.path, ifname: "net1" };
      assertSuccess(await hostDevice("ADD", host, at, conf));
      const l = (await link(ctr, "net1"))!;
      assertEquals(addresses(l), ["fd00:88::2/64"]);
      assert(l.flags.includes("NO-CARRIER"));
    }),
});

Deno.test({
  name: "host-device finds the device by hwaddr in Go's MAC forms",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (_dataDir, host, ctr) => {
      const dev = await hostVeth(host, "hwdev0");
      await hostVeth(host, "hwdev1");
      const dashed = dev.address.toUpperCase().replaceAll(":", "-");
      const at = { netns: ctr.path, ifname: "net1" };
      const conf = hdConf("1.0.0", { hwaddr: dashed });
      assertSuccess(await hostDevice("ADD", host, at, conf));
      assertEquals((await link(ctr, "net1"))?.address, dev.address);
      assertSuccess(await hostDevice("DEL", host, at, conf));
      assertFailed(
        await hostDevice("ADD", host, at, hdConf("1.0.0", { hwaddr: "02:00:00:00:00:99" })),
        7,
        /^failed to find host device: failed to find physical interface$/,
      );
      assertFailed(
        await hostDevice("ADD", host, at, hdConf("1.0.0", { hwaddr: "not-a-mac" })),
        7,
        /^failed to find host device: failed to parse MAC address "not-a-mac"$/,
      );
    }),
});

/**
 * A fake sysfs tree under `root`: a PCI device 0000:00:01.0 bound to
 * `driver` whose net directory names `netdev` (in a virtio subdirectory
 * with `virtio`), its /sys/devices path, and an auxiliary-bus device
 * mlx5_core.sf.4 whose net directory names `auxNetdev`.
 */
async function fakeSysfs(
  root: string,
  o: { netdev?: string; driver: string; virtio?: boolean; auxNetdev?: string },
): Promise<void> {
  const device = `${root}/devices/pci0000:00/0000:00:01.0`;
  const net = o.virtio ? `${device}/virtio3/net` : `${device}/net`;
  await Deno.mkdir(`${root}/bus/pci/drivers/${o.driver}`, { recursive: true });
  await Deno.mkdir(`${root}/bus/pci/devices`, { recursive: true });
  await Deno.mkdir(o.netdev ? `${net}/${o.netdev}` : device, { recursive: true });
  await Deno.symlink(`../../../bus/pci/drivers/${o.driver}`, `${device}/driver`);
  await Deno.symlink(
    "../../../devices/pci0000:00/0000:00:01.0",
    `${root}/bus/pci/devices/0000:00:01.0`,
  );
  if (o.auxNetdev) {
    const aux = `${root}/devices/pci0000:00/0000:00:01.0/mlx5_core.sf.4`;
    await Deno.mkdir(`${aux}/net/${o.auxNetdev}`, { recursive: true });
    await Deno.mkdir(`${root}/bus/auxiliary/devices`, { recursive: true });
    await Deno.symlink(
      "../../../devices/pci0000:00/0000:00:01.0/mlx5_core.sf.4",
      `${root}/bus/auxiliary/devices/mlx5_core.sf.4`,
    );
  }
}

Deno.test({
  name:
    "host-device finds the device by kernelpath, pciBusID (virtio too) and runtimeConfig.deviceID on a fake sysfs",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (_dataDir, host, ctr) => {
      const dev = await hostVeth(host, "pcidev0");
      const aux = await hostVeth(host, "auxdev0");
      const at = { netns: ctr.path, ifname: "net1" };
      const cases: [string, Record<string, unknown>, boolean, Device][] = [
        ["kernelpath", { kernelpath: "/sys/devices/pci0000:00/0000:00:01.0" }, false, dev],
        ["pciBusID", { pciBusID: "0000:00:01.0" }, false, dev],
        ["pciBusID of a virtio device", { pciBusID: "0000:00:01.0" }, true, dev],
        ["deviceID (PCI)", { runtimeConfig: { deviceID: "0000:00:01.0" } }, false, dev],
        ["deviceID (auxiliary bus)", { runtimeConfig: { deviceID: "mlx5_core.sf.4" } }, false, aux],
      ];
      for (const [what, keys, virtio, want] of cases) {
        await withTempDir(async (sysfs) => {
          await fakeSysfs(sysfs, {
            netdev: "pcidev0",
            driver: "e1000e",
            virtio,
            auxNetdev: "auxdev0",
          });
          const conf = hdConf("1.0.0", keys);
          const add = await hostDevice("ADD", host, { ...at, sysfs }, conf);
          assertSuccess(add);
          assertEquals((await link(ctr, "net1"))?.address, want.address, what);
          assertSuccess(await hostDevice("DEL", host, { ...at, sysfs }, conf));
          assertEquals((await link(host, want.ifname))?.address, want.address, what);
        });
      }
    }),
});

Deno.test({
  name: "host-device refuses what it cannot find, with the reference's words, and changes nothing",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      await hostVeth(host, "present0");
      const before = (await links(host)).map(shape);
      const at = { netns: ctr.path, ifname: "net1" };
      await withTempDir(async (sysfs) => {
        await fakeSysfs(sysfs, { driver: "e1000e" });
        const cases: [Record<string, unknown>, number, RegExp][] = [
          [{}, 7, /^specify either "device", "hwaddr", "kernelpath" or "pciBusID"$/],
          [
            { device: "absent0", ipam: hostLocal("v4", dataDir) },
            7,
            /^failed to find host device: /,
          ],
          [{ kernelpath: "/etc/devices" }, 7, /must be absolute and begin with \/sys\/devices\//],
          [{ pciBusID: "0000:00:01.0" }, 7, /no net directory under pci device 0000:00:01.0/],
          [{ pciBusID: "0000:00:09.0" }, 7, /^error with host device: /],
          [
            { runtimeConfig: { deviceID: "0000:00:09.0" } },
            7,
            /^runtime config DeviceID 0000:00:09.0 not found or unsupported$/,
          ],
          [{ runtimeConfig: { deviceID: "../../etc" } }, 7, /is not a device id/],
          [{ device: 5 }, 6, /device/],
        ];
        for (const [keys, code, msg] of cases) {
          assertFailed(
            await hostDevice("ADD", host, { ...at, sysfs }, hdConf("1.0.0", keys)),
            code,
            msg,
          );
        }
      });
      assertEquals((await links(host)).map(shape), before);
      assertEquals((await links(ctr)).length, 0);
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name:
    "host-device in DPDK mode (vfio-pci on a fake sysfs) passes IPAM's result on and moves nothing",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      await withTempDir(async (sysfs) => {
        await fakeSysfs(sysfs, { driver: "vfio-pci" });
        const conf = hdConf("1.1.0", { pciBusID: "0000:00:01.0", ipam: hostLocal("v4", dataDir) });
        const at = { netns: ctr.path, ifname: "net1", sysfs };
        const add = assertSuccess(await hostDevice("ADD", host, at, conf));
        assertEquals(add.json, {
          cniVersion: "1.1.0",
          interfaces: [{ name: "net1", sandbox: ctr.path }],
          ips: [{ address: "10.88.0.2/24", gateway: "10.88.0.1", interface: 0 }],
        });
        assertEquals((await links(ctr)).length, 0);
        assertSuccess(await hostDevice("CHECK", host, at, { ...conf, prevResult: add.json }));
        assertSuccess(await hostDevice("DEL", host, at, conf));
        assertEquals(await leases(dataDir), []);
        const l2 = assertSuccess(
          await hostDevice("ADD", host, at, hdConf("1.1.0", { pciBusID: "0000:00:01.0" })),
        );
        assertEquals(l2.json, {
          cniVersion: "1.1.0",
          interfaces: [{ name: "net1", sandbox: ctr.path }],
        });
      });
    }),
});

Deno.test({
  name: "host-device: a failed ADD gives the device back as it was and releases the lease",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const dev = await hostVeth(host, "rbdev0");
      // CNI_IFNAME is taken in the container: the rename there fails.
      await sh("ip", [
        "-n",
        ctr.name,
        "link",
        "add",
        "net1",
        "type",
        "veth",
        "peer",
        "name",
        "net1p",
      ]);
      const own = await link(ctr, "net1");
      const conf = hdConf("1.1.0", { device: "rbdev0", ipam: hostLocal("v4", dataDir) });
      const add = await hostDevice("ADD", host, { netns: ctr.path, ifname: "net1" }, conf);
      assertFailed(add, 999, /already exists in the container/);
      assertEquals(shape((await link(host, "rbdev0")) as Device), shape(dev));
      assertEquals(await link(ctr, "net1"), own);
      assertEquals((await links(ctr)).map((l) => l.ifname).sort(), ["net1", "net1p"]);
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name:
    "host-device DEL fails while a host link holds the name, the device kept in the container, then succeeds",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (_dataDir, host, ctr) => {
      const dev = await hostVeth(host, "clash0");
      const conf = hdConf("1.0.0", { device: "clash0" });
      const at = { netns: ctr.path, ifname: "net1" };
      const add = assertSuccess(await hostDevice("ADD", host, at, conf));
      const inside = shape((await link(ctr, "net1")) as Device);
      await hostVeth(host, "clash0", "clash1");
      const del = await hostDevice("DEL", host, at, { ...conf, prevResult: add.json });
      assertFailed(del, 5, /^failed to move "clash0" to hostNS: /);
      assertEquals(shape((await link(ctr, "net1")) as Device), inside);
      await sh("ip", ["-n", host.name, "link", "del", "clash0"]);
      assertSuccess(await hostDevice("DEL", host, at, { ...conf, prevResult: add.json }));
      assertEquals((await link(host, "clash0"))?.address, dev.address);
    }),
});

const RENAMED: [string, string, (dev: Device) => Record<string, unknown>, boolean][] = [
  ["by the result's MAC", "1.0.0", () => ({ device: "rndev0" }), true],
  ["without prevResult, by the config's device", "0.3.1", () => ({ device: "rndev0" }), false],
  ["without prevResult, by the config's hwaddr", "0.3.1", (d) => ({ hwaddr: d.address }), false],
];

for (const [how, version, select, withPrev] of RENAMED) {
  Deno.test({
    name: `host-device DEL returns a device renamed in the container (plugins#773), ${how}`,
    ignore: !canNetns,
    fn: () =>
      withDataDirAndNamespaces(1, async (_dataDir, host, ctr) => {
        const dev = await hostVeth(host, "rndev0");
        const conf = hdConf(version, select(dev));
        const at = { netns: ctr.path, ifname: "net1" };
        const add = assertSuccess(await hostDevice("ADD", host, at, conf));
        const ip = (...args: string[]) => sh("ip", ["-n", ctr.name, ...args]);
        // A link of the container's own that has an alias too stays.
        await ip("link", "add", "own0", "type", "veth", "peer", "name", "own1");
        await ip("link", "set", "own0", "alias", "someone");
        await ip("link", "set", "net1", "down");
        await ip("link", "set", "net1", "name", "renamed0");
        const del = withPrev ? { ...conf, prevResult: add.json } : conf;
        assertSuccess(await hostDevice("DEL", host, at, del));
        assertEquals(shape((await link(host, "rndev0")) as Device)?.alias, "");
        assertEquals((await link(host, "rndev0"))?.address, dev.address);
        assertEquals((await links(ctr)).map((l) => l.ifname).sort(), ["own0", "own1"]);
        assertSuccess(await hostDevice("DEL", host, at, del));
      }),
  });
}

Deno.test({
  name: "host-device DEL releases the lease with CNI_NETNS empty (cni#1167) or gone",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, ctr, gone) => {
      await hostVeth(host, "lease0");
      await hostVeth(host, "lease1");
      const conf = (device: string) => hdConf("1.0.0", { device, ipam: hostLocal("v4", dataDir) });
      assertSuccess(
        await hostDevice("ADD", host, { netns: ctr.path, containerId: "c1" }, conf("lease0")),
      );
      assertSuccess(
        await hostDevice("ADD", host, { netns: gone.path, containerId: "c2" }, conf("lease1")),
      );
      assertEquals(await leases(dataDir), ["hdnet/10.88.0.2", "hdnet/10.88.0.3"]);
      assertSuccess(
        await hostDevice("DEL", host, { netns: "", containerId: "c1" }, conf("lease0")),
      );
      await gone.remove();
      assertSuccess(
        await hostDevice("DEL", host, { netns: gone.path, containerId: "c2" }, conf("lease1")),
      );
      assertEquals(await leases(dataDir), []);
    }),
});

Deno.test({
  name: "host-device STATUS asks its IPAM; GC releases the leases of attachments no longer valid",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      await hostVeth(host, "gcdev0");
      const conf = hdConf("1.1.0", { device: "gcdev0", ipam: hostLocal("v4", dataDir) });
      assertSuccess(await hostDevice("ADD", host, { netns: ctr.path, containerId: "gc1" }, conf));
      assertSuccess(await hostDevice("STATUS", host, { netns: "" }, conf));
      const keep = { "cni.dev/valid-attachments": [{ containerID: "gc1", ifname: "eth0" }] };
      assertSuccess(await hostDevice("GC", host, { netns: "" }, { ...conf, ...keep }));
      assertEquals(await leases(dataDir), ["hdnet/10.88.0.2"]);
      assertSuccess(
        await hostDevice("GC", host, { netns: "" }, { ...conf, "cni.dev/valid-attachments": [] }),
      );
      assertEquals(await leases(dataDir), []);
    }),
});
