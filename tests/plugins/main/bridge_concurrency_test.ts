/**
 * Fifty ADDs started at once on one bridge that does not exist yet, then
 * fifty DELs: every call succeeds, no address is handed out twice, there is
 * one bridge with one gateway address, and afterwards nothing is left. The
 * same run through the reference gives the wall times to compare with.
 */

import { assert, assertEquals } from "../../helpers/assert.ts";
import { currentResult, haveReference, REFERENCE_BIN } from "../../helpers/applet.ts";
import { withTempDir } from "../../helpers/tempdir.ts";
import { hostLocal, leases } from "../../helpers/ipam.ts";
import { addresses, iptablesMasq, links } from "../../helpers/kernel.ts";
import {
  assertNothingLeft,
  bridge,
  bridgeConf,
  bridgeName,
  spoofCheck,
} from "../../helpers/bridge.ts";
import { canNetns, TestNetns, withNamespaces } from "../../helpers/netns.ts";

const COUNT = 50;

async function withContainers<T>(count: number, fn: (ctrs: TestNetns[]) => Promise<T>): Promise<T> {
  const ctrs = await Promise.all(Array.from({ length: count }, () => TestNetns.create("ckc")));
  try {
    return await fn(ctrs);
  } finally {
    await Promise.all(ctrs.map((c) => c.remove()));
  }
}

for (const who of ["cnikit", "reference"] as const) {
  Deno.test({
    name: `bridge ${COUNT} parallel ADDs then ${COUNT} parallel DELs on one new bridge (${who})`,
    ignore: !canNetns || !haveReference,
    fn: () =>
      withTempDir((dataDir) =>
        withNamespaces(0, (host) =>
          withContainers(COUNT, async (ctrs) => {
            const bin = who === "reference" ? REFERENCE_BIN : undefined;
            const br = bridgeName();
            const conf = bridgeConf("1.0.0", br, hostLocal("v4", dataDir), {
              isGateway: true,
              ipMasq: true,
              macspoofchk: true,
            });
            const at = (i: number) => ({ netns: ctrs[i]!.path, containerId: `par${i}` });

            let start = performance.now();
            const adds = await Promise.all(
              ctrs.map((_, i) => bridge("ADD", host, at(i), conf, bin)),
            );
            const addMs = performance.now() - start;
            const failed = adds.filter((a) => a.code !== 0);
            assertEquals(failed.map((a) => a.stdout + a.stderr), []);
            const ips = adds.map((a) => currentResult(a, "1.0.0").ips![0]!.address);
            assertEquals(new Set(ips).size, COUNT, "an address was handed out twice");
            assertEquals((await leases(dataDir)).length, COUNT);

            const hostLinks = await links(host);
            const bridges = hostLinks.filter((l) => l.linkinfo?.info_kind === "bridge");
            assertEquals(bridges.map((b) => b.ifname), [br]);
            assertEquals(addresses(bridges[0]!), ["10.88.0.1/24 brd 10.88.0.255"]);
            const ports = hostLinks.filter((l) => l.master === br);
            assertEquals(ports.length, COUNT);
            assert(ports.every((p) => p.flags.includes("UP")));
            // Every container's address answers from its own veth.
            for (const [i, ctr] of ctrs.entries()) {
              const eth = (await links(ctr))[0]!;
              assertEquals(addresses(eth), [`${ips[i]} brd 10.88.0.255`]);
            }
            assertEquals(
              (await iptablesMasq(host)).filter((l) => l.startsWith("-A POSTROUTING")).length,
              COUNT,
            );
            assertEquals((await spoofCheck(host)).rules.length, 4 * COUNT);

            start = performance.now();
            const dels = await Promise.all(
              ctrs.map((_, i) => bridge("DEL", host, at(i), conf, bin)),
            );
            const delMs = performance.now() - start;
            assertEquals(dels.filter((d) => d.code !== 0).map((d) => d.stdout + d.stderr), []);
            await assertNothingLeft(host, ctrs, dataDir);
            console.log(
              `${who}: ${COUNT} parallel ADDs ${addMs.toFixed(0)} ms, ${COUNT} parallel DELs ${
                delMs.toFixed(0)
              } ms`,
            );
          }))
      ),
  });
}
