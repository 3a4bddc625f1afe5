/**
 * ADD/DEL latency of the dhcp plugin through its daemon, cnikit's against
 * the reference's (/usr/lib/cni/dhcp daemon), both against the same
 * dnsmasq on one test LAN, interleaved round by round:
 *
 * - the dhcp plugin alone, on a container link made beforehand;
 * - bridge + dhcp (each implementation's own bridge);
 * - 20 bridge + dhcp ADDs at once, then 20 DELs.
 *
 *   deno run -A tests/bench/dhcp_bench.ts [--rounds N] [--only <scenario prefix>]
 *
 * Prints medians in ms, and what the server holds after each
 * implementation's DELs (a DEL that does not release leaves leases there).
 * @module
 */

import { parseArgs } from "node:util";
import { DIST_BIN, REFERENCE_BIN } from "../helpers/applet.ts";
import { type DaemonProcess, type DhcpLan, dnsmasqClientId, withDhcpLan } from "../helpers/dhcp.ts";
import { sh, TestNetns, uniqueName } from "../helpers/netns.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { rounds: { type: "string", default: "11" }, only: { type: "string" } },
});
const ROUNDS = Number(values.rounds);
const PARALLEL = 20;
/** Debian's v1.1.1 daemon has no -resendtimeout yet. */
const FLAGS = ["-timeout", "2s"];

interface Impl {
  name: string;
  bin: string;
  daemon: DaemonProcess;
}

async function call(
  lan: DhcpLan,
  impl: Impl,
  plugin: string,
  command: string,
  id: string,
  netns: string,
  conf: object,
): Promise<number> {
  const start = performance.now();
  const child = new Deno.Command("ip", {
    args: ["netns", "exec", lan.host.name, `${impl.bin}/${plugin}`],
    clearEnv: true,
    env: {
      CNI_COMMAND: command,
      CNI_CONTAINERID: id,
      CNI_NETNS: netns,
      CNI_IFNAME: "eth0",
      CNI_PATH: impl.bin,
      PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
    },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify(conf)));
  await writer.close();
  const out = await child.output();
  const ms = performance.now() - start;
  if (!out.success) {
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    throw new Error(
      `${impl.name} ${plugin} ${command} ${id}: exit ${out.code}, signal ${out.signal}: ${text}`,
    );
  }
  return ms;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function ipam(impl: Impl): Record<string, unknown> {
  return { type: "dhcp", daemonSocketPath: impl.daemon.socketPath };
}

/** A container whose eth0 is already a port of the LAN's bridge. */
async function plugged(lan: DhcpLan): Promise<TestNetns> {
  const ctr = await TestNetns.create("ckb");
  const port = uniqueName("ckp");
  await sh("ip", [
    "-n",
    lan.host.name,
    "link",
    "add",
    port,
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    ctr.name,
  ]);
  await sh("ip", ["-n", lan.host.name, "link", "set", port, "master", lan.bridge, "up"]);
  return ctr;
}

type Sample = { add: number; del: number };

const SCENARIOS: { name: string; run(lan: DhcpLan, impl: Impl): Promise<Sample> }[] = [
  {
    name: "dhcp alone (link made beforehand)",
    async run(lan, impl) {
      const ctr = await plugged(lan);
      try {
        const conf = { cniVersion: "1.0.0", name: "lan", ipam: ipam(impl) };
        const add = await call(lan, impl, "dhcp", "ADD", `${impl.name}-alone`, ctr.path, conf);
        const del = await call(lan, impl, "dhcp", "DEL", `${impl.name}-alone`, ctr.path, conf);
        return { add, del };
      } finally {
        await ctr.remove();
      }
    },
  },
  {
    name: "bridge + dhcp",
    async run(lan, impl) {
      const ctr = await TestNetns.create("ckb");
      try {
        const conf = {
          cniVersion: "1.0.0",
          name: "lan",
          type: "bridge",
          bridge: lan.bridge,
          ipam: ipam(impl),
        };
        const add = await call(lan, impl, "bridge", "ADD", `${impl.name}-br`, ctr.path, conf);
        const del = await call(lan, impl, "bridge", "DEL", `${impl.name}-br`, ctr.path, conf);
        return { add, del };
      } finally {
        await ctr.remove();
      }
    },
  },
  {
    name: `bridge + dhcp, ${PARALLEL} parallel ADD then ${PARALLEL} DEL`,
    async run(lan, impl) {
      const ctrs = await Promise.all(
        Array.from({ length: PARALLEL }, () => TestNetns.create("ckb")),
      );
      try {
        const conf = {
          cniVersion: "1.0.0",
          name: "lan",
          type: "bridge",
          bridge: lan.bridge,
          ipam: ipam(impl),
        };
        let start = performance.now();
        await Promise.all(
          ctrs.map((c, i) =>
            call(lan, impl, "bridge", "ADD", `${impl.name}-par${i}`, c.path, conf)
          ),
        );
        const add = performance.now() - start;
        start = performance.now();
        await Promise.all(
          ctrs.map((c, i) =>
            call(lan, impl, "bridge", "DEL", `${impl.name}-par${i}`, c.path, conf)
          ),
        );
        return { add, del: performance.now() - start };
      } finally {
        await Promise.all(ctrs.map((c) => c.remove()));
      }
    },
  },
];

await withDhcpLan([], async (lan) => {
  const impls: Impl[] = [
    { name: "cnikit", bin: DIST_BIN, daemon: await lan.startDaemon({ flags: FLAGS }) },
    {
      name: "reference",
      bin: REFERENCE_BIN,
      daemon: await lan.startDaemon({ flags: FLAGS, bin: REFERENCE_BIN }),
    },
  ];
  console.log(`dhcp bench: ${ROUNDS} rounds, interleaved, medians in ms, one dnsmasq\n`);
  console.log("| scenario | impl | ADD | DEL | leases left at the server |");
  console.log("|---|---|---:|---:|---:|");
  for (const scenario of SCENARIOS) {
    if (values.only && !scenario.name.startsWith(values.only)) continue;
    const samples = new Map(impls.map((i) => [i.name, [] as Sample[]]));
    for (let round = 0; round < ROUNDS; round++) {
      for (const impl of round % 2 ? [...impls].reverse() : impls) {
        samples.get(impl.name)!.push(await scenario.run(lan, impl));
      }
    }
    // Client ids start with the implementation's name: whose DELs left leases behind.
    const leases = await lan.server.leases();
    const left = (impl: Impl) =>
      leases.filter((l) => l.clientId.startsWith(dnsmasqClientId(`${impl.name}-`))).length;
    for (const impl of impls) {
      const s = samples.get(impl.name)!;
      console.log(
        `| ${scenario.name} | ${impl.name} | ${median(s.map((x) => x.add)).toFixed(1)} | ${
          median(s.map((x) => x.del)).toFixed(1)
        } | ${left(impl)} |`,
      );
    }
  }
});
