/**
 * host-local against Debian's reference binary (v1.1.1): the same steps on
 * two stores must print the same results and error texts and leave the same
 * files; and both must share one store safely.
 */
import { assertEquals } from "../helpers/assert.ts";
import {
  cniEnv,
  haveReference,
  type PluginRun,
  REFERENCE_BIN,
  runApplet,
} from "../helpers/applet.ts";
import { withTempDir } from "../helpers/tempdir.ts";

const NETNS = "/run/netns/cnikit-ipam-unused";
// The reference v1.1.1 predates spec 1.1.0.
const VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0"] as const;

interface Step {
  command: "ADD" | "DEL" | "CHECK";
  containerId?: string;
  ifname?: string;
  args?: string;
  /** Extra top-level keys (runtimeConfig, args, prevResult). */
  extra?: Record<string, unknown>;
}

function netConf(
  version: string,
  dataDir: string,
  ipam: Record<string, unknown>,
  extra: Record<string, unknown> = {},
) {
  return {
    cniVersion: version,
    name: "diffnet",
    type: "ptp",
    ...extra,
    ipam: { type: "host-local", dataDir, ...ipam },
  };
}

function run(bin: string | undefined, config: unknown, step: Step): Promise<PluginRun> {
  return runApplet("host-local", {
    env: cniEnv(step.command, {
      netns: NETNS,
      containerId: step.containerId ?? "ctr1",
      ifname: step.ifname ?? "eth0",
      args: step.args ?? "",
    }),
    stdin: config as object,
    ...(bin ? { bin } : {}),
  });
}

/** What a run printed, comparable across implementations: a result, or the error text. */
function outcome(r: PluginRun): unknown {
  if (r.code !== 0) return { failed: (r.json?.msg as string | undefined) ?? r.stdout };
  if (!r.json) return r.stdout;
  // v1.1.1's libcni printed an empty `dns: {}` in 1.0.0 results; newer ones
  // (and cnikit) leave it out.
  const { dns, ...rest } = r.json as { dns?: Record<string, unknown>; cniVersion?: string };
  const emptyDns = String(rest.cniVersion).startsWith("1.") && dns && !Object.keys(dns).length;
  return emptyDns ? rest : r.json;
}

/** The store's files and their contents (modes differ: v1.1.1 predates 0600). */
function storeFiles(dataDir: string): Record<string, string> {
  const out: Record<string, string> = {};
  try {
    for (const e of Deno.readDirSync(`${dataDir}/diffnet`)) {
      out[e.name] = Deno.readTextFileSync(`${dataDir}/diffnet/${e.name}`);
    }
  } catch { /* no store yet */ }
  return out;
}

function withTwoDirs(fn: (ours: string, theirs: string) => Promise<void>): Promise<void> {
  return withTempDir(async (root) => {
    await Deno.mkdir(`${root}/ours`);
    await Deno.mkdir(`${root}/ref`);
    await fn(`${root}/ours`, `${root}/ref`);
  });
}

/**
 * Runs `steps` on cnikit and on the reference, each with its own store,
 * comparing every output and the stores after every step.
 */
async function compareSteps(
  version: string,
  ipam: (dataDir: string) => Record<string, unknown>,
  steps: Step[],
): Promise<void> {
  await withTwoDirs(async (ours, theirs) => {
    for (const [i, step] of steps.entries()) {
      const [a, b] = await Promise.all([
        run(undefined, netConf(version, ours, ipam(ours), step.extra), step),
        run(REFERENCE_BIN, netConf(version, theirs, ipam(theirs), step.extra), step),
      ]);
      const label = `step ${i} ${JSON.stringify(step)}`;
      assertEquals(outcome(a), outcome(b), label);
      assertEquals(storeFiles(ours), storeFiles(theirs), label);
    }
  });
}

const add = (containerId: string, more: Partial<Step> = {}): Step => ({
  command: "ADD",
  containerId,
  ...more,
});
const del = (containerId: string, more: Partial<Step> = {}): Step => ({
  command: "DEL",
  containerId,
  ...more,
});

