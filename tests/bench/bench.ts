/**
 * ADD+DEL latency of cnikit against Debian's reference plugins, interleaved
 * in one run so machine noise hits both alike. Every plugin runs in a
 * throwaway namespace that plays the host; containers are fresh namespaces.
 *
 *   deno task bench [--rounds N] [--only loopback,ptp,...,"full chain"]
 *
 * Prints per scenario the median ADD, DEL and ADD+DEL of each implementation,
 * the ratio cnikit/reference, and the peak RSS of one ADD.
 * @module
 */

import { parseArgs } from "node:util";
import { withNetnsSync } from "../../lib/net/netns.ts";
import { TestNetns } from "../helpers/netns.ts";
import { type KernelFeature, probeKernel } from "../helpers/kernel_features.ts";
import { benchChain } from "./chain.ts";

const DIST = new URL("../../dist/bin", import.meta.url).pathname;
const REFERENCE = "/usr/lib/cni";

interface Impl {
  name: string;
  bin: string;
}
const IMPLS: Impl[] = [{ name: "cnikit", bin: DIST }, { name: "reference", bin: REFERENCE }];

interface Scenario {
  name: string;
  plugin: string;
  config: (dataDir: string, id: number) => Record<string, unknown>;
  /** Parallel attachments per measurement (1 = sequential ADD then DEL). */
  parallel?: number;
  /** Prepares the fake host once, before the first round (a master link). */
  setup?: (host: TestNetns) => Promise<void>;
  /** A kernel feature it needs: without it the scenario is left out, with a note. */
  needs?: KernelFeature;
}

/** A master for the interface plugins in the fake host: a veth up, its peer up. */
async function benchMaster(host: TestNetns): Promise<void> {
  await host.exec("ip", ["link", "add", "ckbm0", "type", "veth", "peer", "name", "ckbm1"]);
  await host.exec("ip", ["link", "set", "ckbm0", "up"]);
  await host.exec("ip", ["link", "set", "ckbm1", "up"]);
}

/** An interface plugin's config on the bench master with host-local. */
function onMaster(type: string, subnet: string, extra: Record<string, unknown> = {}) {
  return (dataDir: string) => ({
    cniVersion: "1.0.0",
    name: `bench-${type}`,
    type,
    master: "ckbm0",
    ...extra,
    ipam: { type: "host-local", subnet, dataDir },
  });
}

const SCENARIOS: Scenario[] = [
  {
    name: "loopback",
    plugin: "loopback",
    config: () => ({ cniVersion: "1.0.0", name: "bench-lo", type: "loopback" }),
  },
  {
    name: "host-local",
    plugin: "host-local",
    config: (dataDir) => ({
      cniVersion: "1.0.0",
      name: "bench-hl",
      type: "host-local",
      ipam: { type: "host-local", subnet: "10.77.0.0/16", dataDir },
    }),
  },
  {
    name: "ptp+host-local (ipMasq)",
    plugin: "ptp",
    config: (dataDir) => ({
      cniVersion: "1.0.0",
      name: "bench-ptp",
      type: "ptp",
      ipMasq: true,
      ipam: { type: "host-local", subnet: "10.78.0.0/16", dataDir, routes: [{ dst: "0.0.0.0/0" }] },
    }),
  },
  {
    name: "bridge+host-local (ipMasq)",
    plugin: "bridge",
    config: (dataDir) => ({
      cniVersion: "1.0.0",
      name: "bench-br",
      type: "bridge",
      bridge: "benchbr0",
      isGateway: true,
      ipMasq: true,
      ipam: { type: "host-local", subnet: "10.79.0.0/16", dataDir },
    }),
  },
  {
    name: "bridge 50 parallel ADD, then 50 DEL",
    plugin: "bridge",
    parallel: 50,
    config: (dataDir) => ({
      cniVersion: "1.0.0",
      name: "bench-br50",
      type: "bridge",
      bridge: "benchbr1",
      isGateway: true,
      ipMasq: true,
      ipam: { type: "host-local", subnet: "10.80.0.0/16", dataDir },
    }),
  },
  {
    name: "macvlan+host-local",
    plugin: "macvlan",
    setup: benchMaster,
    config: onMaster("macvlan", "10.81.0.0/16"),
  },
  {
    name: "macvlan 20 parallel ADD, then 20 DEL",
    plugin: "macvlan",
    parallel: 20,
    setup: benchMaster,
    config: onMaster("macvlan", "10.82.0.0/16"),
  },
  // In the second kernel where this one lacks them: scripts/uml_run.ts -- deno task bench.
  {
    name: "ipvlan+host-local",
    plugin: "ipvlan",
    needs: "ipvlan",
    setup: benchMaster,
    config: onMaster("ipvlan", "10.83.0.0/16"),
  },
  {
    name: "vlan+host-local",
    plugin: "vlan",
    needs: "vlan",
    setup: benchMaster,
    config: onMaster("vlan", "10.84.0.0/16", { vlanId: 100 }),
  },
];

