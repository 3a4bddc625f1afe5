/**
 * The agent's life on one backend, as one test of steps on one cluster:
 * three nodes with two pods each all reach each other; a pod reaches the
 * outside host masqueraded; a fourth node joins and is reachable; killed
 * with -9, its lease expires and its entries go everywhere; restarted
 * agents keep their subnets, and a restart's full sync removes the stale
 * routes the agent owns and no other.
 * @module
 */

import { assert, assertEquals, assertMatch } from "./assert.ts";
import { DIST_BIN } from "./applet.ts";
import {
  clusterStep,
  OUTSIDE_IP,
  type Pod,
  type TestCluster,
  type TestNode,
  withCluster,
} from "./cluster.ts";
import { canNetns, sh, spawnOutput } from "./netns.ts";
import { pingSweep } from "./ping.ts";

/** The kernel entries the agent owns on a node, as sorted text. */
export async function agentEntries(
  node: TestNode,
): Promise<{ routes: string[]; fdb: string[]; neigh: string[] }> {
  const routes = (await node.ipJson<{ dst: string; gateway?: string }[]>(
    "route",
    "show",
    "proto",
    "152",
  )).map((r) => `${r.dst} via ${r.gateway}`).sort();
  if (node.cluster.backend === "host-gw") return { routes, fdb: [], neigh: [] };
  const fdb = (JSON.parse(
    await sh("ip", [
      "netns",
      "exec",
      node.ns.name,
      "bridge",
      "-j",
      "fdb",
      "show",
      "dev",
      "cnikit.1",
    ]),
  ) as { mac: string; dst?: string }[]).map((f) => `${f.mac} dst ${f.dst}`).sort();
  const neigh = (await node.ipJson<{ dst: string; lladdr: string }[]>(
    "neigh",
    "show",
    "dev",
    "cnikit.1",
  )).map((n) => `${n.dst} lladdr ${n.lladdr}`).sort();
  return { routes, fdb, neigh };
}

/** The VTEP MAC a node published, from etcd. */
async function published(cluster: TestCluster, node: TestNode) {
  const out = await cluster.etcdctl(["get", "--prefix", `${cluster.etcdPrefix}/subnets/`]);
  const lines = out.split("\n").filter(Boolean);
  for (let i = 0; i + 1 < lines.length; i += 2) {
    const record = JSON.parse(lines[i + 1]!);
    if (record.node === node.name) return record as { publicIP: string; vtepMAC?: string };
  }
  throw new Error(`${node.name} has no record in etcd`);
}

/** What the agent of `node` must have put in its kernel for the other nodes. */
async function expectedEntries(cluster: TestCluster, node: TestNode, others: TestNode[]) {
  const routes: string[] = [], fdb: string[] = [], neigh: string[] = [];
  for (const other of others.filter((o) => o !== node)) {
    const subnet = await other.subnet();
    const base = subnet.split("/")[0]!;
    if (cluster.backend === "host-gw") {
      routes.push(`${subnet} via ${other.ip}`);
      continue;
    }
    const { vtepMAC } = await published(cluster, other);
    routes.push(`${subnet} via ${base}`);
    fdb.push(`${vtepMAC} dst ${other.ip}`);
    neigh.push(`${base} lladdr ${vtepMAC}`);
  }
  return { routes: routes.sort(), fdb: fdb.sort(), neigh: neigh.sort() };
}

/** Every node's agent entries are exactly those for `nodes`. */
export async function assertMesh(cluster: TestCluster, nodes: TestNode[]): Promise<void> {
  for (const node of nodes) {
    assertEquals(
      await agentEntries(node),
      await expectedEntries(cluster, node, nodes),
      `entries of ${node.name}`,
    );
  }
}

/** Every pod of `pods` gets replies from every other; throws naming the silent pairs. */
export async function assertAllPairs(pods: Pod[]): Promise<void> {
  const silent: string[] = [];
  for (const pod of pods) {
    const others = pods.filter((p) => p !== pod).map((p) => p.ip);
    for (const ip of await pingSweep(pod.ns, others, 5)) {
      silent.push(`${pod.ip} (${pod.node.name}) -> ${ip}`);
    }
  }
  assertEquals(silent, [], "pod pairs without replies");
}

