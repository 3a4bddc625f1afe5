/**
 * How many processes one ADD+DEL of the full chain starts (bridge+host-local
 * → portmap → firewall → tuning → bandwidth, as tests/bench/chain.ts runs
 * it), each of the three ways, counted with strace: every successful execve
 * under the process the way starts, that process itself left out. Process
 * starts are the cost cnikit's design batches away; this shows where they
 * are. Needs strace. Not a test: run by hand.
 *
 *   deno run -A tests/bench/spawns.ts
 * @module
 */

import { chainConf, WAYS, type Wrap } from "./chain.ts";
import { TestNetns } from "../helpers/netns.ts";

/** The programs a strace log shows started, by base name, the traced program left out. */
function startedPrograms(log: string): Map<string, number> {
  const counts = new Map<string, number>();
  const started = log.split("\n").filter((line) => /\bexecve\("[^"]+",.*\) = 0$/.test(line));
  for (const line of started.slice(1)) {
    const program = line.match(/execve\("([^"]+)"/)![1]!.split("/").pop()!;
    counts.set(program, (counts.get(program) ?? 0) + 1);
  }
  return counts;
}

async function main(): Promise<void> {
  const host = await TestNetns.create("cksp");
  const dir = await Deno.makeTempDir({ prefix: "cnikit-spawns-" });
  try {
    console.log("| full chain, one ADD+DEL | processes started | by program |");
    console.log("|---|---:|---|");
    for (const [i, way] of WAYS.entries()) {
      const wayDir = `${dir}/${i}`;
      await Deno.mkdir(wayDir);
      await Deno.writeTextFile(
        `${wayDir}/bench-chain.conflist`,
        JSON.stringify(chainConf(wayDir, `benchsp${i}`, `10.${85 + i}.0.0/16`)),
      );
      const logs: string[] = [];
      const traced: Wrap = (program, args) => {
        const log = `${wayDir}/strace-${logs.length}`;
        logs.push(log);
        return ["strace", [
          "-f",
          "-qq",
          "-e",
          "trace=execve",
          "-e",
          "signal=none",
          "-o",
          log,
          program,
          ...args,
        ]];
      };
      const ctr = await TestNetns.create("cksx");
      try {
        await way.run(host, ctr, wayDir, `spawns-${i}`, traced);
      } finally {
        await ctr.remove();
      }
      const total = new Map<string, number>();
      for (const log of logs) {
        for (const [program, n] of startedPrograms(await Deno.readTextFile(log))) {
          total.set(program, (total.get(program) ?? 0) + n);
        }
      }
      const sum = [...total.values()].reduce((a, b) => a + b, 0);
      const by = [...total].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
        .map(([program, n]) => `${program} ${n}`).join(", ");
      console.log(`| ${way.name} | ${sum} | ${by} |`);
    }
  } finally {
    await host.remove();
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
