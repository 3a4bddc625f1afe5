/**
 * tuning against the kernel: a veth attachment made by the test, tuning run
 * as a process inside the fake host, the container's link and sysctls read
 * back with `ip -j` and /proc/sys, the backup file read from a temporary
 * dataDir.
 * @module
 */

import { assert, assertEquals, assertMatch } from "../../helpers/assert.ts";
import {
  ALL_TEST_VERSIONS,
  assertSuccess,
  cniEnv,
  currentResult,
  DIST_BIN,
  hostRunner,
  runApplet,
} from "../../helpers/applet.ts";
import { linkState, prevResultFor, vethAttachment } from "../../helpers/chained.ts";
import { sysctl } from "../../helpers/kernel.ts";
import { canNetns, sh, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { withTempDir } from "../../helpers/tempdir.ts";
import { versionAtLeast } from "../../../lib/cni/spec/version.ts";

const tuning = hostRunner("tuning");

function tuningConf(
  version: string,
  dataDir: string,
  prevResult: Record<string, unknown> | undefined,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    cniVersion: version,
    name: "tunet",
    type: "tuning",
    dataDir,
    ...(prevResult ? { prevResult } : {}),
    ...extra,
  };
}

async function backupFiles(dataDir: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const e of Deno.readDir(dataDir)) out.push(e.name);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort();
}

const EVERYTHING = {
  mac: "c2:11:22:33:44:55",
  promisc: true,
  mtu: 1400,
  allmulti: true,
  txQLen: 500,
  sysctl: {
    "net.ipv4.conf.IFNAME.arp_filter": "1",
    "net/ipv6/conf/IFNAME/accept_ra": "0",
    "net.ipv4.tcp_rmem": "4096 65536 1048576",
  },
};

for (const version of ALL_TEST_VERSIONS) {
  Deno.test({
    name: `tuning ADD/CHECK/DEL/DEL sets and restores every attribute (cniVersion ${version})`,
    ignore: !canNetns,
    fn: () =>
      withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
        const veth = await vethAttachment(host, ctr);
        const before = await linkState(ctr, "eth0");
        const prev = prevResultFor(veth.result, version);
        const conf = tuningConf(version, dataDir, prev, EVERYTHING);
        const at = { netns: ctr.path };
        const add = assertSuccess(await tuning("ADD", host, at, conf));
        assertEquals(add.json!.cniVersion, version);
        // The result is the prevResult, with the new MAC where it names eth0.
        const want = structuredClone(veth.result);
        want.interfaces![1]!.mac = EVERYTHING.mac;
        assertEquals(
          add.json,
          prevResultFor(want, version),
        );
        assertEquals(await linkState(ctr, "eth0"), {
          mac: EVERYTHING.mac,
          mtu: 1400,
          promisc: true,
          allmulti: true,
          txqlen: 500,
        });
        assertEquals(await sysctl(ctr, "net/ipv4/conf/eth0/arp_filter"), "1");
        assertEquals(await sysctl(ctr, "net/ipv6/conf/eth0/accept_ra"), "0");
        assertEquals(await sysctl(ctr, "net/ipv4/tcp_rmem"), "4096\t65536\t1048576");
        // The backup holds what was there before, with the reference's keys.
        const file = `${dataDir}/ctr1_eth0.json`;
        assertEquals(JSON.parse(await Deno.readTextFile(file)), {
          mac: before.mac,
          promisc: false,
          mtu: before.mtu,
          allmulti: false,
          txQLen: before.txqlen,
          cnikitNetwork: "tunet",
        });
        assertEquals((await Deno.stat(file)).mode! & 0o777, 0o600);
        if (versionAtLeast(version, "0.4.0")) {
          assertSuccess(await tuning("CHECK", host, at, { ...conf, prevResult: add.json }));
        }
        for (let i = 0; i < 2; i++) {
          assertSuccess(await tuning("DEL", host, at, conf));
          assertEquals(await linkState(ctr, "eth0"), before);
          assertEquals(await backupFiles(dataDir), []);
        }
        // Sysctls are not restored (neither does the reference).
        assertEquals(await sysctl(ctr, "net/ipv4/conf/eth0/arp_filter"), "1");
      }),
  });
}

