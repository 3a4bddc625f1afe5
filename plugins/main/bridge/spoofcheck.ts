/**
 * MAC spoof checking for a bridge port with nftables, built from the
 * reference's objects so that cnikit and the reference plugins remove each
 * other's: table `bridge nat`, base chain `PREROUTING` (filter hook,
 * priority -300, policy accept) with one `iifname <port> jump` rule per
 * attachment into chain `cni-br-iface-<id>`, which jumps to
 * `cni-br-iface-<id>-mac`: `ether saddr <mac> return`, then `drop`. Every
 * rule is commented `macspoofchk-<id>`, where id is `<containerID>-<ifname>`
 * (an interface name may hold any character but `/`, `:` and blanks; the
 * JSON transactions of lib/netfilter/nftables.ts carry them all).
 *
 * Setup is one transaction; teardown reads the table once and deletes what
 * it finds in a second, so it needs neither the port nor the MAC and works
 * after the container's netns is gone.
 * @module
 */

import { CniError, ErrorCode } from "../../../lib/cni/errors.ts";
import { installed } from "../../../lib/netfilter/detect.ts";
import { expr, listTable, nftApply, NftTx } from "../../../lib/netfilter/nftables.ts";

const BASE_CHAIN = "PREROUTING";
const tx = new NftTx("bridge", "nat");

/** The per-attachment id the reference names its objects after. */
export function spoofCheckId(containerId: string, ifname: string): string {
  return `${containerId}-${ifname}`;
}

function names(id: string): { iface: string; mac: string; comment: string } {
  const iface = `cni-br-iface-${id}`;
  return { iface, mac: `${iface}-mac`, comment: `macspoofchk-${id}` };
}

function failed(what: string, e: unknown): CniError {
  return new CniError(
    ErrorCode.ioFailure,
    `failed to ${what} spoof-check: ${(e as Error).message}`,
    e instanceof CniError ? e.details : "",
  );
}

/**
 * Lets frames from bridge port `port` in only with source MAC `mac`.
 * Re-running it for the same id replaces the attachment's chains' rules.
 */
export async function setupSpoofCheck(port: string, mac: string, id: string): Promise<void> {
  const n = names(id);
  try {
    await nftApply([
      tx.addTable(),
      tx.addChain(BASE_CHAIN, { type: "filter", hook: "prerouting", prio: -300 }),
      tx.addChain(n.iface),
      tx.addChain(n.mac),
      // A crashed earlier ADD may have left rules in them.
      tx.flushChain(n.iface),
      tx.flushChain(n.mac),
      tx.addRule(
        BASE_CHAIN,
        [expr.match(expr.meta("iifname"), port), expr.jump(n.iface)],
        n.comment,
      ),
      tx.addRule(n.iface, [expr.jump(n.mac)], n.comment),
      tx.addRule(
        n.mac,
        [expr.match(expr.payload("ether", "saddr"), mac), expr.return()],
        n.comment,
      ),
      tx.addRule(n.mac, [expr.drop()], n.comment),
    ]);
  } catch (e) {
    throw failed("setup", e);
  }
}

/**
 * Removes the attachment's jump rule(s) from the base chain and both of its
 * chains; a no-op when none of them exist (or nft is not installed, so none
 * can).
 */
export async function teardownSpoofCheck(id: string): Promise<void> {
  if (!installed("nft")) return;
  const n = names(id);
  try {
    const table = await listTable("bridge", "nat");
    if (!table) return;
    await nftApply([
      ...table.rulesOf(BASE_CHAIN).filter((r) => r.comment === n.comment).map((r) =>
        tx.deleteRule(r)
      ),
      // The iface chain jumps to the mac chain, so it goes first.
      ...[n.iface, n.mac].filter((c) => table.chains.has(c)).map((c) => tx.deleteChain(c)),
    ]);
  } catch (e) {
    throw failed("teardown", e);
  }
}
