import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { DIST_BIN } from "../helpers/applet.ts";
import { assertAllPairs, assertMesh } from "../helpers/agent_scenario.ts";
import { clusterStep, eventually, withCluster } from "../helpers/cluster.ts";
import { canNetns, spawnOutput } from "../helpers/netns.ts";

const OUTAGE_MS = 10_000;

Deno.test({
  name:
    "agent: etcd stopped for 10 s and restarted: no pod loses connectivity, no duplicate subnet",
  ignore: !canNetns,
  fn: (t) =>
    withCluster({ backend: "vxlan", leaseTTL: 5 }, async (cluster) => {
      const nodes = await cluster.addNodes(3);
      const pods = await Promise.all(nodes.map((n) => n.addPod()));
      await assertAllPairs(pods);
      const before = await cluster.subnetsInEtcd();
      assertEquals(before.size, 3);

      await clusterStep(
        t,
        cluster,
        "pings around the ring lose nothing while etcd is away",
        async () => {
          // 5 per second for 20 s: from before the stop until after the agents
          // are back on etcd.
          const pingers = pods.map((pod, i) =>
            spawnOutput("ip", [
              "netns",
              "exec",
              pod.ns.name,
              "ping",
              "-q",
              "-c",
              "100",
              "-i",
              "0.2",
              "-W",
              "1",
              pods[(i + 1) % pods.length]!.ip,
            ])
          );
          await new Promise((r) => setTimeout(r, 1000));
          const marks = nodes.map((n) => n.agent!.log.length);
          const stoppedAt = Date.now();
          await cluster.stopEtcd();
          for (const [i, node] of nodes.entries()) {
            await node.agent!.waitForLog(/etcd unreachable, keeping the data plane/, 30, marks[i]);
          }
          const status = await spawnOutput(`${DIST_BIN}/cnikit`, [
            "agent",
            "status",
            "--state-dir",
            nodes[0]!.stateDir,
          ]);
          assertEquals(status.code, 0, status.stderr);
          assertMatch(status.stdout, /etcd: .*UNREACHABLE since/);
          await new Promise((r) => setTimeout(r, Math.max(0, stoppedAt + OUTAGE_MS - Date.now())));
          await cluster.startEtcd();
          const started = Date.now();
          for (const [i, node] of nodes.entries()) {
            await node.agent!.waitForLog(
              /reconcile \(etcd back, watch resumed at revision/,
              30,
              marks[i],
            );
          }
          console.log(`agents reconciled ${Date.now() - started} ms after etcd answered again`);
          for (const [i, out] of (await Promise.all(pingers)).entries()) {
            const [, sent, received] =
              out.stdout.match(/(\d+) packets transmitted, (\d+) received/) ??
                [];
            assertEquals(received, sent, `pod ${i}: ${out.stdout}${out.stderr}`);
            assertEquals(sent, "100");
          }
        },
      );

      await clusterStep(
        t,
        cluster,
        "afterwards: the same subnets, no duplicate, every path in place",
        async () => {
          assertEquals(await cluster.subnetsInEtcd(), before);
          await assertMesh(cluster, nodes);
          await assertAllPairs(pods);
          // A node that joins now is seen by the agents that lived through the outage.
          const node4 = (await cluster.addNodes(1))[0]!;
          const subnets = await cluster.subnetsInEtcd();
          assertEquals(subnets.size, 4);
          assertEquals(new Set(subnets.values()).size, 4);
          for (const node of nodes) await node.agent!.waitForLog(/join: node4 /);
          await assertMesh(cluster, [...nodes, node4]);
          nodes.push(node4);
        },
      );

      await clusterStep(
        t,
        cluster,
        "a watch resumed past a compaction lists again; an expired lease is replaced",
        async () => {
          const frozen = nodes[0]!;
          const others = nodes.slice(1);
          const subnet = await frozen.subnet();
          const mark = frozen.agent!.log.length;
          const marks = others.map((n) => n.agent!.log.length);
          // Frozen: no refresh of its lease, and its watch connection dies
          // with the etcd restart.
          Deno.kill(frozen.agent!.pid, "SIGSTOP");
          try {
            await cluster.stopEtcd();
            await cluster.startEtcd();
            for (const [i, node] of others.entries()) {
              await node.agent!.waitForLog(new RegExp(`leave: ${frozen.name} `), 30, marks[i]);
            }
            // Changes it misses, then compacted away.
            const ghost = `${cluster.etcdPrefix}/subnets/10.244.200.0-24`;
            await cluster.etcdctl([
              "put",
              ghost,
              JSON.stringify({
                node: "ghost",
                publicIP: "10.123.0.99",
                backend: "vxlan",
                vtepMAC: "02:00:00:00:00:98",
              }),
            ]);
            await cluster.etcdctl(["put", `${cluster.etcdPrefix}/elsewhere`, "x"]);
            await cluster.etcdctl(["del", `${cluster.etcdPrefix}/elsewhere`]);
            const revision =
              JSON.parse(await cluster.etcdctl(["get", ghost, "-w", "json"])).header.revision;
            await cluster.etcdctl(["compaction", String(revision)]);
          } finally {
            Deno.kill(frozen.agent!.pid, "SIGCONT");
          }
          await frozen.agent!.waitForLog(
            /reconcile \(revisions up to \d+ compacted, listed again at \d+\)/,
            30,
            mark,
          );
          await frozen.agent!.waitForLog(
            /registered 10\.244\.\d+\.0\/24 again \(lease \d+ expired\)/,
            30,
            mark,
          );
          assertMatch(
            frozen.agent!.log.slice(mark),
            /join: ghost 10\.244\.200\.0\/24 via 10\.123\.0\.99/,
          );
          for (const [i, node] of others.entries()) {
            await node.agent!.waitForLog(new RegExp(`join: ${frozen.name} `), 30, marks[i]);
          }
          assertEquals(await frozen.subnet(), subnet);
          await cluster.etcdctl(["del", `${cluster.etcdPrefix}/subnets/10.244.200.0-24`]);
          for (const node of nodes) await node.agent!.waitForLog(/leave: ghost /);
          await eventually(() => assertMesh(cluster, nodes));
          await assertAllPairs(pods);
        },
      );
    }),
});
