/**
 * portmap traffic, both backends: a server in pod1 answers on the fake
 * host's address from an "outside" namespace that has no route to the pod
 * subnet, from the host itself, on 127.0.0.1, from a second pod and from
 * pod1 itself (hairpin), over IPv4 and IPv6, TCP and UDP; a hostIP mapping
 * answers only on that address; nothing answers after DEL; and DEL flushes
 * the UDP conntrack entry so that the next container on the same host port
 * gets the flow.
 * @module
 */

import { assertEquals } from "../../helpers/assert.ts";
import { assertSuccess, haveReference } from "../../helpers/applet.ts";
import { vethBetween } from "../../helpers/kernel.ts";
import { canNetns, sh, type TestNetns, withDataDirAndNamespaces } from "../../helpers/netns.ts";
import { type Mapping, portmap, portmapConf, portmapLeftovers } from "../../helpers/portmap.ts";
import { ptp, ptpConf } from "../../helpers/ptp.ts";
import { haveSocat, request, Server, withServers } from "../../helpers/servers.ts";

const HOST4 = "192.0.2.1";
const HOST6 = "2001:db8:1::1";
const ignore = !canNetns || !haveReference || !haveSocat;

/** Links the fake host to an "outside" namespace that knows nothing of the pod subnets. */
async function addOutside(host: TestNetns, outside: TestNetns): Promise<void> {
  await vethBetween(host, "up0", outside, "down0");
  for (
    const [ns, dev, cidr] of [
      [host, "up0", `${HOST4}/24`],
      [host, "up0", `${HOST6}/64`],
      [outside, "down0", "192.0.2.2/24"],
      [outside, "down0", "2001:db8:1::2/64"],
    ] as const
  ) {
    await sh("ip", ["-n", ns.name, "addr", "add", cidr, "dev", dev, "nodad"]);
  }
}

const MAPPINGS: Mapping[] = [
  { hostPort: 8080, containerPort: 80, protocol: "tcp" },
  { hostPort: 5353, containerPort: 53, protocol: "udp" },
  { hostPort: 9090, containerPort: 80, protocol: "tcp", hostIP: HOST4 },
];

for (const backend of ["iptables", "nftables"] as const) {
  Deno.test({
    name: `portmap traffic (${backend}): outside, host, 127.0.0.1, hairpin, IPv6, UDP, hostIP`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(3, async (dataDir, host, pod1, pod2, outside) => {
        await addOutside(host, outside);
        const ptpOf = ptpConf("1.0.0", "dual", dataDir);
        const at1 = { netns: pod1.path, containerId: "pod1" };
        const at2 = { netns: pod2.path, containerId: "pod2" };
        const add1 = assertSuccess(await ptp("ADD", host, at1, ptpOf));
        assertSuccess(await ptp("ADD", host, at2, ptpOf));
        const conf = portmapConf("1.0.0", add1, MAPPINGS, { backend });
        assertSuccess(await portmap("ADD", host, at1, conf));
        await withServers(() => [
          Server.start(pod1, "tcp", 80, "pod1"),
          Server.start(pod1, "udp", 53, "pod1"),
        ], async () => {
          const seen = {
            outside: await request(outside, "tcp", HOST4, 8080),
            outside6: await request(outside, "tcp", HOST6, 8080),
            outsideUdp: await request(outside, "udp", HOST4, 5353),
            host: await request(host, "tcp", HOST4, 8080),
            localhost: await request(host, "tcp", "127.0.0.1", 8080),
            pod2: await request(pod2, "tcp", HOST4, 8080),
            pod1Itself: await request(pod1, "tcp", HOST4, 8080),
            hostIP: await request(outside, "tcp", HOST4, 9090),
            // 9090 is mapped on HOST4 only: pod2 asking its gateway gets nothing.
            otherAddress: await request(pod2, "tcp", "10.88.0.1", 9090, { seconds: 1 }),
          };
          assertEquals(seen, {
            outside: "pod1",
            outside6: "pod1",
            outsideUdp: "pod1",
            host: "pod1",
            localhost: "pod1",
            pod2: "pod1",
            pod1Itself: "pod1",
            hostIP: "pod1",
            otherAddress: undefined,
          });
          assertSuccess(await portmap("DEL", host, at1, conf));
          assertEquals(await request(outside, "tcp", HOST4, 8080, { seconds: 1 }), undefined);
          assertEquals(await portmapLeftovers(host), []);
        });
      }),
  });

  Deno.test({
    name: `portmap UDP (${backend}): DEL flushes the flow, the next container on the port gets it`,
    ignore,
    fn: () =>
      withDataDirAndNamespaces(3, async (dataDir, host, pod1, pod2, outside) => {
        await addOutside(host, outside);
        const ptpOf = ptpConf("1.0.0", "v4", dataDir);
        const at1 = { netns: pod1.path, containerId: "pod1" };
        const at2 = { netns: pod2.path, containerId: "pod2" };
        const udp = [{ hostPort: 5353, containerPort: 53, protocol: "udp" }];
        const add1 = assertSuccess(await ptp("ADD", host, at1, ptpOf));
        const add2 = assertSuccess(await ptp("ADD", host, at2, ptpOf));
        const conf1 = portmapConf("1.0.0", add1, udp, { backend });
        const conf2 = portmapConf("1.0.0", add2, udp, { backend });
        const flows = async () =>
          (await host.exec("conntrack", ["-L", "-p", "udp", "--orig-port-dst", "5353"]).catch(() =>
            ""
          )).trim();
        await withServers(() => [
          Server.start(pod1, "udp", 53, "pod1"),
          Server.start(pod2, "udp", 53, "pod2"),
        ], async () => {
          assertSuccess(await portmap("ADD", host, at1, conf1));
          const from = { sourcePort: 40053 };
          assertEquals(await request(outside, "udp", HOST4, 5353, from), "pod1");
          assertEquals((await flows()).includes("dport=5353"), true);
          assertSuccess(await portmap("DEL", host, at1, conf1));
          assertEquals(await flows(), "");
          assertSuccess(await portmap("ADD", host, at2, conf2));
          assertEquals(await request(outside, "udp", HOST4, 5353, from), "pod2");
          assertSuccess(await portmap("DEL", host, at2, conf2));
        });
      }),
  });
}
