/**
 * The netfilter runners against a real kernel, inside a namespace: what
 * iptables.ts plans matches what iptables-save prints, `-N` never flushes a
 * chain that exists, a plan that loses a race is re-planned, and names and
 * comments with `#`, quotes and spaces survive nft's JSON both ways.
 * @module
 */

import { assert, assertEquals } from "../../helpers/assert.ts";
import { evalInNetns } from "../../helpers/in_netns.ts";
import { canNetns, TestNetns, withNamespaces } from "../../helpers/netns.ts";
import { savedLine } from "../../../lib/netfilter/iptables.ts";

const IPT = `import {
  appendRule, comment, insertRule, saveTable, updateTable,
} from "@/lib/netfilter/iptables.ts";`;

Deno.test("savedLine prints a rule as iptables-save does: comments quoted, the rest raw", () => {
  assertEquals(
    savedLine("CNI-X", ["-i", "br#x", "-m", "comment", "--comment", 'a "q" \\ b', "-j", "ACCEPT"]),
    '-A CNI-X -i br#x -m comment --comment "a \\"q\\" \\\\ b" -j ACCEPT',
  );
});

Deno.test({
  name: "iptables runner: planned lines are what iptables-save prints back, in both families",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(0, async (host) => {
      const result = await evalInNetns<boolean[]>(
        host,
        IPT,
        `
        const rules = [
          ["-i", "br#x", ...comment('name: "net" id: "c1"'), "-j", "ACCEPT"],
          ["-s", "10.0.0.0/24", "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "DROP"],
        ];
        const out = [];
        for (const family of [4, 6]) {
          const spec = family === 4 ? rules : [rules[0]];
          await updateTable(family, "filter", (saved) => [
            ...(saved.hasChain("T") ? [] : ["-N T"]),
            ...spec.map((r) => appendRule("T", r)),
            insertRule("FORWARD", ["-j", "T"]),
          ]);
          const saved = await saveTable(family, "filter");
          out.push(...spec.map((r) => saved.has("T", r)), saved.has("FORWARD", ["-j", "T"]));
        }
        return out;
        `,
      );
      assertEquals(result, [true, true, true, true, true]);
    }),
});

Deno.test({
  name: "iptables runner: -N leaves an existing chain alone, and a lost race is planned again",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(0, async (host) => {
      const result = await evalInNetns<{ plans: number; rules: string[] }>(
        host,
        IPT,
        `
        await updateTable(4, "nat", () => ["-N SHARED", appendRule("SHARED", ["-j", "RETURN"])]);
        let plans = 0;
        await updateTable(4, "nat", (saved) => {
          plans++;
          // Another writer creates the chain between this read and the restore.
          if (plans === 1) {
            new Deno.Command("iptables", { args: ["-t", "nat", "-N", "RACED"] }).outputSync();
          }
          return [
            ...(saved.hasChain("RACED") ? [] : ["-N RACED"]),
            ...(saved.hasChain("SHARED") ? [] : ["-N SHARED"]),
            appendRule("RACED", ["-j", "RETURN"]),
          ];
        });
        const saved = await saveTable(4, "nat");
        return { plans, rules: [...saved.rulesOf("SHARED"), ...saved.rulesOf("RACED")] };
        `,
      );
      assertEquals(result, {
        plans: 2,
        rules: ["-A SHARED -j RETURN", "-A RACED -j RETURN"],
      });
    }),
});

