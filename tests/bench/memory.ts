/**
 * Peak memory of one ADD of each plugin against an empty script started the
 * same way (the launcher's own `#!` line) and against Debian's reference
 * plugin. Every plugin runs in a throwaway namespace that plays the host;
 * each ADD is followed by its DEL (not measured), so every round starts
 * from the same state. Rounds are interleaved (a small python3 driver) so
 * machine noise hits all alike. Peak RSS is GNU time's (wait4(2) of the
 * plugin it forks): a child forked by python itself would report at least
 * python's own RSS, since a process's peak counts its parent's pages until
 * it execs.
 *
 *   deno run -A tests/bench/memory.ts [--rounds N] [--only loopback,ptp]
 *     [--bin label=dir ...]
 *
 * `--bin` (repeatable) measures other builds side by side (default: cnikit
 * = dist/bin); the reference (/usr/lib/cni) is always measured. Prints the
 * median peak RSS of each ADD and how far it is above the empty script.
 * @module
 */

import { parseArgs } from "node:util";
import { closeLibc } from "../../lib/net/libc.ts";
import { withNetnsSync } from "../../lib/net/netns.ts";
import { TestNetns } from "../helpers/netns.ts";

const DIST = new URL("../../dist/bin", import.meta.url).pathname;
const REFERENCE = "/usr/lib/cni";

/** The plugins measured and their config (dataDir is a fresh temp dir). */
const PLUGINS: Record<string, (dataDir: string) => Record<string, unknown>> = {
  loopback: () => ({ cniVersion: "1.0.0", name: "mem-lo", type: "loopback" }),
  "host-local": (dataDir) => ({
    cniVersion: "1.0.0",
    name: "mem-hl",
    type: "host-local",
    ipam: { type: "host-local", subnet: "10.77.0.0/16", dataDir },
  }),
  ptp: (dataDir) => ({
    cniVersion: "1.0.0",
    name: "mem-ptp",
    type: "ptp",
    ipMasq: true,
    ipam: { type: "host-local", subnet: "10.78.0.0/16", dataDir, routes: [{ dst: "0.0.0.0/0" }] },
  }),
  bridge: (dataDir) => ({
    cniVersion: "1.0.0",
    name: "mem-br",
    type: "bridge",
    bridge: "membr0",
    isGateway: true,
    ipMasq: true,
    ipam: { type: "host-local", subnet: "10.79.0.0/16", dataDir },
  }),
};

/** One process to measure, and the DEL that undoes it (none for the empty script). */
interface Target {
  name: string;
  argv: string[];
  env: Record<string, string>;
  stdin: string;
  undo?: { argv: string[]; env: Record<string, string> };
}

/**
 * Runs every target `rounds` times, interleaved, each followed by its undo;
 * prints {name: [{rss KiB, status}]}. An undo that fails stops the run: the
 * next ADD would measure a different path.
 */
const DRIVER = `
import json, os, subprocess, sys
job = json.load(sys.stdin)
out = {t["name"]: [] for t in job["targets"]}
rss_file = job["rssFile"]
def run(argv, env, data, measured=False):
    if measured:
        argv = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + argv
    p = subprocess.run(argv, env=env, input=data.encode(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p.returncode, int(open(rss_file).read().split()[-1]) if measured else 0
for r in range(job["rounds"]):
    k = r % len(job["targets"])
    for t in job["targets"][k:] + job["targets"][:k]:
        status, rss = run(t["argv"], t["env"], t["stdin"], True)
        out[t["name"]].append({"rss": rss, "status": status})
        u = t.get("undo")
        if u and run(u["argv"], u["env"], t["stdin"])[0] != 0:
            sys.exit("DEL of " + t["name"] + " failed")
json.dump(out, sys.stdout)
`;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
}

