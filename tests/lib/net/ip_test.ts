import { assert, assertEquals, assertMatch } from "../../helpers/assert.ts";
import { canNetns, type TestNetns, withNamespaces } from "../../helpers/netns.ts";
import { ipBatch, IpBatchError, type LinkInfo } from "../../../lib/net/ip.ts";
import { deleteLink } from "../../../lib/net/link.ts";
import { closeLibc } from "../../../lib/net/libc.ts";
import { CniError } from "../../../lib/cni/errors.ts";

/**
 * Names that iproute2's batch reader would misread if written naively: it
 * has no escapes, cuts a line at `#`, ends a quoted word at the same quote
 * and joins a line ending in a backslash with the next. Each sits beside a
 * link with the name a misreading would make of it.
 */
const ODD = ["e\\0", "e#0", 'e"0', "e'0", "'e0", '"e0', "e\\", `"e'`, "#"];

async function names(ns: TestNetns): Promise<string[]> {
  return (await ns.ipJson<LinkInfo[]>("link", "show")).map((l) => l.ifname).sort();
}

function inNs<T>(fn: (ns: TestNetns) => Promise<T>): () => Promise<void> {
  return () =>
    withNamespaces(1, async (_host, ns) => {
      try {
        await fn(ns);
      } finally {
        closeLibc();
      }
    });
}

Deno.test({
  name: "ipBatch() passes every name to the kernel exactly, however a batch line would read it",
  ignore: !canNetns,
  fn: inNs(async (ns) => {
    await ipBatch([["link", "add", "e", "type", "bridge"]], { netns: ns.path });
    for (const name of ODD) {
      await ipBatch([
        ["link", "add", "name", name, "type", "bridge"],
        ["link", "set", "dev", name, "up"],
      ], { netns: ns.path });
    }
    assertEquals(await names(ns), ["e", "lo", ...ODD].sort());
    const [shown] = await ipBatch([["link", "show", "dev", "e#0"]], { netns: ns.path });
    assertEquals((shown as LinkInfo[]).map((l) => [l.ifname, l.flags.includes("UP")]), [
      ["e#0", true],
    ]);
  }),
});

Deno.test({
  name: "ipBatch() one command at a time keeps the batch's order, force and failing line number",
  ignore: !canNetns,
  fn: inNs(async (ns) => {
    const commands = [
      ["link", "add", "a#1", "type", "bridge"],
      ["link", "del", "dev", "nosuch"],
      ["link", "add", "a#2", "type", "bridge"],
      ["link", "show", "dev", "a#2"],
    ];
    const stopped = await ipBatch(commands, { netns: ns.path }).catch((e) => e);
    assert(stopped instanceof IpBatchError, String(stopped));
    assertEquals(stopped.line, 2);
    assertEquals(stopped.code, 5);
    assertMatch(stopped.message, /Cannot find device "nosuch"\nCommand failed -:2/);
    assertEquals(await names(ns), ["a#1", "lo"]);
    await ipBatch([["link", "del", "dev", "a#1"]], { netns: ns.path });
    const forced = await ipBatch(commands, { netns: ns.path, force: true }).catch((e) => e);
    assert(forced instanceof IpBatchError);
    assertEquals(forced.line, 2);
    assertEquals((forced.outputs[0] as LinkInfo[])[0]!.ifname, "a#2");
    assertEquals(await names(ns), ["a#1", "a#2", "lo"]);
  }),
});

Deno.test({
  name:
    "deleteLink() removes exactly the named link, says false when it is not there, fails when it stays",
  ignore: !canNetns,
  fn: inNs(async (ns) => {
    await ipBatch(
      ["e", ...ODD].map((name) => ["link", "add", "name", name, "type", "bridge"]),
      { netns: ns.path },
    );
    for (const name of ODD) assertEquals(await deleteLink(name, ns.path), true, name);
    assertEquals(await names(ns), ["e", "lo"]);
    assertEquals(await deleteLink("e#0", ns.path), false);
    assertEquals(await deleteLink("e", "/run/netns/cnikit-absent-ns"), false);
    // The kernel refuses to delete lo: an error, never a reported success.
    const refused = await deleteLink("lo", ns.path).catch((e) => e);
    assert(refused instanceof CniError && refused.code === 5, String(refused));
    assertMatch(refused.message, /failed to delete "lo"/);
  }),
});
