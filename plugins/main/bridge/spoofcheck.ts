/**
 * MAC spoof checking for a bridge port with nftables, built from the
 * reference's objects so that cnikit and the reference plugins remove each
 * other's: table `bridge nat`, base chain `PREROUTING` (filter hook,
 * priority -300, policy accept) with one `iifname <port> jump` rule per
 * attachment into chain `cni-br-iface-<id>`, which jumps to
 * `cni-br-iface-<id>-mac`: `ether saddr <mac> return`, then `drop`. Every
 * rule is commented `macspoofchk-<id>`, where id is `<containerID>-<ifname>`.
 *
 * Setup is one `nft -j -f` transaction; teardown reads the table once and
 * deletes what it finds in a second, so it needs neither the port nor the
 * MAC and works after the container's netns is gone.
 * @module
 */

import { CniError, ErrorCode } from "../../../lib/cni/errors.ts";
import { run, toolPath } from "../../../lib/net/exec.ts";

const FAMILY = "bridge";
const TABLE = "nat";
const BASE_CHAIN = "PREROUTING";

/** The per-attachment id the reference names its objects after. */
export function spoofCheckId(containerId: string, ifname: string): string {
  return `${containerId}-${ifname}`;
}

function names(id: string): { iface: string; mac: string; comment: string } {
  const iface = `cni-br-iface-${id}`;
  return { iface, mac: `${iface}-mac`, comment: `macspoofchk-${id}` };
}

function chain(name: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { chain: { family: FAMILY, table: TABLE, name, ...extra } };
}

async function apply(commands: Record<string, unknown>[]): Promise<void> {
  await run("nft", ["-j", "-f", "-"], { stdin: JSON.stringify({ nftables: commands }) });
}

/**
 * Lets frames from bridge port `port` in only with source MAC `mac`.
 * Re-running it for the same id replaces the attachment's chains' rules.
 */
export async function setupSpoofCheck(port: string, mac: string, id: string): Promise<void> {
  const n = names(id);
  const rule = (chainName: string, expr: unknown[]) => ({
    rule: { family: FAMILY, table: TABLE, chain: chainName, expr, comment: n.comment },
  });
  try {
    await apply([
      { add: { table: { family: FAMILY, name: TABLE } } },
      {
        add: chain(BASE_CHAIN, {
          type: "filter",
          hook: "prerouting",
          prio: -300,
          policy: "accept",
        }),
      },
      { add: chain(n.iface) },
      { add: chain(n.mac) },
      // A crashed earlier ADD may have left rules in them.
      { flush: chain(n.iface) },
      { flush: chain(n.mac) },
      {
        add: rule(BASE_CHAIN, [
          { match: { op: "==", left: { meta: { key: "iifname" } }, right: port } },
          { jump: { target: n.iface } },
        ]),
      },
      { add: rule(n.iface, [{ jump: { target: n.mac } }]) },
      {
        add: rule(n.mac, [
          {
            match: {
              op: "==",
              left: { payload: { protocol: "ether", field: "saddr" } },
              right: mac,
            },
          },
          { return: null },
        ]),
      },
      { add: rule(n.mac, [{ drop: null }]) },
    ]);
  } catch (e) {
    throw new CniError(
      ErrorCode.ioFailure,
      `failed to setup spoof-check: ${(e as Error).message}`,
      e instanceof CniError ? e.details : "",
    );
  }
}

interface NftItem {
  chain?: { table: string; name: string };
  rule?: { table: string; chain: string; handle: number; comment?: string };
}

/**
 * Removes the attachment's jump rule(s) from the base chain and both of its
 * chains; a no-op when none of them exist (or nft is not installed, so none
 * can).
 */
export async function teardownSpoofCheck(id: string): Promise<void> {
  try {
    toolPath("nft");
  } catch {
    return;
  }
  const n = names(id);
  const listed = await run("nft", ["-j", "list", "table", FAMILY, TABLE], { allowFailure: true });
  if (listed.code !== 0) return;
  const items = (JSON.parse(listed.stdout) as { nftables: NftItem[] }).nftables;
  const chains = new Set(items.flatMap((i) => (i.chain ? [i.chain.name] : [])));
  const commands: Record<string, unknown>[] = items.flatMap((i) =>
    i.rule?.chain === BASE_CHAIN && i.rule.comment === n.comment
      ? [{
        delete: {
          rule: { family: FAMILY, table: TABLE, chain: BASE_CHAIN, handle: i.rule.handle },
        },
      }]
      : []
  );
  // The iface chain jumps to the mac chain, so it goes first.
  for (const name of [n.iface, n.mac]) {
    if (chains.has(name)) commands.push({ delete: chain(name) });
  }
  if (commands.length === 0) return;
  try {
    await apply(commands);
  } catch (e) {
    throw new CniError(
      ErrorCode.ioFailure,
      `failed to teardown spoof-check: ${(e as Error).message}`,
      e instanceof CniError ? e.details : "",
    );
  }
}
