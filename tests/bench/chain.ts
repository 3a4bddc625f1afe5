/**
 * The full chain bridge+host-local → portmap (one mapping) → firewall →
 * tuning → bandwidth, ADD then DEL, three ways, interleaved round by round:
 * cnikit through its cnitool (every plugin in one process), cnikit through
 * Go's libcni (one process per plugin, as runtimes run plugins), and the
 * reference plugins through Go's libcni. libcni runs in tests/go/cnidriver,
 * which times the ADD and the DEL inside its own process (what a runtime,
 * a long-running process, waits for); cnitool is timed as a whole process,
 * its own start-up included.
 * @module
 */

import { withNetnsSync } from "../../lib/net/netns.ts";
import { driverPath } from "../helpers/golibcni.ts";
import { TestNetns } from "../helpers/netns.ts";

const DIST = new URL("../../dist/bin", import.meta.url).pathname;
const REFERENCE = "/usr/lib/cni";

/** The list (spec 1.0.0: Debian's libcni and reference plugins know no newer), state under `dir`. */
export function chainConf(dir: string, bridge: string, subnet: string): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name: "bench-chain",
    plugins: [
      {
        type: "bridge",
        bridge,
        isGateway: true,
        ipMasq: true,
        ipam: {
          type: "host-local",
          subnet,
          dataDir: `${dir}/ipam`,
          routes: [{ dst: "0.0.0.0/0" }],
        },
      },
      { type: "portmap", capabilities: { portMappings: true } },
      { type: "firewall" },
      {
        type: "tuning",
        dataDir: `${dir}/tuning`,
        sysctl: { "net.ipv4.conf.IFNAME.arp_filter": "1" },
      },
      { type: "bandwidth", capabilities: { bandwidth: true } },
    ],
  };
}

const CAPABILITIES = {
  portMappings: [{ hostPort: 18080, containerPort: 80, protocol: "tcp" }],
  bandwidth: {
    ingressRate: 100_000_000,
    ingressBurst: 1_000_000,
    egressRate: 100_000_000,
    egressBurst: 1_000_000,
  },
};

/**
 * How a way starts its process: as it is, or under another program (strace,
 * to count the processes a chain starts: tests/bench/spawns.ts).
 */
export type Wrap = (program: string, args: string[]) => [string, string[]];

const direct: Wrap = (program, args) => [program, args];

interface Way {
  name: string;
  /** ADD then DEL of one attachment; their times in ms. */
  run(
    host: TestNetns,
    ctr: TestNetns,
    dir: string,
    id: string,
    wrap?: Wrap,
  ): Promise<{ add: number; del: number }>;
}

async function spawnIn(
  host: TestNetns,
  [program, args]: [string, string[]],
  env: Record<string, string>,
): Promise<string> {
  const child = withNetnsSync(
    host.path,
    () => new Deno.Command(program, { args, env, stdout: "piped", stderr: "piped" }).spawn(),
  );
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(`${program} ${args.join(" ")}: ${text}${new TextDecoder().decode(out.stderr)}`);
  }
  return text;
}

function cnitool(): Way {
  return {
    name: "cnikit, cnitool",
    async run(host, ctr, dir, _id, wrap = direct) {
      const env = {
        NETCONFPATH: dir,
        CNI_PATH: DIST,
        CNI_CACHE_DIR: `${dir}/cache`,
        CAP_ARGS: JSON.stringify(CAPABILITIES),
      };
      let t = performance.now();
      await spawnIn(host, wrap(`${DIST}/cnitool`, ["add", "bench-chain", ctr.path]), env);
      const add = performance.now() - t;
      t = performance.now();
      await spawnIn(host, wrap(`${DIST}/cnitool`, ["del", "bench-chain", ctr.path]), env);
      return { add, del: performance.now() - t };
    },
  };
}

function libcni(name: string, bin: string): Way {
  return {
    name,
    async run(host, ctr, dir, id, wrap = direct) {
      const out = await spawnIn(
        host,
        wrap(await driverPath(), [
          ...["-conflist", `${dir}/bench-chain.conflist`, "-cache", `${dir}/cache`, "-path", bin],
          ...["-netns", ctr.path, "-id", id, "-cap", JSON.stringify(CAPABILITIES), "adddel"],
        ]),
        {},
      );
      return JSON.parse(out);
    },
  };
}

/** The three ways, in the order the table lists them; the reference is the baseline. */
export const WAYS: Way[] = [
  cnitool(),
  libcni("cnikit, Go libcni", DIST),
  libcni("reference, Go libcni", REFERENCE),
];

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)]! : NaN;
}

/**
 * Runs `rounds` ADD+DEL of the chain each way (the order rotating every
 * round), each way on its own bridge and subnet in one fake host, and
 * prints the medians as table rows with the ratio to the reference.
 */
export async function benchChain(rounds: number): Promise<void> {
  const host = await TestNetns.create("ckbc");
  const dirs = await Promise.all(WAYS.map(() => Deno.makeTempDir({ prefix: "cnikit-bench-" })));
  try {
    for (const [i, dir] of dirs.entries()) {
      await Deno.writeTextFile(
        `${dir}/bench-chain.conflist`,
        JSON.stringify(chainConf(dir, `benchch${i}`, `10.${81 + i}.0.0/16`)),
      );
    }
    const samples = WAYS.map(() => ({
      add: [] as number[],
      del: [] as number[],
      total: [] as number[],
    }));
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < WAYS.length; k++) {
        const i = (round + k) % WAYS.length;
        const ctr = await TestNetns.create("ckbx");
        try {
          const { add, del } = await WAYS[i]!.run(host, ctr, dirs[i]!, `chain-${round}`);
          samples[i]!.add.push(add);
          samples[i]!.del.push(del);
          samples[i]!.total.push(add + del);
        } finally {
          await ctr.remove();
        }
      }
    }
    const reference = median(samples.at(-1)!.total);
    for (const [i, way] of WAYS.entries()) {
      const s = samples[i]!;
      console.log(
        `| full chain (bridge → portmap → firewall → tuning → bandwidth) | ${way.name} | ${
          median(s.add).toFixed(1)
        } | ${median(s.del).toFixed(1)} | ${median(s.total).toFixed(1)} | ${
          (median(s.total) / reference).toFixed(2)
        }× | n/a |`,
      );
    }
  } finally {
    await host.remove();
    await Promise.all(dirs.map((d) => Deno.remove(d, { recursive: true })));
  }
}
