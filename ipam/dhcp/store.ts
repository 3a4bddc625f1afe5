/**
 * The daemon's leases on disk, one JSON file per client id, so a restarted
 * daemon finds the leases of the containers that still live and can renew
 * or release them. Written atomically (temporary file, then rename).
 * @module
 */

import { toHex } from "../../lib/cni/hash.ts";

/** Everything needed to maintain or release a lease after a restart. */
export interface LeaseRecord {
  clientId: string;
  netns: string;
  ifname: string;
  /** The link's index when the lease was acquired: a new link of the same name is not it. */
  ifindex: number;
  /** Options sent with every message, `[code, hex]`. */
  options: [number, string][];
  request: number[];
  /** The DHCPACK as received, hex. */
  ack: string;
  /** The MAC the ACK came from, hex. */
  serverMac: string;
  /** When the ACK arrived (ms since the epoch): the lease times count from here. */
  boundAt: number;
}

/** Leases in a directory. */
export class LeaseStore {
  readonly dir: string;

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Creates the directory (mode 0700: leases name containers). */
  async init(): Promise<void> {
    await Deno.mkdir(this.dir, { recursive: true, mode: 0o700 });
  }

  async #path(clientId: string): Promise<string> {
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(clientId));
    return `${this.dir}/${toHex(new Uint8Array(digest))}.json`;
  }

  /** Saves (or replaces) the record of `record.clientId`. */
  async save(record: LeaseRecord): Promise<void> {
    const path = await this.#path(record.clientId);
    const tmp = `${path}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(record) + "\n", { mode: 0o600 });
    await Deno.rename(tmp, path);
  }

  /** Forgets the record of `clientId`; nothing to do when there is none. */
  async remove(clientId: string): Promise<void> {
    await Deno.remove(await this.#path(clientId)).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }

  /** Every readable record; `onBad` hears of files that are not one. */
  async load(onBad: (file: string, why: string) => void): Promise<LeaseRecord[]> {
    const out: LeaseRecord[] = [];
    for await (const entry of Deno.readDir(this.dir)) {
      if (!entry.isFile || !entry.name.endsWith(".json")) continue;
      const file = `${this.dir}/${entry.name}`;
      try {
        const record = JSON.parse(await Deno.readTextFile(file)) as LeaseRecord;
        if (typeof record.clientId !== "string" || typeof record.ack !== "string") {
          throw new Error("not a lease record");
        }
        out.push(record);
      } catch (e) {
        onBad(file, (e as Error).message);
      }
    }
    return out;
  }
}
