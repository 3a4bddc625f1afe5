/**
 * IPAM for the kernel tests: host-local sections over the test subnets
 * with a throwaway dataDir, and the leases host-local keeps there.
 * @module
 */

/** The subnets the tests hand out (each test has its own namespaces). */
export const SUBNET = { 4: "10.88.0.0/24", 6: "fd00:88::/64" } as const;

/** The address families of an attachment. */
export type Families = "v4" | "v6" | "dual";

/** The IP versions of `families`, v4 first. */
export function familiesOf(families: Families): (4 | 6)[] {
  return families === "v4" ? [4] : families === "v6" ? [6] : [4, 6];
}

/** A host-local `ipam` section for `families`, storing its leases in `dataDir`. */
export function hostLocal(
  families: Families,
  dataDir: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    type: "host-local",
    dataDir,
    ranges: familiesOf(families).map((f) => [{ subnet: SUBNET[f] }]),
    ...extra,
  };
}

/** IPAM `routes`: a default route (via the gateway) per family of `families`. */
export function defaultRoutes(families: Families): { dst: string }[] {
  return familiesOf(families).map((f) => ({ dst: f === 4 ? "0.0.0.0/0" : "::/0" }));
}

/**
 * The leases host-local keeps under `dataDir` (its bookkeeping files left
 * out): of every network as `network/ip`, or only the IPs of `network`.
 */
export async function leases(dataDir: string, network?: string): Promise<string[]> {
  const out: string[] = [];
  try {
    for await (const net of Deno.readDir(dataDir)) {
      if (!net.isDirectory || (network !== undefined && net.name !== network)) continue;
      for await (const e of Deno.readDir(`${dataDir}/${net.name}`)) {
        if (e.name !== "lock" && !e.name.startsWith("last_reserved_ip")) {
          out.push(network === undefined ? `${net.name}/${e.name}` : e.name);
        }
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort();
}
