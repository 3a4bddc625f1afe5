import { assertEquals, assertMatch } from "../../helpers/assert.ts";
import { ALL_TEST_VERSIONS, assertSuccess, cniEnv, runApplet } from "../../helpers/applet.ts";
import { canNetns, type TestNetns, withNamespaces } from "../../helpers/netns.ts";

interface Link {
  ifname: string;
  flags: string[];
}

async function loUp(ns: TestNetns): Promise<boolean> {
  const [lo] = await ns.ipJson<Link[]>("link", "show", "dev", "lo");
  return lo!.flags.includes("UP");
}

for (const version of ALL_TEST_VERSIONS) {
  Deno.test({
    name: `loopback ADD/CHECK/DEL/DEL (cniVersion ${version}) sets lo up and down`,
    ignore: !canNetns,
    fn: () =>
      withNamespaces(1, async (host, ctr) => {
        await ctr.exec("ip", ["link", "set", "lo", "down"]);
        const conf = { cniVersion: version, name: "lo-net", type: "loopback" };
        const at = { netns: ctr.path };
        const add = assertSuccess(
          await runApplet("loopback", { env: cniEnv("ADD", at), stdin: conf, host }),
        );
        assertEquals(add.json!.cniVersion, version);
        if (version < "0.3.0") {
          assertEquals((add.json!.ip4 as { ip: string }).ip, "127.0.0.1/8");
        } else {
          assertEquals(add.json!.interfaces, [{
            name: "lo",
            mac: "00:00:00:00:00:00",
            sandbox: ctr.path,
          }]);
          const ips = add.json!.ips as { address: string; interface: number }[];
          assertEquals(ips.map((ip) => [ip.address, ip.interface]), [["127.0.0.1/8", 0], [
            "::1/128",
            0,
          ]]);
        }
        assertEquals(await loUp(ctr), true);
        if (version >= "0.4.0") {
          assertSuccess(
            await runApplet("loopback", {
              env: cniEnv("CHECK", at),
              stdin: { ...conf, prevResult: add.json },
              host,
            }),
          );
        }
        for (let i = 0; i < 2; i++) {
          assertSuccess(
            await runApplet("loopback", { env: cniEnv("DEL", at), stdin: conf, host }),
          );
          assertEquals(await loUp(ctr), false);
        }
      }),
  });
}

Deno.test({
  name: "loopback DEL succeeds when the netns is gone or CNI_NETNS is empty",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(0, async (host) => {
      const conf = { cniVersion: "1.0.0", name: "lo-net", type: "loopback" };
      for (const netns of ["", "/run/netns/does-not-exist-ck"]) {
        assertSuccess(
          await runApplet("loopback", {
            env: cniEnv("DEL", { netns }),
            stdin: conf,
            host,
          }),
        );
      }
    }),
});

Deno.test("loopback CHECK on a 0.3.1 config is refused with code 1", async () => {
  const conf = { cniVersion: "0.3.1", name: "lo-net", type: "loopback" };
  const run = await runApplet("loopback", {
    env: cniEnv("CHECK", { netns: "/run/netns/x" }),
    stdin: conf,
  });
  assertEquals(run.code, 1);
  assertEquals(run.json!.code, 1);
  assertMatch(run.json!.msg as string, /does not allow CHECK/);
});