Deno.test({
  name: "tuning overrides apply in the reference's order: config, CNI_ARGS, runtimeConfig, args",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const veth = await vethAttachment(host, ctr);
      const prev = prevResultFor(veth.result, "1.0.0");
      const cases: [Record<string, unknown>, string, string][] = [
        [{ mac: "c2:00:00:00:00:01" }, "", "c2:00:00:00:00:01"],
        [{ mac: "c2:00:00:00:00:01" }, "MAC=c2:00:00:00:00:02", "c2:00:00:00:00:02"],
        [
          { mac: "c2:00:00:00:00:01", runtimeConfig: { mac: "c2:00:00:00:00:03" } },
          "IgnoreUnknown=1;K8S_POD_NAME=x;MAC=c2:00:00:00:00:02",
          "c2:00:00:00:00:03",
        ],
        [
          {
            mac: "c2:00:00:00:00:01",
            runtimeConfig: { mac: "c2:00:00:00:00:03" },
            args: { cni: { mac: "C2-00-00-00-00-04" } },
          },
          "MAC=c2:00:00:00:00:02",
          "c2:00:00:00:00:04",
        ],
      ];
      for (const [extra, cniArgs, mac] of cases) {
        const conf = tuningConf("1.0.0", dataDir, prev, extra);
        const at = { netns: ctr.path, args: cniArgs };
        const add = assertSuccess(await tuning("ADD", host, at, conf));
        assertEquals((await linkState(ctr, "eth0")).mac, mac, JSON.stringify(extra));
        const iface = (currentResult(add, "1.0.0").interfaces ?? [])[1]!;
        assertEquals(iface.mac, mac);
        assertSuccess(await tuning("CHECK", host, at, { ...conf, prevResult: add.json }));
        assertSuccess(await tuning("DEL", host, at, conf));
      }
      // args.cni overrides every other key, false and 0 included.
      const conf = tuningConf("1.0.0", dataDir, prev, {
        promisc: true,
        mtu: 1300,
        allmulti: true,
        txQLen: 10,
        sysctl: { "net.ipv4.conf.IFNAME.arp_filter": "1" },
        args: {
          cni: {
            promisc: false,
            mtu: 1280,
            allmulti: false,
            txQLen: 0,
            sysctl: {
              "net.ipv4.conf.IFNAME.arp_filter": "0",
              "net.ipv4.conf.IFNAME.arp_ignore": "2",
            },
          },
        },
      });
      await sh("ip", ["-n", ctr.name, "link", "set", "eth0", "allmulticast", "on"]);
      const add = assertSuccess(await tuning("ADD", host, { netns: ctr.path }, conf));
      assertSuccess(
        await tuning("CHECK", host, { netns: ctr.path }, { ...conf, prevResult: add.json }),
      );
      assertEquals(await linkState(ctr, "eth0"), {
        ...await linkState(ctr, "eth0"),
        mtu: 1280,
        promisc: false,
        allmulti: false,
        txqlen: 0,
      });
      assertEquals(await sysctl(ctr, "net/ipv4/conf/eth0/arp_filter"), "0");
      assertEquals(await sysctl(ctr, "net/ipv4/conf/eth0/arp_ignore"), "2");
      assertSuccess(await tuning("DEL", host, { netns: ctr.path }, conf));
      const after = await linkState(ctr, "eth0");
      assertEquals([after.mtu, after.allmulti, after.txqlen], [1500, true, 1000]);
    }),
});

Deno.test({
  name: "tuning refuses bad sysctls and MACs before changing anything (code 7, 4)",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const veth = await vethAttachment(host, ctr);
      const prev = prevResultFor(veth.result, "1.0.0");
      const before = await linkState(ctr, "eth0");
      const filter = await sysctl(ctr, "net/ipv4/conf/eth0/arp_filter");
      const cases: [string, string, number, RegExp][] = [
        [
          `{"sysctl":{"net.ipv4.conf.IFNAME.arp_filter":"1","net.ipv4.conf.IFNAME.arp_filter":"0"}}`,
          "",
          7,
          /duplicated sysctl keys are not allowed/,
        ],
        [`{"sysctl":{"kernel.hostname":"x"}}`, "", 7, /invalid net sysctl key: "kernel\/hostname"/],
        [`{"sysctl":{"net/../kernel/hostname":"x"}}`, "", 7, /invalid net sysctl key/],
        [`{"sysctl":{"net":"1"}}`, "", 7, /invalid net sysctl key: "net"/],
        [`{"mac":"01:00:5e:00:00:01"}`, "", 7, /invalid args 01:00:5e:00:00:01 for MAC addr/],
        [`{"mtu":1400}`, "MAC=zz", 4, /invalid args zz for MAC addr/],
        [`{"mtu":1400}`, "FOO=1", 4, /ARGS: unknown args/],
        [`{"mtu":"1400"}`, "", 6, /mtu: expected number/],
        [`{"mtu":-1}`, "", 7, /invalid mtu -1/],
      ];
      for (const [extra, cniArgs, code, msg] of cases) {
        const conf = {
          ...tuningConf("1.0.0", dataDir, prev, { mac: "c2:00:00:00:00:09" }),
          ...JSON.parse(extra),
        };
        // Duplicate keys only survive in the raw text.
        const stdin = extra.includes('arp_filter":"1","net')
          ? JSON.stringify(conf).replace(
            /"sysctl":\{[^}]*\}/,
            `"sysctl":{"net.ipv4.conf.IFNAME.arp_filter":"1","net.ipv4.conf.IFNAME.arp_filter":"0"}`,
          )
          : JSON.stringify(conf);
        const add = await tuning("ADD", host, { netns: ctr.path, args: cniArgs }, stdin);
        assertEquals(add.code, 1, extra);
        assertEquals(add.json!.code, code, `${extra}: ${add.stdout}`);
        assertMatch(String(add.json!.msg) + String(add.json!.details ?? ""), msg);
      }
      const missing = await tuning(
        "ADD",
        host,
        { netns: ctr.path },
        tuningConf("1.0.0", dataDir, undefined, { mtu: 1400 }),
      );
      assertEquals([missing.json!.code, missing.json!.msg], [7, "Required prevResult missing"]);
      assertEquals(await linkState(ctr, "eth0"), before);
      assertEquals(await sysctl(ctr, "net/ipv4/conf/eth0/arp_filter"), filter);
      assertEquals(await backupFiles(dataDir), []);
    }),
});

