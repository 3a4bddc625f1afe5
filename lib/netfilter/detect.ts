/**
 * Which netfilter tools work here. "Usable" means what the reference's
 * backend auto-detection means: the tool runs, and it can talk to the
 * kernel with our privileges (an installed binary without CAP_NET_ADMIN or
 * kernel support is not usable). Each probe runs at most once per process.
 * @module
 */

import { run, toolPath } from "../net/exec.ts";
import { type Family, saveTable } from "./iptables.ts";

/** True when `tool` is installed (in PATH or the system directories); no process is started. */
export function installed(tool: string): boolean {
  try {
    toolPath(tool);
    return true;
  } catch {
    return false;
  }
}

const iptablesProbes = new Map<Family, Promise<boolean>>();

/**
 * True when ip(6)tables of `family` can read the nat table. The probe is
 * the read a backend makes anyway: its snapshot serves the next update of
 * that table, so probing costs no extra process.
 */
export function iptablesUsable(family: Family): Promise<boolean> {
  let probe = iptablesProbes.get(family);
  if (!probe) {
    probe = saveTable(family, "nat", { keep: true }).then(() => true, () => false);
    iptablesProbes.set(family, probe);
  }
  return probe;
}

let nftProbe: Promise<boolean> | undefined;

/**
 * True when nft is at least 1.0.1 (the JSON and syntax cnikit writes) and
 * may change the ruleset: `nft --check` of adding a table, which the kernel
 * validates without committing.
 */
export function nftUsable(): Promise<boolean> {
  nftProbe ??= (async () => {
    if (!installed("nft")) return false;
    const version = await run("nft", ["--version"], { allowFailure: true });
    const m = version.stdout.match(/v(\d+)\.(\d+)\.(\d+)/);
    if (version.code !== 0 || !m) return false;
    const [major, minor, patch] = m.slice(1).map(Number) as [number, number, number];
    if (major === 0 || (major === 1 && minor === 0 && patch < 1)) return false;
    const check = await run("nft", ["--check", "-f", "-"], {
      stdin: "add table inet cnikit_probe\n",
      allowFailure: true,
    });
    return check.code === 0;
  })();
  return nftProbe;
}

/** A netfilter front end. */
export type BackendName = "iptables" | "nftables";

/**
 * The backend the reference picks when the config names none: iptables,
 * unless iptables is unusable and nftables usable.
 */
export async function defaultBackend(): Promise<BackendName> {
  return !await iptablesUsable(4) && await nftUsable() ? "nftables" : "iptables";
}

/** True when `backend` can be used here (iptables: its IPv4 side, as the reference tests). */
export function backendUsable(backend: BackendName): Promise<boolean> {
  return backend === "iptables" ? iptablesUsable(4) : nftUsable();
}
