import { assertEquals, assertMatch } from "../helpers/assert.ts";
import { assertMesh } from "../helpers/agent_scenario.ts";
import { clusterStep, eventually, type TestNode, withCluster } from "../helpers/cluster.ts";
import { canNetns } from "../helpers/netns.ts";

Deno.test({
  name:
    "agent: 8 agents started at once lease 8 distinct subnets; the 9th finds the CIDR exhausted",
  ignore: !canNetns,
  fn: (t) =>
    // A /21 holds exactly 8 /24s.
    withCluster({ backend: "host-gw", clusterCIDR: "10.244.0.0/21" }, async (cluster) => {
      const nodes: TestNode[] = [];
      for (let i = 0; i < 8; i++) nodes.push(await cluster.addNode());

      await clusterStep(
        t,
        cluster,
        "8 at once: 8 distinct subnets, every node routes to the 7 others",
        async () => {
          const started = Date.now();
          await Promise.all(nodes.map((n) => n.startAgent()));
          console.log(`8 agents leased and synced in ${Date.now() - started} ms`);
          const subnets = await Promise.all(nodes.map((n) => n.subnet()));
          assertEquals(new Set(subnets).size, 8);
          assertEquals(
            [...(await cluster.subnetsInEtcd()).entries()].sort(),
            nodes.map((n, i) => [subnets[i]!, n.name]).sort(),
          );
          await eventually(() => assertMesh(cluster, nodes));
        },
      );

      const ninth = await cluster.addNode();
      await clusterStep(
        t,
        cluster,
        "a 9th agent exits 4: the cluster CIDR is exhausted",
        async () => {
          const agent = await ninth.startAgent([], false);
          assertEquals((await agent.wait()).code, 4);
          assertMatch(
            agent.log,
            /cluster CIDR 10\.244\.0\.0\/21 is exhausted: all 8 \/24 subnets are leased/,
          );
          assertEquals((await cluster.subnetsInEtcd()).size, 8);
        },
      );

      await clusterStep(
        t,
        cluster,
        "an agent configured otherwise than the cluster exits 2",
        async () => {
          const agent = await ninth.startAgent(["--subnet-len", "25"], false);
          assertEquals((await agent.wait()).code, 2);
          assertMatch(
            agent.log,
            /the cluster runs --cluster-cidr 10\.244\.0\.0\/21 --subnet-len 24 --backend host-gw/,
          );
        },
      );
    }),
});
