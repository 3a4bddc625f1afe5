import { assertEquals } from "../helpers/assert.ts";
import { canNetns, sh, type TestNetns, withNamespaces } from "../helpers/netns.ts";

const MASQ = new URL("../../agent/node_masq.ts", import.meta.url).href;
const IPNET = new URL("../../lib/cni/ipnet.ts", import.meta.url).href;
const NAME = "CNIKIT-AGENT-MASQ";
const COMMENT = "cnikit agent: test";

/** Calls setupNodeMasq (source subnet, nftables or iptables) or teardownNodeMasq inside `host`. */
async function inHost(host: TestNetns, call: "setup" | "teardown", source = "", backend = "") {
  const code = `
    import { setupNodeMasq, teardownNodeMasq } from "${MASQ}";
    import { parseCIDR } from "${IPNET}";
    if (${JSON.stringify(call)} === "teardown") await teardownNodeMasq(${JSON.stringify(NAME)});
    else await setupNodeMasq({
      name: ${JSON.stringify(NAME)},
      source: parseCIDR(${JSON.stringify(source)}),
      exclude: [parseCIDR("10.244.0.0/16")],
      comment: ${JSON.stringify(COMMENT)},
    }, ${JSON.stringify(backend)});`;
  await sh("ip", ["netns", "exec", host.name, Deno.execPath(), "eval", "--no-lock", code]);
}

async function iptablesLines(host: TestNetns): Promise<string[]> {
  const saved = await sh("ip", ["netns", "exec", host.name, "iptables-save", "-t", "nat"]);
  return saved.split("\n").filter((l) => l.includes(NAME));
}

async function nftRules(host: TestNetns): Promise<string[]> {
  const listed = await sh("ip", ["netns", "exec", host.name, "nft", "list", "ruleset"]);
  return listed.split("\n").map((l) => l.trim()).filter((l) =>
    / masquerade /.test(l) || /^table /.test(l)
  );
}

const comment = `-m comment --comment "${COMMENT}"`;

Deno.test({
  name:
    "setupNodeMasq() (iptables): pods' traffic leaving the cluster CIDR; a new subnet replaces the old jump; teardown",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(0, async (host) => {
      await inHost(host, "setup", "10.244.1.0/24", "iptables");
      const chain = [
        `:${NAME} - [0:0]`,
        `-A POSTROUTING -s 10.244.1.0/24 ${comment} -j ${NAME}`,
        `-A ${NAME} -d 10.244.0.0/16 ${comment} -j RETURN`,
        `-A ${NAME} -d 224.0.0.0/4 ${comment} -j RETURN`,
        `-A ${NAME} ${comment} -j MASQUERADE`,
      ];
      assertEquals(await iptablesLines(host), chain);
      // Again: nothing doubled.
      await inHost(host, "setup", "10.244.1.0/24", "iptables");
      assertEquals(await iptablesLines(host), chain);
      await inHost(host, "setup", "10.244.2.0/24", "iptables");
      assertEquals(
        await iptablesLines(host),
        chain.map((l) => l.replace("10.244.1.0", "10.244.2.0")),
      );
      await inHost(host, "teardown");
      assertEquals(await iptablesLines(host), []);
    }),
});

Deno.test({
  name: "setupNodeMasq() (nftables): one table, rewritten whole; teardown removes it",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(0, async (host) => {
      const rule = (subnet: string) =>
        `ip saddr ${subnet} ip daddr != { 10.244.0.0/16, 224.0.0.0/4 } masquerade comment "${COMMENT}"`;
      await inHost(host, "setup", "10.244.1.0/24", "nftables");
      assertEquals(await nftRules(host), [`table ip ${NAME} {`, rule("10.244.1.0/24")]);
      await inHost(host, "setup", "10.244.2.0/24", "nftables");
      assertEquals(await nftRules(host), [`table ip ${NAME} {`, rule("10.244.2.0/24")]);
      await inHost(host, "teardown");
      assertEquals(await nftRules(host), []);
    }),
});
