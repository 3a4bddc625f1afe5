/**
 * Kernel features that some machines' kernels lack, probed in a throwaway
 * namespace, and the declaration a test file makes when its tests need them.
 *
 * A test file whose tests need a feature calls {@link requireKernel} once at
 * its top level, with string literals:
 *
 * ```ts
 * const kernelReady = await requireKernel("vlan", "dummy");
 * Deno.test({ name: "…", ignore: !kernelReady, fn: … });
 * ```
 *
 * `scripts/test.ts` reads that call without running the file: it runs the
 * file in the second kernel (`scripts/uml_run.ts`) always, and in the host
 * run only where this machine's kernel has every feature named. Inside the
 * second kernel a missing feature fails the file instead of skipping it.
 * See docs/DEVELOPING.md, Tests.
 * @module
 */

import { canNetns, spawnOutput, TestNetns } from "./netns.ts";

/** A veth pair to stack a link on; one per probe, as ipvlan and macvlan exclude each other. */
const lower = (n: string) => ["link", "add", `${n}0`, "type", "veth", "peer", "name", `${n}1`];

/** Kernel features a test may need, each with the `ip` commands that prove it is there. */
const PROBES = {
  /** dummy links (CONFIG_DUMMY). */
  dummy: [["link", "add", "pdummy", "type", "dummy"]],
  /** 802.1Q VLAN links (CONFIG_VLAN_8021Q). */
  vlan: [lower("pvl"), ["link", "add", "link", "pvl0", "name", "pvlan", "type", "vlan", "id", "5"]],
  /** ipvlan links (CONFIG_IPVLAN). */
  ipvlan: [lower("piv"), ["link", "add", "link", "piv0", "name", "pipvlan", "type", "ipvlan"]],
  /** macvlan links (CONFIG_MACVLAN). */
  macvlan: [lower("pmv"), ["link", "add", "link", "pmv0", "name", "pmacvlan", "type", "macvlan"]],
  /** VRF devices (CONFIG_NET_VRF). */
  vrf: [["link", "add", "pvrf", "type", "vrf", "table", "100"]],
  /** bonding (CONFIG_BONDING). */
  bonding: [["link", "add", "pbond", "type", "bond"]],
  /** tap devices (CONFIG_TUN, and /dev/net/tun). */
  tun: [["tuntap", "add", "mode", "tap", "name", "ptap"]],
  /** VLAN filtering on bridges (CONFIG_BRIDGE_VLAN_FILTERING). */
  "bridge-vlan-filtering": [["link", "add", "pbridge", "type", "bridge", "vlan_filtering", "1"]],
} as const;

/** A kernel feature {@link requireKernel} knows. */
export type KernelFeature = keyof typeof PROBES;

/** Every feature name, for `scripts/test.ts` to check declarations against. */
export const KERNEL_FEATURES = Object.keys(PROBES) as KernelFeature[];

/** True inside the second kernel that `scripts/uml_run.ts` boots. */
export const inSecondKernel = Deno.env.get("CNIKIT_SECOND_KERNEL") !== undefined;

const probed = new Map<KernelFeature, boolean>();

/**
 * Which of `features` this kernel has, probed (once per process) in one
 * throwaway namespace; all false where namespaces cannot be made.
 */
export async function probeKernel(
  features: readonly KernelFeature[],
): Promise<Record<KernelFeature, boolean>> {
  const todo = [...new Set(features)].filter((f) => !probed.has(f));
  if (todo.length && canNetns) {
    const ns = await TestNetns.create("ckk");
    try {
      for (const f of todo) {
        let ok = true;
        for (const args of PROBES[f]) {
          ok = (await spawnOutput("ip", ["-n", ns.name, ...args])).code === 0;
          if (!ok) break;
        }
        probed.set(f, ok);
      }
    } finally {
      await ns.remove();
    }
  }
  const have = features.map((f) => [f, probed.get(f) ?? false]);
  return Object.fromEntries(have) as Record<KernelFeature, boolean>;
}

/**
 * Declares that the tests of this file need `features` and tells whether
 * they can run here (gate them with `ignore: !ready`). Call it once per file,
 * at the top level, with string literals only: `scripts/test.ts` reads the
 * call to send the file to the second kernel. Inside the second kernel a
 * missing feature is an error, never a skip; elsewhere it is a note on stderr.
 */
export async function requireKernel(...features: KernelFeature[]): Promise<boolean> {
  if (!canNetns && inSecondKernel) throw new Error("the second kernel cannot make namespaces");
  if (!canNetns) return false;
  const have = await probeKernel(features);
  const missing = features.filter((f) => !have[f]);
  if (!missing.length) return true;
  if (inSecondKernel) {
    throw new Error(`the second kernel lacks ${missing.join(", ")}: the tests cannot run`);
  }
  console.error(
    `this kernel lacks ${missing.join(", ")}: these tests are ignored here; ` +
      "`deno task test:kernel <file>` runs them in the second kernel",
  );
  return false;
}