for (const version of VERSIONS) {
  Deno.test({
    name: `host-local vs reference (cniVersion ${version}): legacy range, routes, resolvConf`,
    ignore: !haveReference,
    fn: () =>
      withTempDir(async (dir) => {
        const resolv = `${dir}/resolv.conf`;
        await Deno.writeTextFile(
          resolv,
          "nameserver 192.0.2.53\nnameserver 2001:db8::53\ndomain example.org\nsearch a b\noptions ndots:3\n",
        );
        const ipam = () => ({
          subnet: "10.11.0.0/24",
          gateway: "10.11.0.254",
          rangeEnd: "10.11.0.6",
          routes: [{ dst: "0.0.0.0/0" }, { dst: "192.168.7.0/24", gw: "10.11.0.100" }],
          resolvConf: resolv,
        });
        const checks: Step[] = version >= "0.4.0"
          ? [{ command: "CHECK", containerId: "c2" }, { command: "CHECK", containerId: "zz" }]
          : [];
        await compareSteps(version, ipam, [
          add("c1"),
          add("c2"),
          ...checks,
          add("c1"),
          add("c1", { ifname: "net1" }),
          del("c1"),
          add("c3"),
          add("c4"),
          add("c5"),
          add("c6"),
          add("c7"),
          del("c3"),
          add("c7"),
          del("zz"),
          del("c2"),
          del("c2"),
        ]);
      }),
  });
}

for (const version of VERSIONS.filter((v) => v >= "0.3.0")) {
  Deno.test({
    name: `host-local vs reference (cniVersion ${version}): range sets, v6, requested IPs`,
    ignore: !haveReference,
    fn: () =>
      compareSteps(version, () => ({
        ranges: [
          [
            { subnet: "10.12.0.0/24", rangeStart: "10.12.0.250" },
            { subnet: "10.12.1.0/28", gateway: "10.12.1.14" },
          ],
          [{ subnet: "2001:db8:12::/120", rangeStart: "2001:db8:12::f0" }],
        ],
        routes: [{ dst: "::/0" }],
      }), [
        add("c1"),
        add("c2"),
        add("c3"),
        add("c4", { args: "IP=10.12.1.7" }),
        add("c5", { args: "IgnoreUnknown=1;K8S_POD_NAME=x;IP=2001:db8:12::f8" }),
        add("c6", { extra: { runtimeConfig: { ips: ["10.12.0.251/24", "2001:db8:12::20"] } } }),
        add("c7", { extra: { args: { cni: { ips: ["10.12.1.1"] } } } }),
        add("c8", { args: "IP=10.12.1.7" }),
        add("c8", { args: "IP=10.12.9.9" }),
        add("c8", { args: "IP=10.12.0.1" }),
        add("c8", { args: "IP=10.12.1.14" }),
        add("c8", { args: "IP=2001:db8:12::1" }),
        // Two requests in one set: the reference picks one at random (Go map order).
        add("c8", { extra: { runtimeConfig: { ips: ["10.12.1.2", "10.99.1.3"] } } }),
        add("c8", { args: "FOO=1" }),
        add("c9"),
        add("c10"),
        add("c11"),
        del("c4"),
        del("c6"),
        add("c12"),
        {
          command: "ADD",
          containerId: "c13",
          extra: { runtimeConfig: { ipRanges: [[{ subnet: "10.13.0.0/24" }]] } },
        },
        del("c1"),
        del("c9"),
      ]),
  });
}

