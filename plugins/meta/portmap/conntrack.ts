/**
 * Stale UDP flows: conntrack keeps a UDP "connection" to a host port alive
 * as long as packets keep coming, so after a container restart the old
 * flow (NATed to the old address) would swallow the traffic. portmap
 * deletes the conntrack entries whose original destination port is a
 * mapped UDP host port, after ADD (as the reference does) and after DEL
 * (plugins#1277). This uses the `conntrack` tool from conntrack-tools, one
 * process per port and family, run side by side; a missing tool or a
 * failure is reported on stderr and never fails the call, as in the
 * reference.
 * @module
 */

import { run } from "../../../lib/net/exec.ts";
import { installed } from "../../../lib/netfilter/detect.ts";

/** Deletes the conntrack entries of UDP flows to `ports` in `families`. */
export async function flushUdpFlows(ports: number[], families: (4 | 6)[]): Promise<void> {
  if (ports.length === 0 || families.length === 0) return;
  if (!installed("conntrack")) {
    console.error("cnikit portmap: conntrack not found; stale UDP flows were not flushed");
    return;
  }
  await Promise.all(families.flatMap((family) =>
    [...new Set(ports)].map(async (port) => {
      const args = ["-D", "-p", "udp", "--orig-port-dst", String(port)];
      const out = await run("conntrack", [...args, "-f", family === 4 ? "ipv4" : "ipv6"], {
        allowFailure: true,
      });
      // It exits 1 when there was nothing to delete.
      if (out.code !== 0 && !/0 flow entries have been deleted/.test(out.stderr)) {
        console.error(
          `cnikit portmap: failed to delete stale UDP conntrack entries for port ${port}: ${out.stderr.trim()}`,
        );
      }
    })
  ));
}