/** The launcher's `#!` line, or undefined for a compiled binary. */
async function shebang(bin: string): Promise<string | undefined> {
  const head = new TextDecoder().decode((await Deno.readFile(`${bin}/cnikit`)).subarray(0, 4096));
  return head.startsWith("#!") ? head.slice(0, head.indexOf("\n") + 1) : undefined;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      rounds: { type: "string", default: "9" },
      only: { type: "string" },
      bin: { type: "string", multiple: true },
    },
  });
  const rounds = Number(values.rounds);
  const plugins = Object.keys(PLUGINS).filter((p) => !values.only || values.only.includes(p));
  const bins = (values.bin ?? [`cnikit=${DIST}`]).map((b) => {
    const i = b.indexOf("=");
    return { label: b.slice(0, i), dir: b.slice(i + 1) };
  });
  const dir = await Deno.makeTempDir({ prefix: "cnikit-memory-" });
  const namespaces: TestNetns[] = [];
  try {
    const host = await TestNetns.create("ckmh");
    namespaces.push(host);
    const path = "/usr/sbin:/usr/bin:/sbin:/bin";
    const targets: Target[] = [];
    const emptyLines = new Set<string>();
    for (const { label, dir: bin } of [...bins, { label: "reference", dir: REFERENCE }]) {
      const line = label === "reference" ? undefined : await shebang(bin);
      if (line && !emptyLines.has(line)) {
        // The empty script starts exactly as this build's launcher does.
        emptyLines.add(line);
        const empty = `${dir}/empty-${emptyLines.size}`;
        await Deno.writeTextFile(empty, line);
        await Deno.chmod(empty, 0o755);
        targets.push({
          name: `${label}: (empty script)`,
          argv: [empty],
          env: { PATH: path },
          stdin: "",
        });
      }
      for (const plugin of plugins) {
        const ctr = await TestNetns.create("ckmc");
        namespaces.push(ctr);
        const dataDir = await Deno.makeTempDir({ dir, prefix: "data-" });
        const env = {
          CNI_COMMAND: "ADD",
          CNI_CONTAINERID: "mem",
          CNI_NETNS: ctr.path,
          CNI_IFNAME: "eth0",
          CNI_PATH: bin,
          PATH: path,
        };
        targets.push({
          name: `${label}: ${plugin}`,
          argv: [`${bin}/${plugin}`],
          env,
          stdin: JSON.stringify(PLUGINS[plugin]!(dataDir)),
          undo: { argv: [`${bin}/${plugin}`], env: { ...env, CNI_COMMAND: "DEL" } },
        });
      }
    }
    const child = withNetnsSync(host.path, () =>
      new Deno.Command("python3", {
        args: ["-c", DRIVER],
        stdin: "piped",
        stdout: "piped",
      }).spawn());
    const w = child.stdin.getWriter();
    await w.write(
      new TextEncoder().encode(JSON.stringify({ targets, rounds, rssFile: `${dir}/rss` })),
    );
    await w.close();
    const out = await child.output();
    if (!out.success) throw new Error("the python3 driver failed");
    const samples: Record<string, { rss: number; status: number }[]> = JSON.parse(
      new TextDecoder().decode(out.stdout),
    );
    console.log(`peak RSS of one ADD (MiB), medians of ${rounds} rounds\n`);
    for (const line of emptyLines) console.log(line.trim());
    console.log("\n| process | peak RSS MiB | min–max | over empty script |");
    console.log("| --- | ---: | ---: | ---: |");
    let base = NaN;
    for (const t of targets) {
      const s = samples[t.name]!;
      const failed = s.filter((x) => x.status !== 0).length;
      const rss = s.map((x) => x.rss / 1024);
      const m = median(rss);
      if (t.name.endsWith("(empty script)")) base = m;
      console.log(
        `| ${t.name}${failed ? ` (${failed} failed)` : ""} | ${m.toFixed(1)} | ${
          Math.min(...rss).toFixed(1)
        }–${Math.max(...rss).toFixed(1)} | ${
          t.name.startsWith("reference")
            ? ""
            : `${m - base >= 0 ? "+" : ""}${(m - base).toFixed(1)}`
        } |`,
      );
    }
  } finally {
    await Promise.all(namespaces.map((ns) => ns.remove()));
    await Deno.remove(dir, { recursive: true });
    closeLibc();
  }
}

if (import.meta.main) await main();
