/**
 * A DHCP server that stops answering: the daemon keeps trying to renew,
 * then to rebind, and when the lease expires it takes the container's link
 * down. dnsmasq's shortest lease is two minutes, so this test takes that
 * long; it has a file of its own so it runs beside the others.
 */

import { assert, assertEquals, assertMatch } from "../helpers/assert.ts";
import { assertSuccess, hostRunner } from "../helpers/applet.ts";
import { haveDnsmasq, withDhcpLan } from "../helpers/dhcp.ts";
import { link } from "../helpers/kernel.ts";
import { canNetns, TestNetns, waitFor } from "../helpers/netns.ts";

const bridge = hostRunner("bridge");

Deno.test({
  name: "dhcp takes the link down when the lease expires with the server gone",
  ignore: !canNetns || !haveDnsmasq,
  fn: () =>
    withDhcpLan(["--dhcp-option=option:T1,2", "--dhcp-option=option:T2,3"], async (lan) => {
      const ctr = await TestNetns.create("ckc");
      try {
        const daemon = await lan.startDaemon();
        const conf = {
          cniVersion: "1.0.0",
          name: "lan",
          type: "bridge",
          bridge: lan.bridge,
          ipam: { type: "dhcp", daemonSocketPath: daemon.socketPath },
        };
        const at = { containerId: "exp", netns: ctr.path };
        assertSuccess(await bridge("ADD", lan.host, at, conf));
        const [lease] = await lan.server.waitForLeases(1);
        await lan.server.stop();
        assert((await link(ctr, "eth0"))!.flags.includes("UP"));
        // Expiry is the lease's end (2 minutes after the last renewal), with room for a slow machine.
        const expires = lease!.expires * 1000;
        await waitFor(
          async () => !(await link(ctr, "eth0"))!.flags.includes("UP"),
          "the link to go down",
          expires - Date.now() + 30_000,
        );
        assert(Date.now() >= expires - 5_000, "the link went down before the lease expired");
        assertMatch(daemon.log, /exp\/lan\/eth0: no answer to renew/);
        assertMatch(daemon.log, /exp\/lan\/eth0: no answer to rebind/);
        assertMatch(daemon.log, /exp\/lan\/eth0: lease expired, bringing "eth0" down/);
        // The lease is gone: DEL has nothing to release and succeeds.
        assertSuccess(await bridge("DEL", lan.host, at, conf));
        assertEquals(await Array.fromAsync(Deno.readDir(`${lan.dir}/daemon0/dhcp-leases`)), []);
      } finally {
        await ctr.remove();
      }
    }),
});