Deno.test({
  name: "tuning: a step the kernel refuses rolls back the sysctls, the link and the backup",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const veth = await vethAttachment(host, ctr);
      const before = await linkState(ctr, "eth0");
      const filter = await sysctl(ctr, "net/ipv4/conf/eth0/arp_filter");
      // A veth's MTU stops at 65535: the MAC is set, the MTU fails.
      const conf = tuningConf("1.0.0", dataDir, prevResultFor(veth.result, "1.0.0"), {
        mac: "c2:00:00:00:00:07",
        promisc: true,
        mtu: 70000,
        sysctl: { "net.ipv4.conf.eth0.arp_filter": filter === "1" ? "0" : "1" },
      });
      const add = await tuning("ADD", host, { netns: ctr.path }, conf);
      assertEquals(add.code, 1);
      assertEquals(add.json!.code, 5, add.stdout);
      assertEquals(await linkState(ctr, "eth0"), before);
      assertEquals(await sysctl(ctr, "net/ipv4/conf/eth0/arp_filter"), filter);
      assertEquals(await backupFiles(dataDir), []);
      // A sysctl that does not exist fails the same way, before the link.
      const bad = tuningConf("1.0.0", dataDir, prevResultFor(veth.result, "1.0.0"), {
        mtu: 1400,
        sysctl: { "net.ipv4.conf.eth0.arp_filter": "1", "net.ipv4.no_such_key": "1" },
      });
      const add2 = await tuning("ADD", host, { netns: ctr.path }, bad);
      assertEquals(add2.json!.code, 5, add2.stdout);
      assertEquals(await sysctl(ctr, "net/ipv4/conf/eth0/arp_filter"), filter);
      assertEquals(await linkState(ctr, "eth0"), before);
    }),
});

Deno.test({
  name: "tuning CHECK finds every value that drifted",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const veth = await vethAttachment(host, ctr);
      const conf = tuningConf("1.1.0", dataDir, prevResultFor(veth.result, "1.1.0"), EVERYTHING);
      const at = { netns: ctr.path };
      const add = assertSuccess(await tuning("ADD", host, at, conf));
      const checked = { ...conf, prevResult: add.json };
      const drifts: [string[], RegExp][] = [
        [
          ["sysctl", "-w", "net.ipv4.conf.eth0.arp_filter=0"],
          /arp_filter is 1, current value is 0/,
        ],
        [["ip", "link", "set", "eth0", "address", "c2:99:99:99:99:99"], /Ethernet of eth0/],
        [["ip", "link", "set", "eth0", "promisc", "off"], /configured promisc is true/],
        [
          ["ip", "link", "set", "eth0", "mtu", "1450"],
          /MTU of eth0 is 1400, current value is 1450/,
        ],
        [
          ["ip", "link", "set", "eth0", "allmulticast", "off"],
          /all-multicast mode of eth0 is true/,
        ],
        [["ip", "link", "set", "eth0", "txqueuelen", "7"], /Queue Length of eth0 is 500, current/],
      ];
      for (const [drift, msg] of drifts) {
        await ctr.exec(drift[0]!, drift.slice(1));
        const check = await tuning("CHECK", host, at, checked);
        assertEquals(check.code, 1, drift.join(" "));
        assertMatch(String(check.json!.msg), msg);
        // Put it back for the next one.
        assertSuccess(await tuning("ADD", host, at, conf));
        assertSuccess(await tuning("CHECK", host, at, checked));
      }
      // promisc false in the config means it must be off.
      const plain = tuningConf("1.1.0", dataDir, add.json, { mtu: 1400 });
      const check = await tuning("CHECK", host, at, plain);
      assertMatch(String(check.json!.msg), /configured promisc is false, current value is 1/);
      assertSuccess(await tuning("DEL", host, at, conf));
    }),
});