/** The packets the node's MASQUERADE rule has matched. */
async function masqueraded(node: TestNode): Promise<number> {
  const out = await node.ns.exec("iptables", [
    "-t",
    "nat",
    "-L",
    "CNIKIT-AGENT-MASQ",
    "-v",
    "-x",
    "-n",
  ]);
  const line = out.split("\n").find((l) => / MASQUERADE /.test(l));
  if (!line) throw new Error(`no MASQUERADE rule on ${node.name}:\n${out}`);
  return Number(line.trim().split(/\s+/)[0]);
}

/** Milliseconds between two ISO times found in agent logs. */
function msBetween(from: string, to: string): number {
  return Date.parse(to) - Date.parse(from);
}

/** Registers the scenario test for `backend`. */
export function agentScenario(backend: "host-gw" | "vxlan"): void {
  Deno.test({
    name: `agent (${backend}): pods across nodes, outside, join, leave by lease expiry, restarts`,
    ignore: !canNetns,
    fn: (t) =>
      withCluster({ backend, leaseTTL: 5 }, async (cluster) => {
        const nodes = await cluster.addNodes(3);
        const pods: Pod[] = [];

        await clusterStep(
          t,
          cluster,
          "3 nodes lease distinct subnets; 2 pods each reach every other pod",
          async () => {
            const subnets = await Promise.all(nodes.map((n) => n.subnet()));
            assertEquals(new Set(subnets).size, 3);
            assertEquals(
              [...(await cluster.subnetsInEtcd()).entries()].sort(),
              nodes.map((n, i) => [subnets[i]!, n.name]).sort(),
            );
            await assertMesh(cluster, nodes);
            for (
              const perNode of await Promise.all(
                nodes.map(async (n) => [await n.addPod(), await n.addPod()]),
              )
            ) {
              pods.push(...perNode);
            }
            await assertAllPairs(pods);
            // Pod to pod keeps the pods' own addresses: nothing was masqueraded.
            for (const node of nodes) assertEquals(await masqueraded(node), 0, node.name);
          },
        );

        await clusterStep(
          t,
          cluster,
          "a pod reaches a host outside the cluster CIDR, masqueraded by its node",
          async () => {
            // The outside host has no route to the cluster CIDR: only a reply
            // to the node's own address can come back.
            const routes = await cluster.outside.ipJson<{ dst: string }[]>("route", "show");
            assertEquals(routes.map((r) => r.dst), ["10.123.0.0/24"]);
            const pod = pods[0]!;
            assertEquals(await pingSweep(pod.ns, [OUTSIDE_IP], 5), []);
            assert(await masqueraded(pod.node) > 0, "the masquerade rule matched");
          },
        );

        await clusterStep(
          t,
          cluster,
          "cnikit agent status shows the subnet, the peers and the last sync",
          async () => {
            const node = nodes[0]!;
            const out = await spawnOutput(`${DIST_BIN}/cnikit`, [
              "agent",
              "status",
              "--state-dir",
              node.stateDir,
            ]);
            assertEquals(out.code, 0, out.stderr);
            assertMatch(
              out.stdout,
              new RegExp(`subnet: +${(await node.subnet()).replace(".", "\\.")}`),
            );
            assertMatch(out.stdout, /peers: +2\n/);
            assertMatch(out.stdout, /last sync: \d{4}-/);
            for (const other of nodes.slice(1)) {
              assertMatch(out.stdout, new RegExp(` ${other.name} via `));
            }
          },
        );

        const node4 = await cluster.addNode();
        await clusterStep(
          t,
          cluster,
          "a 4th node joins: every node routes to it within 2 s, its pod reaches all",
          async () => {
            const marks = nodes.map((n) => n.agent!.log.length);
            const agent = await node4.startAgent();
            const leased = (await agent.waitForLog(/^(\S+) cnikit agent: leased/m))[1]!;
            for (const [i, node] of nodes.entries()) {
              const joined = (await node.agent!.waitForLog(
                /^(\S+) cnikit agent: join: node4 /m,
                30,
                marks[i],
              ))[1]!;
              const ms = msBetween(leased, joined);
              console.log(`${backend}: node4 joined on ${node.name} ${ms} ms after its lease`);
              assert(ms < 2000, `node4 reached ${node.name} in ${ms} ms`);
            }
            await assertMesh(cluster, [...nodes, node4]);
            const pod = await node4.addPod();
            await assertAllPairs([...pods, pod]);
          },
        );

        await clusterStep(
          t,
          cluster,
          "the 4th node's agent killed with -9: its entries go on every node when its lease expires",
          async () => {
            const marks = nodes.map((n) => n.agent!.log.length);
            const subnet4 = await node4.subnet();
            const killed = Date.now();
            await node4.agent!.stop("SIGKILL");
            for (const [i, node] of nodes.entries()) {
              await node.agent!.waitForLog(/cnikit agent: leave: node4 /, 30, marks[i]);
            }
            console.log(
              `${backend}: node4 left everywhere ${Date.now() - killed} ms after kill -9`,
            );
            assert(!(await cluster.subnetsInEtcd()).has(subnet4));
            await assertMesh(cluster, nodes);
            await assertAllPairs(pods);
          },
        );

        await clusterStep(
          t,
          cluster,
          "restarted agents keep their subnets; a restart removes only the agent's stale routes",
          async () => {
            const [node1, node2] = nodes as [TestNode, TestNode];
            const before = await Promise.all(nodes.map((n) => n.subnet()));
            // Left by an earlier run: a route with the agent's protocol for a
            // subnet no node holds. Someone else's route must survive.
            await node1.ns.exec("ip", [
              "route",
              "add",
              "10.244.250.0/24",
              "via",
              "10.123.0.99",
              "proto",
              "152",
            ]);
            await node1.ns.exec("ip", [
              "route",
              "add",
              "10.244.251.0/24",
              "via",
              "10.123.0.99",
              "proto",
              "static",
            ]);
            if (backend === "vxlan") {
              await node1.ns.exec("bridge", [
                "fdb",
                "add",
                "02:00:00:00:00:99",
                "dev",
                "cnikit.1",
                "dst",
                "10.123.0.99",
                "self",
                "permanent",
              ]);
              await node1.ns.exec("ip", [
                "neigh",
                "add",
                "10.244.250.0",
                "lladdr",
                "02:00:00:00:00:99",
                "dev",
                "cnikit.1",
                "nud",
                "permanent",
              ]);
            }
            // A clean stop releases the subnet; the saved state gets it back.
            assertEquals((await node1.agent!.stop("SIGTERM")).code, 0);
            assertMatch(node1.agent!.log, /released 10\.244\.\d+\.0\/24/);
            assert(!(await cluster.subnetsInEtcd()).has(before[0]!), "released in etcd at once");
            await node1.startAgent();
            assertMatch(node1.agent!.log, /the subnet this node held before/);
            assertMatch(
              node1.agent!.log,
              /reconcile \(start[^\n]*: 2 peers, [1-9]\d* stale entries removed/,
            );
            // Killed: the record is still in etcd under the old lease; the
            // new run takes it over.
            await node2.agent!.stop("SIGKILL");
            await node2.startAgent();
            assertMatch(node2.agent!.log, /the subnet this node held before/);
            assertEquals(await Promise.all(nodes.map((n) => n.subnet())), before);
            const routes = await node1.ipJson<{ dst: string }[]>("route", "show");
            assert(!routes.some((r) => r.dst === "10.244.250.0/24"), "stale agent route removed");
            assert(routes.some((r) => r.dst === "10.244.251.0/24"), "someone else's route kept");
            await node1.ns.exec("ip", ["route", "del", "10.244.251.0/24"]);
            await assertMesh(cluster, nodes);
            await assertAllPairs(pods);
            assertEquals(new Set((await cluster.subnetsInEtcd()).keys()).size, 3);
          },
        );
      }),
  });
}