Deno.test({
  name: "host-local vs reference: validation error texts",
  ignore: !haveReference,
  fn: async () => {
    const bad: Record<string, unknown>[] = [
      {},
      { ranges: [[]] },
      { subnet: "10.0.0.0/31" },
      { subnet: "2001:db8::/127" },
      { subnet: "10.0.0.5/24" },
      { subnet: "10.0.0.0/24", rangeStart: "10.0.1.5" },
      { subnet: "10.0.0.0/24", rangeEnd: "10.0.0.255" },
      { subnet: "10.0.0.0/24", rangeStart: "10.0.0.50", rangeEnd: "10.0.0.40" },
      { subnet: "10.0.0.0/24", rangeStart: "2001:db8::5" },
      { ranges: [[{ subnet: "10.0.0.0/24" }, { subnet: "2001:db8::/64" }]] },
      { ranges: [[{ subnet: "10.0.0.0/24" }, { subnet: "10.0.0.0/25" }]] },
      { ranges: [[{ subnet: "10.0.0.0/24" }], [{ subnet: "10.0.0.128/25" }]] },
      { ranges: [[{ subnet: "10.0.0.0/24" }], [{ subnet: "10.1.0.0/24" }]] },
      { ranges: [[{ gateway: "10.0.0.1" }]] },
      { subnet: "10.0.0.0/33" },
      { subnet: "10.0.0.0/24", gateway: "10.0.0.300" },
    ];
    await withTwoDirs(async (ours, theirs) => {
      for (const version of ["0.2.0", "1.0.0"]) {
        for (const ipam of bad) {
          const [a, b] = await Promise.all([
            run(undefined, netConf(version, ours, ipam), add("c1")),
            run(REFERENCE_BIN, netConf(version, theirs, ipam), add("c1")),
          ]);
          assertEquals(outcome(a), outcome(b), `${version} ${JSON.stringify(ipam)}`);
        }
      }
      const noIpam = { cniVersion: "1.0.0", name: "diffnet", type: "ptp" };
      const [a, b] = await Promise.all([
        run(undefined, noIpam, add("c1")),
        run(REFERENCE_BIN, noIpam, add("c1")),
      ]);
      assertEquals(outcome(a), outcome(b));
    });
  },
});

Deno.test({
  name: "host-local and the reference share one store: allocate, check and release across",
  ignore: !haveReference,
  fn: () =>
    withTwoDirs(async (dir) => {
      const config = netConf("1.0.0", dir, { subnet: "10.14.0.0/24" });
      const ours = (step: Step) => run(undefined, config, step);
      const ref = (step: Step) => run(REFERENCE_BIN, config, step);
      const ip = (r: PluginRun) => {
        assertEquals(r.code, 0, r.stdout);
        return (r.json!.ips as { address: string }[])[0]!.address;
      };
      assertEquals(ip(await ref(add("r1"))), "10.14.0.2/24");
      assertEquals(ip(await ours(add("o1"))), "10.14.0.3/24");
      assertEquals(ip(await ref(add("r2"))), "10.14.0.4/24");
      assertEquals(ip(await ours(add("o2"))), "10.14.0.5/24");
      // Each refuses a duplicate made by the other.
      assertEquals(outcome(await ours(add("r1"))), {
        failed:
          "failed to allocate for range 0: 10.14.0.2 has been allocated to r1, duplicate allocation is not allowed",
      });
      assertEquals(outcome(await ref(add("o1"))), {
        failed:
          "failed to allocate for range 0: 10.14.0.3 has been allocated to o1, duplicate allocation is not allowed",
      });
      // CHECK finds the other's leases.
      const prev = { prevResult: { cniVersion: "1.0.0" } };
      assertEquals(
        (await run(undefined, { ...config, ...prev }, { command: "CHECK", containerId: "r1" }))
          .code,
        0,
      );
      assertEquals(
        (await run(REFERENCE_BIN, { ...config, ...prev }, { command: "CHECK", containerId: "o1" }))
          .code,
        0,
      );
      // Each releases what the other allocated.
      assertEquals((await ours(del("r1"))).code, 0);
      assertEquals((await ref(del("o1"))).code, 0);
      assertEquals(Object.keys(storeFiles(dir)).sort(), [
        "10.14.0.4",
        "10.14.0.5",
        "last_reserved_ip.0",
        "lock",
      ]);
      assertEquals((await ours(del("r2"))).code, 0);
      assertEquals((await ref(del("o2"))).code, 0);
      assertEquals(Object.keys(storeFiles(dir)).sort(), ["last_reserved_ip.0", "lock"]);
      // Round-robin state is shared too.
      assertEquals(ip(await ref(add("r3"))), "10.14.0.6/24");
      assertEquals(ip(await ours(add("o3"))), "10.14.0.7/24");
    }),
});