Deno.test({
  name: "tuning DEL: always succeeds; the backup goes when nothing is left to restore",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(2, async (dataDir, host, ctr, ctr2) => {
      const veth = await vethAttachment(host, ctr);
      const conf = tuningConf("1.0.0", dataDir, prevResultFor(veth.result, "1.0.0"), { mtu: 1400 });
      assertSuccess(await tuning("ADD", host, { netns: ctr.path }, conf));
      // No CNI_NETNS: the namespace may still live, so the backup stays.
      assertSuccess(await tuning("DEL", host, { netns: "" }, conf));
      assertEquals(await backupFiles(dataDir), ["ctr1_eth0.json"]);
      // The link is gone: nothing to restore, the backup goes.
      await sh("ip", ["-n", host.name, "link", "del", veth.hostVeth]);
      assertSuccess(await tuning("DEL", host, { netns: ctr.path }, conf));
      assertEquals(await backupFiles(dataDir), []);
      // The namespace is gone.
      const veth2 = await vethAttachment(host, ctr2);
      const conf2 = tuningConf("1.0.0", dataDir, prevResultFor(veth2.result, "1.0.0"), {
        mtu: 1400,
      });
      assertSuccess(await tuning("ADD", host, { netns: ctr2.path, containerId: "c2" }, conf2));
      await ctr2.remove();
      assertSuccess(await tuning("DEL", host, { netns: ctr2.path, containerId: "c2" }, conf2));
      assertEquals(await backupFiles(dataDir), []);
      // A config DEL cannot read in full still deletes.
      const odd = { ...conf, mtu: "x", sysctl: { "kernel.x": "1" } };
      assertSuccess(await tuning("DEL", host, { netns: ctr.path, args: "BAD" }, odd));
    }),
});

Deno.test({
  name: "tuning reads the allowlist named by CNIKIT_TUNING_ALLOWLIST",
  ignore: !canNetns,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const veth = await vethAttachment(host, ctr);
      const prev = prevResultFor(veth.result, "1.0.0");
      await Deno.writeTextFile(
        `${dataDir}/allowlist.conf`,
        "^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]+$\n\n  ^net\\.core\\.somaxconn$  \n",
      );
      const run = (sysctls: Record<string, string>) =>
        runApplet("tuning", {
          env: {
            ...cniEnv("ADD", { netns: ctr.path, path: DIST_BIN }),
            CNIKIT_TUNING_ALLOWLIST: `${dataDir}/allowlist.conf`,
          },
          stdin: tuningConf("1.0.0", `${dataDir}/backups`, prev, { sysctl: sysctls }),
          host,
        });
      assertSuccess(
        await run({ "net.ipv4.conf.IFNAME.arp_filter": "1", "net.core.somaxconn": "512" }),
      );
      const refused = await run({
        "net.ipv4.conf.IFNAME.arp_filter": "1",
        "net.ipv4.ip_forward": "1",
      });
      assertEquals(refused.json!.code, 7);
      assertEquals(
        refused.json!.msg,
        "Sysctl net.ipv4.ip_forward is not allowed. Only the following sysctls are allowed: " +
          "[^net\\.ipv4\\.conf\\.IFNAME\\.[a-z_]+$ ^net\\.core\\.somaxconn$]",
      );
    }),
});

Deno.test({
  name: "tuning GC removes this network's backups of attachments that are no longer valid",
  ignore: !canNetns,
  fn: () =>
    withTempDir(async (dataDir) => {
      const write = (name: string, body: Record<string, unknown>) =>
        Deno.writeTextFile(`${dataDir}/${name}`, JSON.stringify(body));
      await write("keep_eth0.json", { mtu: 1500, cnikitNetwork: "tunet" });
      await write("gone_eth0.json", { mtu: 1500, cnikitNetwork: "tunet" });
      await write("gone_net1.json", { mtu: 1500, cnikitNetwork: "tunet" });
      await write("other_eth0.json", { mtu: 1500, cnikitNetwork: "othernet" });
      await write("ref_eth0.json", { mtu: 1500 });
      const gc = await runApplet("tuning", {
        env: cniEnv("GC", { path: DIST_BIN }),
        stdin: {
          cniVersion: "1.1.0",
          name: "tunet",
          type: "tuning",
          dataDir,
          "cni.dev/valid-attachments": [{ containerID: "keep", ifname: "eth0" }],
        },
      });
      assertSuccess(gc);
      assertEquals(await backupFiles(dataDir), [
        "keep_eth0.json",
        "other_eth0.json",
        "ref_eth0.json",
      ]);
      const status = await runApplet("tuning", {
        env: cniEnv("STATUS", { path: DIST_BIN }),
        stdin: { cniVersion: "1.1.0", name: "tunet", type: "tuning" },
      });
      assertSuccess(status);
      assert(status.stdout === "");
    }),
});
