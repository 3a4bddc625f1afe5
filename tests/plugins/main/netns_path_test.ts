/**
 * CNI_NETNS that exists but is not a network namespace (a plain file, a
 * directory, a namespace of another kind): ADD and CHECK say so with code 8
 * before anything is reserved or created; DEL takes it for a container that
 * is gone and succeeds (the reference fails its DEL with "unknown FS magic").
 * @module
 */

import { assertEquals } from "../../helpers/assert.ts";
import { assertSuccess, cniEnv, type PluginRun, runApplet } from "../../helpers/applet.ts";
import { bridge, bridgeConf, bridgeName } from "../../helpers/bridge.ts";
import { hostLocal } from "../../helpers/ipam.ts";
import { veths } from "../../helpers/kernel.ts";
import { canNetns, type TestNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { ptp, ptpConf } from "../../helpers/ptp.ts";

const loopback = (command: string, host: TestNetns, at: { netns: string }) =>
  runApplet("loopback", {
    env: cniEnv(command, at),
    stdin: { cniVersion: "1.0.0", name: "lo-net", type: "loopback" },
    host,
  });

/** The three kinds of not-a-network-namespace, made under `dir`. */
async function impostors(dir: string): Promise<[string, string][]> {
  await Deno.writeTextFile(`${dir}/file`, "");
  await Deno.mkdir(`${dir}/dir`);
  // The plugin's own UTS namespace: on nsfs, but of another kind.
  return [["a file", `${dir}/file`], ["a directory", `${dir}/dir`], [
    "a UTS namespace",
    "/proc/self/ns/uts",
  ]];
}

function assertNotANetns(run: PluginRun, path: string, what: string): void {
  assertEquals(run.code, 1, `${what}: ${run.stdout}${run.stderr}`);
  assertEquals([run.json!.code, run.json!.msg], [8, `"${path}" is not a network namespace`], what);
}

for (const plugin of ["bridge", "ptp", "loopback"]) {
  Deno.test({
    name:
      `${plugin} with CNI_NETNS that is not a network namespace: ADD/CHECK code 8, nothing reserved; DEL succeeds`,
    ignore: !canNetns,
    fn: () =>
      withDataDirAndNamespaces(0, async (dataDir, host) => {
        const stateDir = `${dataDir}/ipam`;
        const conf = plugin === "bridge"
          ? bridgeConf("1.0.0", bridgeName(), hostLocal("v4", stateDir))
          : ptpConf("1.0.0", "v4", stateDir);
        for (const [what, path] of await impostors(dataDir)) {
          const at = { netns: path };
          const call = (command: string) =>
            plugin === "loopback"
              ? loopback(command, host, at)
              : (plugin === "bridge" ? bridge : ptp)(command, host, at, conf);
          assertNotANetns(await call("ADD"), path, `ADD on ${what}`);
          assertNotANetns(await call("CHECK"), path, `CHECK on ${what}`);
          assertSuccess(await call("DEL"));
        }
        // Refused before IPAM: not even host-local's store was made.
        assertEquals(await Deno.stat(stateDir).then(() => "exists", () => "absent"), "absent");
        assertEquals(await veths(host), []);
      }),
  });
}
