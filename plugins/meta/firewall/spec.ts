/**
 * What the firewall plugin's rules say, whatever backend writes them.
 * @module
 */

import { formatIP, type IPNet } from "../../../lib/cni/ipnet.ts";

/** `ingressPolicy`: who may open connections to the container. */
export type IngressPolicy = "open" | "same-bridge" | "isolated";

/** The rules of one attachment. */
export interface FirewallSpec {
  /** The container's addresses: traffic from them, and replies to them, is accepted. */
  ips: IPNet[];
  /**
   * With `same-bridge` or `isolated`: the bridge whose containers are
   * fenced off from other bridges (`isolated`: and from each other).
   */
  isolation?: { bridge: string; isolated: boolean };
}

/** The comment of the isolation rules that serve both policies. */
export const ISOLATION_COMMENT = "CNI firewall plugin rules (ingressPolicy: same-bridge|isolated)";

/** The comment of a policy's own isolation rules. */
export function policyComment(isolated: boolean): string {
  return `CNI firewall plugin rules (ingressPolicy: ${isolated ? "isolated" : "same-bridge"})`;
}

/** `10.0.0.2/32` or `fd00::2/128`: how the reference writes a container address in rules. */
export function hostCidr(ip: IPNet): string {
  return `${formatIP(ip.ip)}/${ip.ip.family === 4 ? 32 : 128}`;
}