Deno.test({
  name: "nft runner: names and comments with #, quotes, ; and spaces survive, both ways",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(0, async (host) => {
      const weird = 'rp#br"x;y z';
      const result = await evalInNetns<{ before: unknown; chains: string[]; rule: unknown }>(
        host,
        `import { expr, listTable, nftApply, NftTx } from "@/lib/netfilter/nftables.ts";`,
        `
        const before = await listTable("inet", "cnikit_test");
        const tx = new NftTx("inet", "cnikit_test");
        await nftApply([
          tx.addTable(),
          tx.addChain(${JSON.stringify(weird)}),
          tx.addRule(${JSON.stringify(weird)}, [
            expr.match(expr.meta("iifname"), ${JSON.stringify(weird)}),
            expr.accept(),
          ], 'comment with "quotes" and #hash'),
        ]);
        const table = await listTable("inet", "cnikit_test");
        const [rule] = table.rulesOf(${JSON.stringify(weird)});
        return { before: before ?? null, chains: [...table.chains.keys()], rule: { comment: rule.comment, expr: rule.expr } };
        `,
      );
      assertEquals(result.before, null);
      assertEquals(result.chains, [weird]);
      assertEquals(result.rule, {
        comment: 'comment with "quotes" and #hash',
        expr: [
          { match: { op: "==", left: { meta: { key: "iifname" } }, right: weird } },
          { accept: null },
        ],
      });
    }),
});

Deno.test({
  name: "detect: iptables and nft are usable in a namespace of our own; the default is iptables",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(0, async (host) => {
      const result = await evalInNetns<unknown[]>(
        host,
        `import { defaultBackend, iptablesUsable, nftUsable } from "@/lib/netfilter/detect.ts";`,
        `return [await iptablesUsable(4), await iptablesUsable(6), await nftUsable(), await defaultBackend()];`,
      );
      assertEquals(result, [true, true, true, "iptables"]);
      // The probe leaves nothing behind: nft --check commits nothing.
      const ruleset = await host.exec("nft", ["list", "ruleset"]);
      assert(!ruleset.includes("cnikit_probe"), ruleset);
    }),
});

Deno.test({
  name: "detect: without CAP_NET_ADMIN neither tool is usable, whatever is installed",
  ignore: !canNetns,
  fn: async () => {
    const ns = await TestNetns.create("ckd");
    try {
      const code = `
        import { defaultBackend, iptablesUsable, nftUsable } from "${
        new URL("../../../lib/netfilter/detect.ts", import.meta.url).href
      }";
        console.log(JSON.stringify([await iptablesUsable(4), await nftUsable(), await defaultBackend()]));`;
      // setpriv drops every capability: the tools run but the kernel refuses them.
      const out = await new Deno.Command("ip", {
        args: [
          "netns",
          "exec",
          ns.name,
          "setpriv",
          "--inh-caps=-all",
          "--bounding-set=-all",
          Deno.execPath(),
          "eval",
          "--ext=ts",
          code,
        ],
      }).output();
      const text = new TextDecoder().decode(out.stdout).trim();
      assertEquals(JSON.parse(text.split("\n").at(-1)!), [false, false, "iptables"]);
    } finally {
      await ns.remove();
    }
  },
});

Deno.test({
  name: "detect: iptables that cannot talk to the kernel makes nftables the default",
  ignore: !canNetns,
  fn: () =>
    withNamespaces(0, async (host) => {
      const bin = await Deno.makeTempDir({ prefix: "cnikit-fakebin-" });
      try {
        // An iptables-save that runs but fails, as one without kernel support does.
        await Deno.writeTextFile(
          `${bin}/iptables-save`,
          "#!/bin/sh\necho 'iptables v1.8.9 (legacy): cannot initialize' >&2\nexit 3\n",
        );
        await Deno.chmod(`${bin}/iptables-save`, 0o755);
        const result = await evalInNetns<unknown[]>(
          host,
          `import { defaultBackend, iptablesUsable } from "@/lib/netfilter/detect.ts";`,
          `Deno.env.set("PATH", ${JSON.stringify(bin)} + ":" + Deno.env.get("PATH"));
          return [await iptablesUsable(4), await defaultBackend()];`,
        );
        assertEquals(result, [false, "nftables"]);
      } finally {
        await Deno.remove(bin, { recursive: true });
      }
    }),
});
