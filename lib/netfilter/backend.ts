/**
 * The one shape of every netfilter user (masquerade, portmap, firewall):
 * a backend per front end (iptables, nftables, firewalld) that sets up,
 * checks, tears down and garbage-collects one attachment's rules. Plugins
 * pick a backend from the config or by the reference's auto-detection and
 * call it; the rules of each backend live beside its plugin (or in
 * lib/netfilter/masq/ for masquerade, which two plugins share).
 * @module
 */

import { CniError, ErrorCode, invalidConfig } from "../cni/errors.ts";
import type { GCAttachment } from "../cni/spec/schemas.ts";
import { type BackendName, defaultBackend, iptablesUsable } from "./detect.ts";
import type { Family } from "./iptables.ts";

export type { BackendName } from "./detect.ts";

/** Whose rules: the reference names and comments its objects after these. */
export interface Owner {
  network: string;
  containerId: string;
  ifname: string;
}

/** One front end's implementation of an attachment's rules; `Spec` is what the rules say. */
export interface NetfilterBackend<Spec> {
  readonly name: string;
  /** Installs the rules; running it again for the same owner replaces them. */
  setup(owner: Owner, spec: Spec): Promise<void>;
  /** Throws a CniError naming what is missing when the rules are not all there. */
  check(owner: Owner, spec: Spec): Promise<void>;
  /**
   * Removes the owner's rules, found by name or comment where the backend
   * can (then `spec` may be absent); a no-op when they are gone.
   */
  teardown(owner: Owner, spec?: Spec): Promise<void>;
  /** Removes the rules of `network`'s attachments that are not in `valid`. */
  gc(network: string, valid: readonly GCAttachment[]): Promise<void>;
}

/** Reads a `backend`-style config value: absent, "iptables" or "nftables"; else `unknown`. */
export function parseBackendName(
  value: unknown,
  unknown: (value: string) => string,
): BackendName | undefined {
  if (value === undefined || value === null) return undefined;
  if (value === "iptables" || value === "nftables") return value;
  throw invalidConfig(unknown(String(value)));
}

/** The backend named by the config, or the one the reference would pick. */
export async function pickBackend<B>(
  backends: Record<BackendName, B>,
  requested: BackendName | undefined,
): Promise<B> {
  return backends[requested ?? await defaultBackend()];
}

/**
 * Waits for cleanup `tasks` of several backends (or families) run side by
 * side. A failure counts only when its front end is usable here (`usable`,
 * asked only then): on a machine without nft, "nft not found" means there
 * is nothing to remove. The failures that count are thrown together as an
 * I/O error.
 */
export async function settleBackends(
  tasks: readonly [usable: () => Promise<boolean>, task: Promise<void>][],
): Promise<void> {
  const errors: string[] = [];
  for (const [usable, task] of tasks) {
    await task.catch(async (e) => {
      if (await usable()) errors.push((e as Error).message);
    });
  }
  if (errors.length) throw new CniError(ErrorCode.ioFailure, errors.join("\n"));
}

/**
 * Runs `task` for each of `families` side by side (cleanup with iptables
 * and ip6tables); a family whose iptables is unusable here may fail.
 */
export function eachIptablesFamily(
  task: (family: Family) => Promise<void>,
  families: readonly Family[] = [4, 6],
): Promise<void> {
  return settleBackends(families.map((f) => [() => iptablesUsable(f), task(f)]));
}
