/**
 * host-local's on-disk store, byte-compatible with the reference's: one
 * directory per network under `dataDir` holding a file per leased address
 * (named after it, created exclusively with mode 0600, containing
 * `<containerID>\r\n<ifname>`), `last_reserved_ip.<rangeSetIndex>` for
 * round-robin, and `lock`, flock'ed around every change. A node can run
 * cnikit and the reference side by side on one store.
 * @module
 */

import { CniError, ErrorCode } from "../../lib/cni/errors.ts";
import { formatIP, type IP, parseGoIP } from "../../lib/cni/ipnet.ts";
import { FileLock } from "./lock.ts";

/** Separates the container ID from the interface name in a lease file. */
const LINE_BREAK = "\r\n";
const LAST_IP_PREFIX = "last_reserved_ip.";
const LOCK_NAME = "lock";

/** A file of the store with its content, whitespace-trimmed as the reference compares it. */
export interface StoreEntry {
  readonly name: string;
  readonly content: string;
}

/** An I/O failure in Go's words (`open /x: permission denied`), code 5. */
export function ioError(op: string, path: string, error: unknown): CniError {
  const text = error instanceof Error ? error.message : String(error);
  const reason = text.replace(/ \(os error \d+\).*$/s, "").toLowerCase();
  return new CniError(ErrorCode.ioFailure, `${op} ${path}: ${reason}`);
}

/** The content a lease of (containerID, ifname) holds. */
export function leaseKey(id: string, ifname: string): string {
  return `${id.trim()}${LINE_BREAK}${ifname}`;
}

/** The directory of a network's store. */
export function storeDir(dataDir: string, network: string): string {
  return `${dataDir.replace(/\/+$/, "")}/${network}`;
}

/** One network's lease directory and its lock. */
export class Store {
  readonly dir: string;
  #lock: FileLock;

  private constructor(dir: string, lock: FileLock) {
    this.dir = dir;
    this.#lock = lock;
  }

  /** Opens the store of `network`, creating its directory (mode 0755) and lock file. */
  static open(dataDir: string, network: string): Store {
    const dir = storeDir(dataDir, network);
    try {
      Deno.mkdirSync(dir, { recursive: true, mode: 0o755 });
    } catch (e) {
      throw ioError("mkdir", dir, e);
    }
    return Store.#openLock(dir);
  }

  /**
   * Opens the store of `network` if it exists; null when it does not, as
   * there is nothing to find or release then.
   */
  static openExisting(dataDir: string, network: string): Store | null {
    const dir = storeDir(dataDir, network);
    try {
      Deno.statSync(dir);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return null;
      throw ioError("stat", dir, e);
    }
    return Store.#openLock(dir);
  }

  /**
   * Fails unless the store of `network` can take leases: its directory
   * exists or can be made, and its lock file opens for writing (which a
   * read-only filesystem refuses even when both exist).
   */
  static probeWritable(dataDir: string, network: string): void {
    Store.open(dataDir, network).close();
    const lockPath = `${storeDir(dataDir, network)}/${LOCK_NAME}`;
    try {
      Deno.openSync(lockPath, { write: true }).close();
    } catch (e) {
      throw ioError("open", lockPath, e);
    }
  }

