/**
 * firewall traffic inside a fake host with two bridge networks (bridged
 * traffic passes the host's netfilter, as with br_netfilter on a node):
 * `open` lets everything through, `same-bridge` drops traffic between the
 * bridges, `isolated` also between containers of one bridge; and with a
 * host FORWARD policy of DROP, the iptables backend's rules are what lets
 * the containers' traffic through.
 * @module
 */

import { assertEquals } from "../../helpers/assert.ts";
import { assertSuccess, currentResult, haveReference } from "../../helpers/applet.ts";
import { bridge, bridgeConf, bridgeName } from "../../helpers/bridge.ts";
import { firewall, firewallConf } from "../../helpers/firewall.ts";
import { canNetns, type TestNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { ping } from "../../helpers/ping.ts";

const ignore = !canNetns || !haveReference;

interface Pod {
  ns: TestNetns;
  ip: string;
  /** Runs the firewall's DEL for this pod. */
  unfirewall(): Promise<void>;
}

/** Two bridge networks in `host`: a1 and a2 on one, b1 on the other, with firewall on top. */
async function twoBridges(
  host: TestNetns,
  [a1, a2, b1]: TestNetns[],
  dataDir: string,
  firewallExtra: Record<string, unknown>,
): Promise<Pod[]> {
  for (const key of ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"]) {
    await host.exec("sysctl", ["-qw", `net.bridge.${key}=1`]);
  }
  const nets = [
    { br: bridgeName(), name: "neta", subnet: "10.61.0.0/24" },
    { br: bridgeName(), name: "netb", subnet: "10.62.0.0/24" },
  ];
  const pods: Pod[] = [];
  for (const [i, ns] of [a1!, a2!, b1!].entries()) {
    const net = nets[i < 2 ? 0 : 1]!;
    const at = { netns: ns.path, containerId: `pod${i}` };
    const conf = {
      ...bridgeConf("1.0.0", net.br, {
        type: "host-local",
        dataDir,
        ranges: [[{ subnet: net.subnet }]],
        routes: [{ dst: "0.0.0.0/0" }],
      }, { isGateway: true }),
      name: net.name,
    };
    const add = assertSuccess(await bridge("ADD", host, at, conf));
    const fw = { ...firewallConf("1.0.0", add, dataDir, firewallExtra), name: net.name };
    assertSuccess(await firewall("ADD", host, at, fw));
    pods.push({
      ns,
      ip: currentResult(add, "1.0.0").ips![0]!.address.split("/")[0]!,
      unfirewall: async () => {
        assertSuccess(await firewall("DEL", host, at, fw));
      },
    });
  }
  return pods;
}

async function reach(from: Pod, to: Pod): Promise<boolean> {
  return await ping(from.ns, to.ip, 2);
}

for (const backend of ["iptables", "nftables"] as const) {
  for (const policy of ["open", "same-bridge", "isolated"] as const) {
    Deno.test({
      name: `firewall traffic (${backend}): ingressPolicy ${policy}`,
      ignore,
      fn: () =>
        withDataDirAndNamespaces(3, async (dataDir, host, ...ctrs) => {
          const [a1, a2, b1] = await twoBridges(host, ctrs, dataDir, {
            backend,
            ingressPolicy: policy,
          });
          const seen = {
            sameBridge: await reach(a1!, a2!),
            acrossAtoB: await reach(a1!, b1!),
            acrossBtoA: await reach(b1!, a1!),
          };
          assertEquals(seen, {
            sameBridge: policy !== "isolated",
            acrossAtoB: policy === "open",
            acrossBtoA: policy === "open",
          });
        }),
    });
  }
}

Deno.test({
  name:
    "firewall traffic (iptables): with FORWARD policy DROP only the containers' rules let traffic through",
  ignore,
  fn: () =>
    withDataDirAndNamespaces(3, async (dataDir, host, ...ctrs) => {
      await host.exec("iptables", ["-P", "FORWARD", "DROP"]);
      const [a1, , b1] = await twoBridges(host, ctrs, dataDir, { backend: "iptables" });
      assertEquals(await reach(a1!, b1!), true, "a1 -> b1 through CNI-FORWARD");
      await a1!.unfirewall();
      await b1!.unfirewall();
      assertEquals(await reach(a1!, b1!), false, "a1 -> b1 after the firewall's DEL");
    }),
});
