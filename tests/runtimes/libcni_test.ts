/**
 * Go's libcni (Debian's, 1.1.2) drives cnikit's plugins the way runtimes do:
 * the full chain bridge → portmap → firewall → tuning → bandwidth, with
 * capabilities turned into runtimeConfig, each plugin's result handed to the
 * next as prevResult, libcni's result cache (read back, and used by CHECK
 * and DEL), DEL with and without the namespace, and GC with the attachments
 * that are still valid (libcni 1.2's GCNetworkList, see tests/go/cnidriver).
 * @module
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { DIST_BIN } from "../helpers/applet.ts";
import { type DriverCall, libcni, noGoLibcni } from "../helpers/golibcni.ts";
import { hostLocal, leases } from "../helpers/ipam.ts";
import { link, links, sysctl } from "../helpers/kernel.ts";
import { qdiscs, tbfOf } from "../helpers/chained.ts";
import { canNetns, type TestNetns, uniqueName, withNamespaces } from "../helpers/netns.ts";
import { withTempDir } from "../helpers/tempdir.ts";
import { parseResult, toCurrentResult } from "../../lib/cni/spec/convert.ts";

const cannotRun = !canNetns || noGoLibcni !== undefined;
if (noGoLibcni) console.error(`libcni tests skipped: ${noGoLibcni}`);

const MAC = "c2:22:33:44:55:66";
const CAPABILITIES = {
  portMappings: [{ hostPort: 8080, containerPort: 80, protocol: "tcp" }],
  mac: MAC,
  bandwidth: {
    ingressRate: 8_000_000,
    ingressBurst: 80_000,
    egressRate: 8_000_000,
    egressBurst: 80_000,
  },
};

/** The chain as a runtime's .conflist, its state kept under `dir`. */
function chain(version: string, dir: string, bridge: string): Record<string, unknown> {
  return {
    cniVersion: version,
    name: "lcnet",
    plugins: [
      {
        type: "bridge",
        bridge,
        isGateway: true,
        ipMasq: true,
        ipam: hostLocal("v4", `${dir}/ipam`),
      },
      { type: "portmap", capabilities: { portMappings: true } },
      { type: "firewall" },
      {
        type: "tuning",
        capabilities: { mac: true },
        dataDir: `${dir}/tuning`,
        sysctl: { "net.ipv4.conf.IFNAME.arp_filter": "1" },
      },
      { type: "bandwidth", capabilities: { bandwidth: true } },
    ],
  };
}

/** Every iptables rule of `host` (both families, all tables) that names `ip` or `id`. */
async function rulesOf(host: TestNetns, ip: string, id: string): Promise<string[]> {
  const out: string[] = [];
  for (const tool of ["iptables-save", "ip6tables-save"]) {
    const text = await host.exec(tool, []);
    out.push(
      ...text.split("\n").filter((l) => l.startsWith("-A") && (l.includes(ip) || l.includes(id))),
    );
  }
  return out;
}

