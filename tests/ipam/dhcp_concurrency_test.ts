/**
 * The dhcp daemon under concurrent calls: twenty containers added at once
 * get twenty distinct leases, all released by twenty DELs; and a call that
 * waits for a server that never answers holds up nobody else.
 */

import { assert, assertEquals } from "../helpers/assert.ts";
import { assertSuccess, cniEnv, currentResult, hostRunner, runApplet } from "../helpers/applet.ts";
import { dnsmasqClientId, haveDnsmasq, withDhcpLan } from "../helpers/dhcp.ts";
import { links } from "../helpers/kernel.ts";
import { canNetns, sh, TestNetns, uniqueName } from "../helpers/netns.ts";

const bridge = hostRunner("bridge");
const COUNT = 20;

async function withContainers(
  count: number,
  fn: (ctrs: TestNetns[]) => Promise<void>,
): Promise<void> {
  const ctrs = await Promise.all(Array.from({ length: count }, () => TestNetns.create("ckc")));
  try {
    await fn(ctrs);
  } finally {
    await Promise.all(ctrs.map((c) => c.remove()));
  }
}

Deno.test({
  name:
    `dhcp ${COUNT} parallel ADDs get ${COUNT} distinct leases, ${COUNT} parallel DELs release them all`,
  ignore: !canNetns || !haveDnsmasq,
  fn: () =>
    withDhcpLan([], (lan) =>
      withContainers(COUNT, async (ctrs) => {
        const daemon = await lan.startDaemon({
          flags: ["-timeout", "2s", "-resendtimeout", "60s"],
        });
        const conf = {
          cniVersion: "1.0.0",
          name: "lan",
          type: "bridge",
          bridge: lan.bridge,
          ipam: { type: "dhcp", daemonSocketPath: daemon.socketPath },
        };
        const at = (i: number) => ({ containerId: `par${i}`, netns: ctrs[i]!.path });
        let start = performance.now();
        const adds = await Promise.all(ctrs.map((_, i) => bridge("ADD", lan.host, at(i), conf)));
        const addMs = performance.now() - start;
        assertEquals(adds.filter((a) => a.code !== 0).map((a) => a.stdout + a.stderr), []);
        const ips = adds.map((a) => currentResult(a, "1.0.0").ips![0]!.address.split("/")[0]!);
        assertEquals(new Set(ips).size, COUNT, "an address was handed out twice");
        const leases = await lan.server.waitForLeases(COUNT);
        assertEquals(leases.map((l) => l.ip).sort(), [...ips].sort());
        assertEquals(
          leases.map((l) => l.clientId).sort(),
          ctrs.map((_, i) => dnsmasqClientId(`par${i}/lan/eth0`)).sort(),
        );

        start = performance.now();
        const dels = await Promise.all(ctrs.map((_, i) => bridge("DEL", lan.host, at(i), conf)));
        const delMs = performance.now() - start;
        assertEquals(dels.filter((d) => d.code !== 0).map((d) => d.stdout + d.stderr), []);
        await lan.server.waitForNoLeases();
        console.log(
          `${COUNT} parallel ADDs ${addMs.toFixed(0)} ms, ${COUNT} parallel DELs ${
            delMs.toFixed(0)
          } ms`,
        );
      })),
});

Deno.test({
  name:
    "dhcp calls for different containers do not wait on each other; a DEL cancels a pending ADD",
  ignore: !canNetns || !haveDnsmasq,
  fn: () =>
    withDhcpLan([], (lan) =>
      withContainers(2, async ([lost, found]) => {
        const daemon = await lan.startDaemon({
          flags: ["-timeout", "1s", "-resendtimeout", "20s"],
        });
        const ipam = {
          cniVersion: "1.0.0",
          name: "lan",
          ipam: { type: "dhcp", daemonSocketPath: daemon.socketPath },
        };
        // A link to nowhere: its DISCOVERs go unanswered until -resendtimeout.
        const nowhere = uniqueName("ckx");
        await sh("ip", [
          "-n",
          lan.host.name,
          "link",
          "add",
          nowhere,
          "type",
          "veth",
          "peer",
          "name",
          "eth0",
          "netns",
          lost!.name,
        ]);
        await sh("ip", ["-n", lan.host.name, "link", "set", nowhere, "up"]);
        let lostDone = false;
        const waiting = runApplet("dhcp", {
          env: cniEnv("ADD", { containerId: "lost", netns: lost!.path }),
          stdin: ipam,
          host: lan.host,
        }).then((r) => {
          lostDone = true;
          return r;
        });
        const conf = { ...ipam, type: "bridge", bridge: lan.bridge };
        assertSuccess(
          await bridge("ADD", lan.host, { containerId: "found", netns: found!.path }, conf),
        );
        assert(!lostDone, "the call for the other container ended first");
        await lan.server.waitForLeases(1);
        // A DEL (a runtime giving up) cancels the acquisition still waiting for a server.
        assertSuccess(
          await runApplet("dhcp", {
            env: cniEnv("DEL", { containerId: "lost", netns: lost!.path }),
            stdin: ipam,
            host: lan.host,
          }),
        );
        const cancelled = await waiting;
        assertEquals(cancelled.json?.code, 5);
        assertEquals(
          cancelled.json?.msg,
          "dhcp lost/lan/eth0: cancelled by a DEL of the same attachment",
        );
        assertSuccess(
          await bridge("DEL", lan.host, { containerId: "found", netns: found!.path }, conf),
        );
        assertEquals((await links(found!)).length, 0);
      })),
});