function spawnIn(host: TestNetns, program: string, env: Record<string, string>): Deno.ChildProcess {
  return withNetnsSync(
    host.path,
    () =>
      new Deno.Command(program, {
        env,
        clearEnv: true,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn(),
  );
}

async function invoke(
  host: TestNetns,
  impl: Impl,
  plugin: string,
  env: Record<string, string>,
  conf: object,
) {
  const child = spawnIn(host, `${impl.bin}/${plugin}`, {
    ...env,
    CNI_PATH: impl.bin,
    PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
  });
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(JSON.stringify(conf)));
  await w.close();
  const out = await child.output();
  if (!out.success) {
    throw new Error(
      `${impl.name} ${plugin} ${env.CNI_COMMAND} failed: ${new TextDecoder().decode(out.stdout)}`,
    );
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
}

async function measure(scenario: Scenario, impl: Impl, host: TestNetns, round: number) {
  const dataDir = await Deno.makeTempDir({ prefix: "cnikit-bench-" });
  const n = scenario.parallel ?? 1;
  const containers = await Promise.all(Array.from({ length: n }, () => TestNetns.create("ckb")));
  const conf = scenario.config(dataDir, round);
  const envs = containers.map((c, i) => ({
    CNI_CONTAINERID: `bench-${round}-${i}`,
    CNI_NETNS: c.path,
    CNI_IFNAME: "eth0",
    CNI_ARGS: "",
  }));
  try {
    let t = performance.now();
    await Promise.all(
      envs.map((e) => invoke(host, impl, scenario.plugin, { ...e, CNI_COMMAND: "ADD" }, conf)),
    );
    const add = performance.now() - t;
    t = performance.now();
    await Promise.all(
      envs.map((e) => invoke(host, impl, scenario.plugin, { ...e, CNI_COMMAND: "DEL" }, conf)),
    );
    const del = performance.now() - t;
    return { add, del };
  } finally {
    await Promise.all(containers.map((c) => c.remove()));
    await Deno.remove(dataDir, { recursive: true });
  }
}

/** Peak RSS (KiB) of one ADD, read from the kernel's child rusage through python3. */
async function peakRss(
  scenario: Scenario,
  impl: Impl,
  host: TestNetns,
): Promise<number | undefined> {
  const dataDir = await Deno.makeTempDir({ prefix: "cnikit-bench-" });
  const ctr = await TestNetns.create("ckr");
  try {
    const env = {
      CNI_COMMAND: "ADD",
      CNI_CONTAINERID: "bench-rss",
      CNI_NETNS: ctr.path,
      CNI_IFNAME: "eth0",
      CNI_PATH: impl.bin,
      PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    };
    const script = "import resource,subprocess,sys\n" +
      "subprocess.run(sys.argv[1:],stdin=sys.stdin,stdout=subprocess.DEVNULL,stderr=subprocess.DEVNULL)\n" +
      "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)";
    const child = withNetnsSync(host.path, () =>
      new Deno.Command("python3", {
        args: ["-c", script, `${impl.bin}/${scenario.plugin}`],
        env,
        stdin: "piped",
        stdout: "piped",
        stderr: "null",
      }).spawn());
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(JSON.stringify(scenario.config(dataDir, 0))));
    await w.close();
    const out = await child.output();
    await invoke(
      host,
      impl,
      scenario.plugin,
      { ...env, CNI_COMMAND: "DEL" },
      scenario.config(dataDir, 0),
    );
    return Number(new TextDecoder().decode(out.stdout).trim()) || undefined;
  } catch {
    return undefined;
  } finally {
    await ctr.remove();
    await Deno.remove(dataDir, { recursive: true });
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: Deno.args,
    options: { rounds: { type: "string", default: "15" }, only: { type: "string" } },
  });
  const rounds = Number(values.rounds);
  const only = values.only?.split(",");
  const host = await TestNetns.create("ckbh");
  try {
    console.log(
      `cnikit bench: ${rounds} rounds, interleaved, medians in ms (build: ${await buildKind()})\n`,
    );
    console.log("| scenario | impl | ADD | DEL | ADD+DEL | ratio | peak RSS |");
    console.log("|---|---|---:|---:|---:|---:|---:|");
    const prepared = new Set<(host: TestNetns) => Promise<void>>();
    for (const scenario of SCENARIOS) {
      if (only && !only.some((o) => scenario.name.startsWith(o))) continue;
      if (scenario.needs && !(await probeKernel([scenario.needs]))[scenario.needs]) {
        console.log(`| ${scenario.name} | (this kernel lacks ${scenario.needs}) | | | | | |`);
        continue;
      }
      if (scenario.setup && !prepared.has(scenario.setup)) {
        await scenario.setup(host);
        prepared.add(scenario.setup);
      }
      const samples = new Map<string, { add: number[]; del: number[]; total: number[] }>();
      for (const impl of IMPLS) samples.set(impl.name, { add: [], del: [], total: [] });
      for (let round = 0; round < rounds; round++) {
        for (const impl of round % 2 ? [...IMPLS].reverse() : IMPLS) {
          const { add, del } = await measure(scenario, impl, host, round);
          const s = samples.get(impl.name)!;
          s.add.push(add);
          s.del.push(del);
          s.total.push(add + del);
        }
      }
      const reference = median(samples.get("reference")!.total);
      for (const impl of IMPLS) {
        const s = samples.get(impl.name)!;
        const rss = await peakRss(scenario, impl, host);
        console.log(
          `| ${scenario.name} | ${impl.name} | ${median(s.add).toFixed(1)} | ${
            median(s.del).toFixed(1)
          } | ${median(s.total).toFixed(1)} | ${(median(s.total) / reference).toFixed(2)}× | ${
            rss ? `${(rss / 1024).toFixed(1)} MiB` : "n/a"
          } |`,
        );
      }
    }
    // The chain needs Go's libcni for the reference, so it has its own module.
    if (!only || only.some((o) => "full chain".startsWith(o))) await benchChain(rounds);
  } finally {
    await host.remove();
  }
}

async function buildKind(): Promise<string> {
  try {
    const info = JSON.parse(
      await Deno.readTextFile(new URL("../../dist/build-info.json", import.meta.url)),
    );
    return info.kind;
  } catch {
    return "unknown";
  }
}

await main();