function files(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

/** Runs `fn` with a fake host, containers, a state folder and the conflist written there. */
function withChain(
  version: string,
  containers: number,
  fn: (
    call: (over?: Partial<DriverCall>) => DriverCall,
    dir: string,
    host: TestNetns,
    ...ctrs: TestNetns[]
  ) => Promise<void>,
): Promise<void> {
  return withTempDir((dir) =>
    withNamespaces(containers, async (host, ...ctrs) => {
      const conflist = `${dir}/lcnet.conflist`;
      await Deno.writeTextFile(conflist, JSON.stringify(chain(version, dir, uniqueName("lcbr"))));
      const call = (over: Partial<DriverCall> = {}): DriverCall => ({
        conflist,
        cache: `${dir}/cache`,
        path: [DIST_BIN],
        capabilities: CAPABILITIES,
        ...over,
      });
      await fn(call, dir, host, ...ctrs);
    })
  );
}

function ok(run: { code: number; stdout: string; stderr: string }): string {
  assertEquals(run.code, 0, run.stderr);
  return run.stdout;
}

// Debian's libcni (1.1.2) reads results up to spec 1.0.0.
for (const version of ["0.4.0", "1.0.0"]) {
  Deno.test({
    name: `libcni ${version}: ADD chains every plugin, caches the result; CHECK and DEL use it`,
    ignore: cannotRun,
    fn: () =>
      withChain(version, 1, async (call, dir, host, ctr) => {
        const at = call({ netns: ctr.path });
        const raw = JSON.parse(ok(await libcni("add", host, at)));
        const result = toCurrentResult(parseResult(raw, version));
        // bridge's three interfaces, tuning's MAC from the capability, bandwidth's IFB last.
        const [br, hostVeth, eth0, ifb] = result.interfaces!;
        assertEquals(result.interfaces!.length, 4);
        assertEquals([eth0!.name, eth0!.mac, eth0!.sandbox], ["eth0", MAC, ctr.path]);
        assert(br && hostVeth && ifb && /^bwp[0-9a-f]{12}$/.test(ifb.name));
        const ip = result.ips![0]!.address.split("/")[0]!;
        assertEquals((await link(ctr, "eth0"))!.address, MAC);
        assertEquals(await sysctl(ctr, "net/ipv4/conf/eth0/arp_filter"), "1");
        assertEquals(
          tbfOf(await qdiscs(host), hostVeth.name),
          "rate 1000000 limit 35000 buffer 156250",
        );
        assert((await link(host, ifb.name)) !== undefined, "IFB missing");
        const rules = await rulesOf(host, ip, "ctr1");
        assert(rules.some((r) => r.includes("--dport 8080")), `no port mapping in ${rules}`);
        assert(rules.some((r) => r.startsWith("-A CNI-FORWARD")), `no firewall rule in ${rules}`);
        assertEquals(files(`${dir}/tuning`), ["ctr1_eth0.json"]);

        // The cache holds the final result, in the list's version.
        assertEquals(JSON.parse(ok(await libcni("cached", host, at))), raw);
        ok(await libcni("check", host, at));

        for (let i = 0; i < 2; i++) {
          ok(await libcni("del", host, at));
          assertEquals(await rulesOf(host, ip, "ctr1"), []);
          assertEquals(
            (await links(host)).filter((l) => l.ifname === ifb.name || l.ifname === hostVeth.name),
            [],
          );
          assertEquals(await leases(`${dir}/ipam`), []);
          assertEquals(files(`${dir}/tuning`), []);
          assertEquals(files(`${dir}/cache/results`), []);
        }
      }),
  });

  Deno.test({
    name: `libcni ${version}: DEL without the namespace (kubelet's order) removes what ADD made`,
    ignore: cannotRun,
    fn: () =>
      withChain(version, 2, async (call, dir, host, gone, alive) => {
        // The namespace is deleted before DEL.
        const first = toCurrentResult(
          parseResult(
            JSON.parse(ok(await libcni("add", host, call({ netns: gone.path })))),
            version,
          ),
        );
        const firstIP = first.ips![0]!.address.split("/")[0]!;
        await gone.remove();
        ok(await libcni("del", host, call({ netns: "" })));
        assertEquals(await rulesOf(host, firstIP, "ctr1"), []);
        assertEquals((await links(host)).filter((l) => /^(veth|bwp)/.test(l.ifname)), []);
        assertEquals(await leases(`${dir}/ipam`), []);
        // The namespace lives on, but DEL gets none: the host end goes through prevResult.
        const second = call({ netns: alive.path, containerId: "ctr2" });
        const result = toCurrentResult(
          parseResult(JSON.parse(ok(await libcni("add", host, second))), version),
        );
        const ip = result.ips![0]!.address.split("/")[0]!;
        ok(await libcni("del", host, { ...second, netns: "" }));
        assertEquals(await rulesOf(host, ip, "ctr2"), []);
        assertEquals((await links(host)).filter((l) => /^(veth|bwp)/.test(l.ifname)), []);
        assertEquals((await links(alive)).filter((l) => l.ifname === "eth0"), []);
        assertEquals(await leases(`${dir}/ipam`), []);
        // tuning keeps its backups without a namespace to restore into.
        assertEquals(files(`${dir}/tuning`), ["ctr1_eth0.json", "ctr2_eth0.json"]);
      }),
  });
}

Deno.test({
  name:
    "libcni GC: stale cached attachments are deleted, and every plugin cleans up what is not valid",
  ignore: cannotRun,
  fn: () =>
    withChain("1.0.0", 3, async (call, dir, host, a, b, c) => {
      const add = async (ns: TestNetns, id: string) => {
        const raw = JSON.parse(
          ok(await libcni("add", host, call({ netns: ns.path, containerId: id }))),
        );
        return toCurrentResult(parseResult(raw, "1.0.0"));
      };
      const kept = await add(a, "keep");
      const lost = await add(b, "lost");
      const stale = await add(c, "stale");
      // "lost" died with no DEL and no cache entry: only the plugins' GC can find its state.
      Deno.removeSync(`${dir}/cache/results/lcnet-lost-eth0`);
      await b.remove();
      const valid = [{ containerID: "keep", ifname: "eth0" }];
      ok(await libcni("gc", host, call({ valid, gcVersion: "1.1.0" })));
      for (const [result, id] of [[lost, "lost"], [stale, "stale"]] as const) {
        const ip = result.ips![0]!.address.split("/")[0]!;
        assertEquals(await rulesOf(host, ip, id), [], id);
        const ifb = result.interfaces!.at(-1)!.name;
        assertEquals(await link(host, ifb), undefined, `${id}'s IFB`);
      }
      const keptIP = kept.ips![0]!.address.split("/")[0]!;
      assertEquals(await leases(`${dir}/ipam`), [`lcnet/${keptIP}`]);
      assertEquals(files(`${dir}/tuning`), ["keep_eth0.json"]);
      assertEquals(files(`${dir}/cache/results`), ["lcnet-keep-eth0"]);
      ok(await libcni("check", host, call({ netns: a.path, containerId: "keep" })));
      ok(await libcni("del", host, call({ netns: a.path, containerId: "keep" })));
    }),
});