  static #openLock(dir: string): Store {
    const lockPath = `${dir}/${LOCK_NAME}`;
    try {
      return new Store(dir, FileLock.open(lockPath));
    } catch (e) {
      throw ioError("open", lockPath, e);
    }
  }

  /** Runs `fn` under the store's exclusive lock. */
  locked<T>(fn: () => T): Promise<T> {
    return this.#lock.with(fn);
  }

  /** Closes the lock file. */
  close(): void {
    this.#lock.close();
  }

  /**
   * Every file of the directory with its trimmed content, in name order
   * (the reference's walk order). Unreadable files are left out.
   */
  scan(): StoreEntry[] {
    const names: string[] = [];
    try {
      for (const entry of Deno.readDirSync(this.dir)) {
        if (!entry.isDirectory) names.push(entry.name);
      }
    } catch {
      return [];
    }
    names.sort();
    const entries: StoreEntry[] = [];
    for (const name of names) {
      try {
        entries.push({ name, content: Deno.readTextFileSync(`${this.dir}/${name}`).trim() });
      } catch { /* gone or unreadable: the reference skips it too */ }
    }
    return entries;
  }

  /**
   * Reserves `ip` for the attachment: false when it is taken already. Also
   * records it as the last reserved address of range set `rangeId`.
   */
  reserve(id: string, ifname: string, ip: IP, rangeId: number): boolean {
    const path = `${this.dir}/${formatIP(ip)}`;
    try {
      Deno.writeTextFileSync(path, leaseKey(id, ifname), { createNew: true, mode: 0o600 });
    } catch (e) {
      if (e instanceof Deno.errors.AlreadyExists) return false;
      this.#removeQuietly(path);
      throw ioError("open", path, e);
    }
    const lastPath = `${this.dir}/${LAST_IP_PREFIX}${rangeId}`;
    try {
      Deno.writeTextFileSync(lastPath, formatIP(ip), { mode: 0o600 });
    } catch (e) {
      this.#removeQuietly(path);
      throw ioError("open", lastPath, e);
    }
    return true;
  }

  /** The address last reserved in range set `rangeId`, if recorded and valid. */
  lastReservedIP(rangeId: number): IP | null {
    try {
      return parseGoIP(Deno.readTextFileSync(`${this.dir}/${LAST_IP_PREFIX}${rangeId}`));
    } catch {
      return null;
    }
  }

  /**
   * Removes every file held by the attachment; when there is none, every
   * file of the container in the legacy format (the ID alone).
   */
  release(id: string, ifname: string): void {
    const entries = this.scan();
    const key = leaseKey(id, ifname);
    const released = entries.filter((e) => e.content === key && this.#remove(e.name));
    if (released.length === 0) {
      const legacy = id.trim();
      for (const e of entries) if (e.content === legacy) this.#remove(e.name);
    }
  }

  /** True when some file is held by the attachment (or, legacy, by the container). */
  holds(id: string, ifname: string): boolean {
    const entries = this.scan();
    const key = leaseKey(id, ifname);
    const legacy = id.trim();
    return entries.some((e) => e.content === key) || entries.some((e) => e.content === legacy);
  }

  /**
   * Releases every lease whose holder is not in `valid` (lease keys, see
   * {@link leaseKey}). Legacy leases name only a container and stay while
   * any valid attachment has that container ID. Returns the failures.
   */
  releaseAllBut(valid: ReadonlySet<string>): string[] {
    const validIds = new Set([...valid].map((key) => key.slice(0, key.indexOf(LINE_BREAK))));
    const failures: string[] = [];
    for (const entry of this.scan()) {
      if (!parseGoIP(entry.name)) continue; // lock, last_reserved_ip.N
      const live = entry.content.includes(LINE_BREAK)
        ? valid.has(entry.content)
        : entry.content !== "" && validIds.has(entry.content);
      if (live) continue;
      try {
        Deno.removeSync(`${this.dir}/${entry.name}`);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) {
          failures.push(ioError("remove", `${this.dir}/${entry.name}`, e).message);
        }
      }
    }
    return failures;
  }

  #remove(name: string): boolean {
    try {
      Deno.removeSync(`${this.dir}/${name}`);
      return true;
    } catch {
      return false;
    }
  }

  #removeQuietly(path: string): void {
    try {
      Deno.removeSync(path);
    } catch { /* nothing was created */ }
  }
}

/** The addresses leased to the attachment (or, legacy, to the container). */
export function leasesOf(entries: readonly StoreEntry[], id: string, ifname: string): IP[] {
  const key = leaseKey(id, ifname);
  const legacy = id.trim();
  const out: IP[] = [];
  for (const e of entries) {
    if (e.content !== key && e.content !== legacy) continue;
    const ip = parseGoIP(e.name);
    if (ip) out.push(ip);
  }
  return out;
}
