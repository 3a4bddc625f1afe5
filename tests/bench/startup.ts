/**
 * Start-up cost of every applet: its VERSION call against an empty script
 * started the same way (the launcher's own `#!` line, or `deno run` with
 * the same flags), interleaved round by round so machine noise hits all
 * alike. Wall time, CPU time (user+sys) and peak RSS of each process come
 * from wait4(2), through a small python3 driver, so the measuring process
 * adds nothing to what is measured.
 *
 *   deno run -A tests/bench/startup.ts [--rounds N] [--only bridge,ptp]
 *
 * Prints medians and the ratio of each applet to the empty script.
 * @module
 */

import { parseArgs } from "node:util";
import { APPLET_NAMES, TOOLS } from "../../applets.ts";

const DIST = new URL("../../dist/bin", import.meta.url).pathname;

/** One process to start: argv and its whole environment. */
interface Target {
  name: string;
  argv: string[];
  env: Record<string, string>;
}

interface Sample {
  wall: number;
  cpu: number;
  rss: number;
  status: number;
}

const DRIVER = `
import json, os, subprocess, sys, time
job = json.load(sys.stdin)
out = {t["name"]: [] for t in job["targets"]}
for r in range(job["rounds"]):
    targets = job["targets"][r % len(job["targets"]):] + job["targets"][:r % len(job["targets"])]
    for t in targets:
        t0 = time.perf_counter()
        p = subprocess.Popen(t["argv"], env=t["env"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = status
        out[t["name"]].append({"wall": wall * 1000, "cpu": (ru.ru_utime + ru.ru_stime) * 1000,
                               "rss": ru.ru_maxrss, "status": status})
json.dump(out, sys.stdout)
`;

/** Runs every target `rounds` times, interleaved; samples by target name. */
async function measure(
  targets: Target[],
  rounds: number,
): Promise<Record<string, Sample[]>> {
  const child = new Deno.Command("python3", {
    args: ["-c", DRIVER],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(JSON.stringify({ targets, rounds })));
  await w.close();
  const out = await child.output();
  if (!out.success) throw new Error("the python3 driver failed");
  return JSON.parse(new TextDecoder().decode(out.stdout));
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
}

/** The launcher's `#!` line, or undefined for a compiled binary. */
async function shebang(): Promise<string | undefined> {
  const head = new TextDecoder().decode((await Deno.readFile(`${DIST}/cnikit`)).subarray(0, 4096));
  return head.startsWith("#!") ? head.slice(0, head.indexOf("\n") + 1) : undefined;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { rounds: { type: "string", default: "30" }, only: { type: "string" } },
  });
  const rounds = Number(values.rounds);
  const tools = new Set(TOOLS.map((t) => t.name));
  const only = values.only?.split(",");
  const applets = APPLET_NAMES.filter((n) => !tools.has(n) && (!only || only.includes(n)));
  const line = await shebang();
  if (!line) {
    console.log("dist/bin/cnikit is a compiled binary: there is no launcher line to compare with");
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "cnikit-startup-" });
  try {
    // The empty script starts exactly as the launcher does: same #! line.
    const empty = `${dir}/empty`;
    await Deno.writeTextFile(empty, line);
    await Deno.chmod(empty, 0o755);
    const env = { PATH: "/usr/sbin:/usr/bin:/sbin:/bin", CNI_COMMAND: "VERSION" };
    const targets: Target[] = [
      { name: "(empty script)", argv: [empty], env },
      ...applets.map((name) => ({ name, argv: [`${DIST}/${name}`], env })),
    ];
    const samples = await measure(targets, rounds);
    const base = samples["(empty script)"]!;
    const [baseWall, baseCpu, baseRss] = [
      median(base.map((s) => s.wall)),
      median(base.map((s) => s.cpu)),
      median(base.map((s) => s.rss)),
    ];
    console.log(`${line.trim()}\n${rounds} rounds, medians\n`);
    console.log("| VERSION of | wall ms | ratio | CPU ms | ratio | peak RSS MiB | over empty |");
    console.log("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (const t of targets) {
      const s = samples[t.name]!;
      const failed = s.filter((x) => x.status !== 0).length;
      const [wall, cpu, rss] = [
        median(s.map((x) => x.wall)),
        median(s.map((x) => x.cpu)),
        median(s.map((x) => x.rss)),
      ];
      console.log(
        `| ${t.name}${failed ? ` (${failed} failed)` : ""} | ${wall.toFixed(1)} | ${
          (wall / baseWall).toFixed(2)
        }× | ${cpu.toFixed(1)} | ${(cpu / baseCpu).toFixed(2)}× | ${(rss / 1024).toFixed(1)} | ${
          ((rss - baseRss) / 1024).toFixed(1)
        } |`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) await main();
