/**
 * tuning's backups: the link attributes an ADD changed, as they were before,
 * in `<dataDir>/<containerID>_<ifname>.json` with the reference's keys, so
 * that either implementation restores what the other changed. cnikit adds
 * the network's name (a key the reference ignores), which is what lets GC
 * tell this network's backups from another's in a shared dataDir.
 * @module
 */

import { CniError, ErrorCode } from "../../../lib/cni/errors.ts";
import type { IpCommand, LinkInfo } from "../../../lib/net/ip.ts";
import type { GCAttachment } from "../../../lib/cni/spec/schemas.ts";

/** The attributes tuning sets, as a backup holds them (absent = not changed). */
export interface LinkAttrs {
  mac?: string;
  promisc?: boolean;
  mtu?: number;
  allmulti?: boolean;
  txQLen?: number;
}

/** The key cnikit adds to a backup: the network it belongs to. */
const NETWORK_KEY = "cnikitNetwork";

/** The backup file of one attachment. */
export function backupPath(dataDir: string, containerId: string, ifname: string): string {
  return `${dataDir}/${containerId}_${ifname}.json`;
}

/** Of `link`'s current attributes, those that `wanted` is about to change. */
export function currentAttrs(link: LinkInfo, wanted: LinkAttrs): LinkAttrs {
  const out: LinkAttrs = {};
  if (wanted.mac !== undefined) out.mac = link.address ?? "";
  // The reference saves promisc only when it turns it on; it never turns it off.
  if (wanted.promisc) out.promisc = link.flags.includes("PROMISC");
  if (wanted.mtu !== undefined) out.mtu = link.mtu;
  if (wanted.allmulti !== undefined) out.allmulti = link.flags.includes("ALLMULTI");
  if (wanted.txQLen !== undefined) out.txQLen = link.txqlen ?? 0;
  return out;
}

const ORDER = {
  add: ["mac", "promisc", "mtu", "allmulti", "txQLen"],
  restore: ["mtu", "mac", "promisc", "allmulti", "txQLen"],
} as const;

/**
 * The `ip` commands that give `ifname` the attributes `attrs`, in the
 * reference's order for ADD or for the restore on DEL.
 */
export function setCommands(
  ifname: string,
  attrs: LinkAttrs,
  order: keyof typeof ORDER,
): IpCommand[] {
  const set = (...what: string[]) => [["link", "set", "dev", ifname, ...what]];
  const onOff = (v: boolean) => (v ? "on" : "off");
  const steps: Record<keyof LinkAttrs, IpCommand[]> = {
    mac: attrs.mac ? set("address", attrs.mac) : [],
    promisc: attrs.promisc !== undefined ? set("promisc", onOff(attrs.promisc)) : [],
    mtu: attrs.mtu ? set("mtu", String(attrs.mtu)) : [],
    allmulti: attrs.allmulti !== undefined ? set("allmulticast", onOff(attrs.allmulti)) : [],
    txQLen: attrs.txQLen !== undefined ? set("txqueuelen", String(attrs.txQLen)) : [],
  };
  return ORDER[order].flatMap((key) => steps[key]);
}

/** Writes the backup of one attachment (mode 0600, its folder 0700). */
export function writeBackup(file: string, attrs: LinkAttrs, network: string): void {
  try {
    Deno.mkdirSync(file.slice(0, file.lastIndexOf("/")), { recursive: true, mode: 0o700 });
    // The reference's layout: one-space indent, its key order.
    const body = { ...attrs, [NETWORK_KEY]: network };
    Deno.writeTextFileSync(file, JSON.stringify(body, null, 1), { mode: 0o600 });
  } catch (e) {
    throw new CniError(
      ErrorCode.ioFailure,
      `failed to save the tuning backup ${file}: ${(e as Error).message}`,
    );
  }
}

/**
 * The backup in `file`: undefined when there is none, "corrupt" when it
 * cannot be read as one.
 */
export function readBackup(file: string): LinkAttrs | "corrupt" | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    return "corrupt";
  }
  try {
    const raw = JSON.parse(text) as Record<string, unknown>;
    const out: LinkAttrs = {};
    if (typeof raw.mac === "string" && raw.mac !== "") out.mac = raw.mac;
    if (typeof raw.promisc === "boolean") out.promisc = raw.promisc;
    if (typeof raw.mtu === "number" && raw.mtu !== 0) out.mtu = raw.mtu;
    if (typeof raw.allmulti === "boolean") out.allmulti = raw.allmulti;
    if (typeof raw.txQLen === "number") out.txQLen = raw.txQLen;
    return out;
  } catch {
    return "corrupt";
  }
}

/** Removes a backup; one that is already gone is fine. */
export function removeBackup(file: string): void {
  try {
    Deno.removeSync(file);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      console.error(`tuning: cannot remove ${file}: ${(e as Error).message}`);
    }
  }
}

/**
 * Removes this network's backups whose attachment is not in `valid`.
 * Backups without cnikit's network key (written by the reference) are kept:
 * nothing tells whose they are, and the dataDir is shared by all networks.
 */
export function gcBackups(dataDir: string, network: string, valid: GCAttachment[]): void {
  const keep = new Set(valid.map((a) => `${a.containerID}_${a.ifname}.json`));
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dataDir)];
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw new CniError(ErrorCode.ioFailure, `failed to list ${dataDir}: ${(e as Error).message}`);
  }
  for (const entry of entries) {
    if (!entry.isFile || !entry.name.endsWith(".json") || keep.has(entry.name)) continue;
    const file = `${dataDir}/${entry.name}`;
    try {
      const owner = (JSON.parse(Deno.readTextFileSync(file)) as Record<string, unknown>)[
        NETWORK_KEY
      ];
      if (owner === network) removeBackup(file);
    } catch { /* not a backup of ours */ }
  }
}
