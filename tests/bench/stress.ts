/**
 * Crash hunt: many plugin processes at once, as a node under load starts
 * them. W workers each own a container namespace and run N bridge calls
 * (ADD, DEL, ADD, DEL, …) in a fake host namespace, all on one bridge and
 * one host-local store. Every call must exit 0: a signal (a SIGBUS from a
 * shared mmap, say) or any failure is counted and shown. Not a test: it
 * takes minutes and is run by hand.
 *
 *   deno run -A tests/bench/stress.ts [--workers 20] [--calls 50] [--plugin-dir dist/bin]
 * @module
 */

import { parseArgs } from "node:util";
import { closeLibc } from "../../lib/net/libc.ts";
import { withNetnsSync } from "../../lib/net/netns.ts";
import { TestNetns } from "../helpers/netns.ts";

interface Failure {
  worker: number;
  call: number;
  command: string;
  code: number;
  signal: string | null;
  output: string;
}

async function call(
  host: TestNetns,
  program: string,
  env: Record<string, string>,
  conf: string,
): Promise<Deno.CommandOutput> {
  const child = withNetnsSync(host.path, () =>
    new Deno.Command(program, {
      env,
      clearEnv: true,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn());
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(conf));
  await w.close();
  return await child.output();
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      workers: { type: "string", default: "20" },
      calls: { type: "string", default: "50" },
      "plugin-dir": {
        type: "string",
        default: new URL("../../dist/bin", import.meta.url).pathname,
      },
    },
  });
  const workers = Number(values.workers);
  const calls = Number(values.calls);
  const bin = values["plugin-dir"];
  const dataDir = await Deno.makeTempDir({ prefix: "cnikit-stress-" });
  const host = await TestNetns.create("ckst");
  const ctrs: TestNetns[] = [];
  const failures: Failure[] = [];
  let done = 0;
  const started = performance.now();
  try {
    for (let i = 0; i < workers; i++) ctrs.push(await TestNetns.create("ckst"));
    const conf = JSON.stringify({
      cniVersion: "1.0.0",
      name: "stress",
      type: "bridge",
      bridge: "ckstressbr0",
      isGateway: true,
      ipMasq: true,
      ipam: { type: "host-local", subnet: "10.99.0.0/16", dataDir },
    });
    await Promise.all(ctrs.map(async (ctr, worker) => {
      for (let n = 0; n < calls; n++) {
        const command = n % 2 ? "DEL" : "ADD";
        const out = await call(host, `${bin}/bridge`, {
          CNI_COMMAND: command,
          CNI_CONTAINERID: `stress-${worker}`,
          CNI_NETNS: ctr.path,
          CNI_IFNAME: "eth0",
          CNI_PATH: bin,
          PATH: "/usr/sbin:/usr/bin:/sbin:/bin",
        }, conf);
        done++;
        if (out.code !== 0 || out.signal !== null) {
          const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
          failures.push({
            worker,
            call: n,
            command,
            code: out.code,
            signal: out.signal,
            output: text,
          });
        }
      }
    }));
  } finally {
    await Promise.all([host, ...ctrs].map((ns) => ns.remove()));
    await Deno.remove(dataDir, { recursive: true });
    closeLibc();
  }
  const seconds = (performance.now() - started) / 1000;
  const crashes = failures.filter((f) => f.signal !== null);
  console.log(
    `${done} bridge calls (${workers} workers × ${calls}) in ${seconds.toFixed(1)} s: ` +
      `${failures.length} failed, ${crashes.length} killed by a signal`,
  );
  for (const f of failures.slice(0, 10)) {
    console.log(
      `  worker ${f.worker} call ${f.call} ${f.command}: exit ${f.code}` +
        (f.signal ? ` signal ${f.signal}` : "") +
        `\n    ${f.output.trim().replaceAll("\n", "\n    ")}`,
    );
  }
  return failures.length ? 1 : 0;
}

Deno.exit(await main());
