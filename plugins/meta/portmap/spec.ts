/**
 * What portmap's rules say, independent of the backend that writes them,
 * and the pieces both backends compute from it.
 * @module
 */

import { formatIP, type IP, type IPNet } from "../../../lib/cni/ipnet.ts";

/** The protocols a mapping may name. */
export type Protocol = "tcp" | "udp" | "sctp";

/** One `runtimeConfig.portMappings` entry, validated. */
export interface PortMapping {
  hostPort: number;
  containerPort: number;
  protocol: Protocol;
  /** Only traffic to this host address; absent (or unspecified 0.0.0.0/::) for every address. */
  hostIP?: IP;
}

/** The rules of one attachment. */
export interface PortmapSpec {
  /** The container's addresses (with their prefix), at most one per family. */
  containers: IPNet[];
  mappings: PortMapping[];
  /** Masquerade hairpin and localhost traffic to the container. */
  snat: boolean;
  /** Masquerade mapped traffic from any source. */
  masqAll: boolean;
  /** iptables: the mark bit that asks CNI-HOSTPORT-MASQ to masquerade. */
  markBit: number;
  /** iptables: an existing chain that sets the masquerade mark instead of CNI-HOSTPORT-SETMARK. */
  externalSetMarkChain?: string;
  /** Extra match tokens for the entry rules, per family (iptables args or nft words). */
  conditions: { 4: string[]; 6: string[] };
}

/**
 * The mappings that apply to `family`: those without a host address and
 * those whose host address is of that family.
 */
export function mappingsFor(spec: PortmapSpec, family: 4 | 6): PortMapping[] {
  return spec.mappings.filter((m) => !m.hostIP || m.hostIP.family === family);
}

/** The host address a mapping's rules match on, or undefined for every address. */
export function hostAddress(m: PortMapping): string | undefined {
  return m.hostIP && m.hostIP.value !== 0n ? formatIP(m.hostIP) : undefined;
}
