/**
 * What the firewall plugin remembers of each attachment: its addresses.
 * The reference's per-address iptables rules and firewalld sources carry no
 * owner, so without a record DEL needs the `prevResult` and GC cannot tell
 * whose rules are stale. One small JSON file per attachment under
 * `<dataDir>/<network>/`; dataDir defaults to /run/cni/firewall, which,
 * like the rules, does not survive a reboot.
 * @module
 */

import { hashedName } from "../../../lib/cni/hash.ts";
import type { GCAttachment } from "../../../lib/cni/spec/schemas.ts";
import type { Owner } from "../../../lib/netfilter/backend.ts";

/** The default record directory. */
export const DEFAULT_DATA_DIR = "/run/cni/firewall";

/** One attachment's record. */
export interface AttachmentRecord {
  containerId: string;
  ifname: string;
  /** The addresses, `ip/prefix`. */
  ips: string[];
}

async function fileOf(dataDir: string, owner: Owner): Promise<string> {
  // Container IDs and interface names may hold characters a file name should not.
  return `${dataDir}/${owner.network}/${await hashedName(
    "",
    `${owner.ifname}:${owner.containerId}`,
    24,
  )}.json`;
}

/** Writes (or replaces) the record of `owner`. */
export async function writeRecord(dataDir: string, owner: Owner, ips: string[]): Promise<void> {
  Deno.mkdirSync(`${dataDir}/${owner.network}`, { recursive: true, mode: 0o700 });
  const record: AttachmentRecord = { containerId: owner.containerId, ifname: owner.ifname, ips };
  Deno.writeTextFileSync(await fileOf(dataDir, owner), JSON.stringify(record), { mode: 0o600 });
}

/** The addresses recorded for `owner`; none when there is no record. */
export async function readRecord(dataDir: string, owner: Owner): Promise<string[]> {
  try {
    return (JSON.parse(Deno.readTextFileSync(await fileOf(dataDir, owner))) as AttachmentRecord)
      .ips;
  } catch {
    return [];
  }
}

/** Removes the record of `owner` (none is fine). */
export async function removeRecord(dataDir: string, owner: Owner): Promise<void> {
  try {
    Deno.removeSync(await fileOf(dataDir, owner));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}

/** Every record of `network`. */
export function listRecords(dataDir: string, network: string): AttachmentRecord[] {
  const out: AttachmentRecord[] = [];
  try {
    for (const entry of Deno.readDirSync(`${dataDir}/${network}`)) {
      if (!entry.name.endsWith(".json")) continue;
      try {
        out.push(JSON.parse(Deno.readTextFileSync(`${dataDir}/${network}/${entry.name}`)));
      } catch { /* half-written or foreign: not ours to judge */ }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out;
}

/**
 * Tears down (with `teardown`) and forgets every recorded attachment of
 * `network` that is not in `valid`.
 */
export async function collectRecords(
  dataDir: string,
  network: string,
  valid: readonly GCAttachment[],
  teardown: (owner: Owner, ips: string[]) => Promise<void>,
): Promise<void> {
  const keep = new Set(valid.map((a) => `${a.containerID}\0${a.ifname}`));
  for (const record of listRecords(dataDir, network)) {
    if (keep.has(`${record.containerId}\0${record.ifname}`)) continue;
    const owner = { network, containerId: record.containerId, ifname: record.ifname };
    await teardown(owner, record.ips);
    await removeRecord(dataDir, owner);
  }
}
