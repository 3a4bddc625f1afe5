/**
 * IP masquerade for an attachment (bridge's and ptp's `ipMasq`), with the
 * reference's kernel objects in either backend (iptables.ts, nftables.ts),
 * so that cnikit and the reference clean up each other's rules.
 *
 * Teardown and GC need no addresses: the rules are found by chain name and
 * comment, so DEL removes them when the netns is already gone (the
 * reference leaks them there), and both backends are cleaned, whatever the
 * config says now.
 * @module
 */

import type { IPNet } from "../../cni/ipnet.ts";
import type { GCAttachment } from "../../cni/spec/schemas.ts";
import {
  type BackendName,
  type NetfilterBackend,
  type Owner,
  parseBackendName,
  pickBackend,
  settleBackends,
} from "../backend.ts";
import { nftUsable } from "../detect.ts";
import { masqIptables } from "./iptables.ts";
import { masqNftables } from "./nftables.ts";

const BACKENDS: Record<BackendName, NetfilterBackend<IPNet[]>> = {
  iptables: masqIptables,
  nftables: masqNftables,
};

/** Validates an `ipMasqBackend` value (absent, "iptables" or "nftables"). */
export function parseMasqBackend(value: unknown): BackendName | undefined {
  return parseBackendName(value, (v) => `unknown ipmasq backend ${JSON.stringify(v)}`);
}

/**
 * Installs masquerade for `ips` (addresses with their subnet prefix) with
 * `backend`, or the one the reference would pick. Requires root.
 */
export async function setupMasq(owner: Owner, ips: IPNet[], backend?: BackendName): Promise<void> {
  await (await pickBackend(BACKENDS, backend)).setup(owner, ips);
}

/** Throws when the masquerade rules for `ips` are not all in place. */
export async function checkMasq(owner: Owner, ips: IPNet[], backend?: BackendName): Promise<void> {
  await (await pickBackend(BACKENDS, backend)).check(owner, ips);
}

/** Both backends, each failure counting only where its front end is usable. */
function everyBackend(task: (backend: NetfilterBackend<IPNet[]>) => Promise<void>): Promise<void> {
  return settleBackends([
    // The iptables backend already forgives the families it cannot use.
    [() => Promise.resolve(true), task(masqIptables)],
    [nftUsable, task(masqNftables)],
  ]);
}

/** Removes the attachment's masquerade rules from both backends (no addresses needed). */
export function teardownMasq(owner: Owner): Promise<void> {
  return everyBackend((b) => b.teardown(owner));
}

/** Removes masquerade rules of `network` whose attachment is not in `valid`, in both backends. */
export function gcMasq(network: string, valid: readonly GCAttachment[]): Promise<void> {
  return everyBackend((b) => b.gc(network, valid));
}
