/**
 * The README's kind walkthrough, inside namespaces: kind's CNI list
 * (`examples/net.d/10-kindnet.conflist`, ptp → portmap, as kindnetd writes
 * it) through cnitool with a port mapping. A server on port 80 in pod1
 * answers on the fake host's address:8080 from an "outside" namespace that
 * has no route to the pod subnet, from the host itself, on 127.0.0.1:8080
 * and from a second pod; CHECK passes; DEL leaves no rule, chain entry,
 * lease or cache entry, also when pod1's namespace is deleted first
 * (kubelet's order). The leases and the cache live in a temporary folder.
 * @module
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import { assertSuccess, DIST_BIN, haveReference, runApplet } from "./helpers/applet.ts";
import { leases } from "./helpers/ipam.ts";
import { links, vethBetween } from "./helpers/kernel.ts";
import { canNetns, sh, TestNetns, withDataDirAndNamespaces } from "./helpers/netns.ts";
import { dnatChains, portmapLeftovers } from "./helpers/portmap.ts";
import { haveSocat, request, Server, withServers } from "./helpers/servers.ts";

const EXAMPLES = new URL("../examples/", import.meta.url).pathname;
const HOST = "192.0.2.1";
const CAP_ARGS = '{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}';

async function kindList(): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(`${EXAMPLES}net.d/10-kindnet.conflist`));
}

Deno.test("walkthrough: 10-kindnet.conflist is kind's list (kindnetd's template, one IPv4 pod CIDR)", async () => {
  assertEquals(await kindList(), {
    cniVersion: "0.3.1",
    name: "kindnet",
    plugins: [
      {
        type: "ptp",
        ipMasq: false,
        ipam: {
          type: "host-local",
          dataDir: "/run/cni-ipam-state",
          routes: [{ dst: "0.0.0.0/0" }],
          ranges: [[{ subnet: "10.244.0.0/24" }]],
        },
        mtu: 1500,
      },
      { type: "portmap", capabilities: { portMappings: true } },
    ],
  });
});

/** Writes the list (with its dataDir under `dir`, and `cniVersion` when given) to `dir/<sub>`. */
async function writeList(dir: string, sub: string, cniVersion?: string): Promise<string> {
  const list = await kindList();
  const [ptp, portmap] = list.plugins as Record<string, Record<string, unknown>>[];
  const ipam = { ...ptp!.ipam, dataDir: `${dir}/ipam` };
  await Deno.mkdir(`${dir}/${sub}`, { recursive: true });
  await Deno.writeTextFile(
    `${dir}/${sub}/10-kindnet.conflist`,
    JSON.stringify({
      ...list,
      ...(cniVersion ? { cniVersion } : {}),
      plugins: [{ ...ptp, ipam }, portmap],
    }),
  );
  return `${dir}/${sub}`;
}

Deno.test({
  name:
    "walkthrough: cnitool add kindnet with a port mapping; pod1:80 answers on host:8080 from outside, the host, 127.0.0.1 and pod2; CHECK; DEL leaves nothing",
  ignore: !canNetns || !haveReference || !haveSocat,
  fn: () =>
    withDataDirAndNamespaces(3, async (dir, host, pod1, pod2, outside) => {
      // The fake host's own address, towards an "outside" that knows nothing of 10.244.0.0/24.
      await vethBetween(host, "up0", outside, "down0");
      await sh("ip", ["-n", host.name, "addr", "add", `${HOST}/24`, "dev", "up0"]);
      await sh("ip", ["-n", outside.name, "addr", "add", "192.0.2.2/24", "dev", "down0"]);
      const netconf = await writeList(dir, "net.d");
      const env = { NETCONFPATH: netconf, CNI_PATH: DIST_BIN, CNI_CACHE_DIR: `${dir}/cache` };
      const cnitool = (verb: string, ns: TestNetns, extra: Record<string, string> = {}) =>
        runApplet("cnitool", { env: { ...env, ...extra }, args: [verb, "kindnet", ns.path], host });

      assertSuccess(await cnitool("add", pod1, { CAP_ARGS }));
      assertSuccess(await cnitool("add", pod2));
      assertEquals((await leases(`${dir}/ipam`, "kindnet")).length, 2);
      await withServers(() => [Server.start(pod1, "tcp", 80, "pod1")], async () => {
        assertEquals({
          outside: await request(outside, "tcp", HOST, 8080),
          host: await request(host, "tcp", HOST, 8080),
          localhost: await request(host, "tcp", "127.0.0.1", 8080),
          pod2: await request(pod2, "tcp", HOST, 8080),
        }, { outside: "pod1", host: "pod1", localhost: "pod1", pod2: "pod1" });
      });

      // kind's list says 0.3.1, which predates CHECK: cnitool refuses it as libcni does.
      const old = await cnitool("check", pod1, { CAP_ARGS });
      assert(old.code !== 0 && /does not support the CHECK command/.test(old.stdout + old.stderr));
      // The same list at 0.4.0 checks the attachment ADD made (from the cached 0.3.1 result).
      const checkConf = await writeList(dir, "net.d-0.4.0", "0.4.0");
      assertSuccess(await cnitool("check", pod1, { CAP_ARGS, NETCONFPATH: checkConf }));

      assertSuccess(await cnitool("del", pod1, { CAP_ARGS }));
      assertEquals(await dnatChains(host), []);
      assertEquals(await request(outside, "tcp", HOST, 8080, { seconds: 1 }), undefined);
      assertEquals((await leases(`${dir}/ipam`, "kindnet")).length, 1);

      // kubelet's order: the pod's namespace goes first, then DEL.
      const pod3 = await TestNetns.create("ckc");
      try {
        assertSuccess(await cnitool("add", pod3, { CAP_ARGS }));
        assert((await dnatChains(host)).length > 0);
        await pod3.remove();
        assertSuccess(await cnitool("del", pod3, { CAP_ARGS }));
      } finally {
        await pod3.remove();
      }
      assertSuccess(await cnitool("del", pod2));
      assertEquals(await portmapLeftovers(host), []);
      assertEquals(await leases(`${dir}/ipam`, "kindnet"), []);
      assertEquals((await links(host)).filter((l) => l.ifname.startsWith("veth")), []);
      const cached = [...Deno.readDirSync(`${dir}/cache/results`)].map((e) => e.name);
      assertEquals(cached, []);
    }),
});
