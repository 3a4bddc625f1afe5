/**
 * The README's walkthrough, inside namespaces: `examples/myptp.conf` run
 * straight through dist/bin/ptp, and `examples/net.d/10-myptp.conflist`
 * through cnitool. The host-local dataDir and cnitool's cache are moved to a
 * temporary folder so /var/lib/cni is never touched.
 * @module
 */

import { assert, assertEquals } from "./helpers/assert.ts";
import {
  assertSuccess,
  cniEnv,
  currentResult,
  DIST_BIN,
  haveReference,
  runApplet,
  withPrev,
} from "./helpers/applet.ts";
import { canNetns, withDataDirAndNamespaces } from "./helpers/netns.ts";
import { ping } from "./helpers/ping.ts";
import { leases } from "./helpers/ipam.ts";
import { addresses, iptablesMasq, links, routes } from "./helpers/kernel.ts";
import { verifyAttachment } from "./helpers/ptp.ts";

const EXAMPLES = new URL("../examples/", import.meta.url).pathname;

async function readExample(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await Deno.readTextFile(`${EXAMPLES}${path}`));
}

/** The example's ptp config with its leases kept in `dataDir`. */
function withDataDir(plugin: Record<string, unknown>, dataDir: string): Record<string, unknown> {
  return { ...plugin, ipam: { ...(plugin.ipam as object), dataDir } };
}

Deno.test("walkthrough: myptp.conf and 10-myptp.conflist describe the same network", async () => {
  const conf = await readExample("myptp.conf");
  const list = await readExample("net.d/10-myptp.conflist");
  const { cniVersion, name, ...plugin } = conf;
  assertEquals(list, { cniVersion, name, plugins: [plugin] });
  assertEquals(conf, {
    cniVersion: "0.4.0",
    name: "myptp",
    type: "ptp",
    ipMasq: true,
    ipam: { type: "host-local", subnet: "172.16.29.0/24", routes: [{ dst: "0.0.0.0/0" }] },
  });
});

Deno.test({
  name:
    "walkthrough: dist/bin/ptp < examples/myptp.conf gives eth0 172.16.29.x/24, host 172.16.29.1/32",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(1, async (dataDir, host, ctr) => {
      const conf = withDataDir(await readExample("myptp.conf"), dataDir);
      const at = { containerId: "lab-ns", netns: ctr.path, path: DIST_BIN };
      const add = assertSuccess(
        await runApplet("ptp", { env: cniEnv("ADD", at), stdin: conf, host }),
      );
      assertEquals(add.json!.cniVersion, "0.4.0");
      const result = currentResult(add, "0.4.0");
      const [ip] = result.ips!;
      assert(/^172\.16\.29\.\d+\/24$/.test(ip!.address), ip!.address);
      assertEquals(ip!.gateway, "172.16.29.1");
      const hostVeth = await verifyAttachment(result, {
        host,
        ctr,
        ipamRoutes: [{ dst: "0.0.0.0/0" }],
      });
      assertEquals(addresses(hostVeth), ["172.16.29.1/32"]);
      const eth0 = (await links(ctr)).find((l) => l.ifname === "eth0")!;
      assertEquals(addresses(eth0), [`${ip!.address} brd 172.16.29.255`]);
      // ipMasq without a backend: iptables, as the reference picks when it is there.
      assertEquals((await iptablesMasq(host)).length, 4);
      assert(await ping(host, ip!.address.split("/")[0]!), "host -> container");

      assertSuccess(
        await runApplet("ptp", {
          env: cniEnv("CHECK", at),
          stdin: withPrev(conf, add),
          host,
        }),
      );
      assertSuccess(
        await runApplet("ptp", { env: cniEnv("DEL", at), stdin: conf, host }),
      );
      assertEquals(await links(ctr), []);
      assertEquals(await routes(host), []);
      assertEquals(await iptablesMasq(host), []);
      assertEquals(await leases(dataDir, "myptp"), []);
    }),
});

Deno.test({
  name: "walkthrough: cnitool add/check/del myptp with examples/net.d/10-myptp.conflist",
  ignore: !canNetns || !haveReference,
  fn: () =>
    withDataDirAndNamespaces(1, async (dir, host, ctr) => {
      const list = await readExample("net.d/10-myptp.conflist");
      const plugins = (list.plugins as Record<string, unknown>[]).map((p) =>
        withDataDir(p, `${dir}/ipam`)
      );
      await Deno.mkdir(`${dir}/net.d`);
      await Deno.writeTextFile(
        `${dir}/net.d/10-myptp.conflist`,
        JSON.stringify({ ...list, plugins }),
      );
      const env = {
        NETCONFPATH: `${dir}/net.d`,
        CNI_PATH: DIST_BIN,
        CNI_CACHE_DIR: `${dir}/cache`,
      };
      const cnitool = (verb: string) =>
        runApplet("cnitool", { env, args: [verb, "myptp", ctr.path], host });
      const add = assertSuccess(await cnitool("add"));
      const result = currentResult(add, "0.4.0");
      const hostVeth = await verifyAttachment(result, {
        host,
        ctr,
        ipamRoutes: [{ dst: "0.0.0.0/0" }],
      });
      assertEquals(addresses(hostVeth), ["172.16.29.1/32"]);
      assertEquals((await leases(`${dir}/ipam`, "myptp")).length, 1);
      assertSuccess(await cnitool("check"));
      assertSuccess(await cnitool("del"));
      assertEquals(await links(ctr), []);
      assertEquals(await iptablesMasq(host), []);
      assertEquals(await leases(`${dir}/ipam`, "myptp"), []);
    }),
});
