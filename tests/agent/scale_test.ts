import { assert, assertEquals } from "../helpers/assert.ts";
import { clusterStep, type Pod, type TestNode, withCluster } from "../helpers/cluster.ts";
import { canNetns } from "../helpers/netns.ts";
import { pingSweep } from "../helpers/ping.ts";
import { contains, parseCIDR, parseIP } from "../../lib/cni/ipnet.ts";

const NODES = 4;
const PODS_PER_NODE = 50;

/** What pods leave on a node: veths, pod routes, host-local leases, cached results. */
async function podLeftovers(node: TestNode): Promise<string[]> {
  const left: string[] = [];
  for (const l of await node.ipJson<{ ifname: string }[]>("link", "show", "type", "veth")) {
    if (l.ifname !== "eth0") left.push(`veth ${l.ifname}`); // eth0: the node's underlay
  }
  for (const r of await node.ipJson<{ dst: string; scope?: string }[]>("route", "show")) {
    if (r.scope === "host") left.push(`route ${r.dst}`);
  }
  for (const dir of [`${node.dir}/ipam/cnikit`, `${node.dir}/cache`]) {
    for (const file of await filesUnder(dir)) {
      // host-local's lock and its last-reserved marker stay by design.
      if (!/\/(lock|last_reserved_ip\.\d+)$/.test(file)) left.push(file);
    }
  }
  return left;
}

/** The files under `dir`, at any depth; none when it does not exist. */
async function filesUnder(dir: string): Promise<string[]> {
  const files: string[] = [];
  try {
    for await (const entry of Deno.readDir(dir)) {
      const path = `${dir}/${entry.name}`;
      if (entry.isDirectory) files.push(...await filesUnder(path));
      else files.push(path);
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return files;
}

Deno.test({
  name: `agent: ${
    NODES * PODS_PER_NODE
  } pods across ${NODES} nodes: distinct addresses, all reachable from one pod, all gone after DEL`,
  ignore: !canNetns,
  fn: (t) =>
    withCluster({ backend: "vxlan" }, async (cluster) => {
      const nodes = await cluster.addNodes(NODES);
      const pods: Pod[] = [];

      await clusterStep(
        t,
        cluster,
        `ADD ${NODES * PODS_PER_NODE} pods, one cnitool at a time per node`,
        async () => {
          const started = Date.now();
          // Each node adds its pods one after the other, the nodes side by side.
          const perNode = await Promise.all(nodes.map(async (node) => {
            const added: Pod[] = [];
            for (let i = 0; i < PODS_PER_NODE; i++) added.push(await node.addPod());
            return added;
          }));
          pods.push(...perNode.flat());
          console.log(`scale: ${pods.length} ADDs in ${Date.now() - started} ms`);
          assertEquals(new Set(pods.map((p) => p.ip)).size, NODES * PODS_PER_NODE);
          for (const node of nodes) {
            const subnet = parseCIDR(await node.subnet())!;
            for (const pod of node.pods) {
              assert(contains(subnet, parseIP(pod.ip)!), `${pod.ip} in ${node.name}'s subnet`);
            }
          }
        },
      );

      await clusterStep(t, cluster, "every pod answers one pod on the first node", async () => {
        const from = nodes[0]!.pods[0]!;
        const started = Date.now();
        const silent = await pingSweep(
          from.ns,
          pods.filter((p) => p !== from).map((p) => p.ip),
          30,
        );
        console.log(`scale: swept ${pods.length - 1} pods in ${Date.now() - started} ms`);
        assertEquals(silent, []);
      });

      await clusterStep(t, cluster, "DEL of every pod leaves nothing behind", async () => {
        const started = Date.now();
        await Promise.all(nodes.map(async (node) => {
          for (const pod of [...node.pods]) await node.delPod(pod);
        }));
        console.log(`scale: ${pods.length} DELs in ${Date.now() - started} ms`);
        for (const node of nodes) assertEquals(await podLeftovers(node), [], node.name);
      });
    }),
});
