/**
 * host-local: IPAM from ranges of addresses, with leases kept as files on the
 * local disk (see store.ts). ADD allocates one address per range set, DEL
 * releases what the attachment holds, CHECK looks for a lease, GC releases
 * leases of attachments the runtime no longer knows, STATUS checks that the
 * store is writable.
 * @module
 */

import { CniError, ErrorCode, invalidConfig } from "../../lib/cni/errors.ts";
import { formatIP, type IP, ipEquals } from "../../lib/cni/ipnet.ts";
import type { CmdArgs, Plugin } from "../../lib/cni/skel.ts";
import type { Result } from "../../lib/cni/spec/schemas.ts";
import { Allocator } from "./allocator.ts";
import { type HostLocalConfig, loadHostLocalConfig, parseResolvConf, rangeFor } from "./config.ts";
import { ioError, leaseKey, Store, storeDir } from "./store.ts";

function load(args: CmdArgs): HostLocalConfig {
  return loadHostLocalConfig(args.config, args.args);
}

function readResolvConf(path: string): Result["dns"] {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    throw ioError("open", path, e);
  }
  return parseResolvConf(text);
}

/** Re-raises an allocation failure with the range set named, keeping its code. */
function forRange(index: number, error: unknown): CniError {
  const cni = error instanceof CniError
    ? error
    : new CniError(ErrorCode.internal, error instanceof Error ? error.message : String(error));
  return new CniError(
    cni.code,
    `failed to allocate for range ${index}: ${cni.message}`,
    cni.details,
  );
}

async function add(args: CmdArgs): Promise<Result> {
  const conf = load(args);
  const result: Result = { cniVersion: "1.1.0", ips: [] };
  if (conf.resolvConf) result.dns = readResolvConf(conf.resolvConf);
  const store = Store.open(conf.dataDir, conf.name);
  const done: Allocator[] = [];
  const rollback = async () => {
    for (const a of done) await a.release(args.containerId, args.ifname).catch(() => {});
  };
  try {
    const requested: IP[] = [];
    for (const ip of conf.requestedIPs) {
      if (!requested.some((r) => ipEquals(r, ip))) requested.push(ip);
    }
    for (const [index, set] of conf.ranges.entries()) {
      const allocator = new Allocator(set, store, index);
      const wanted = requested.findIndex((ip) => rangeFor(set, ip));
      const ip = wanted >= 0 ? requested.splice(wanted, 1)[0] : undefined;
      try {
        result.ips!.push(await allocator.get(args.containerId, args.ifname, ip));
      } catch (e) {
        await rollback();
        throw forRange(index, e);
      }
      done.push(allocator);
    }
    if (requested.length) {
      await rollback();
      throw invalidConfig(
        `failed to allocate all requested IPs: ${requested.map(formatIP).join(" ")}`,
      );
    }
  } finally {
    store.close();
  }
  if (conf.routes.length) result.routes = conf.routes;
  return result;
}

async function del(args: CmdArgs): Promise<void> {
  const conf = load(args);
  const store = Store.openExisting(conf.dataDir, conf.name);
  if (!store) return;
  try {
    // One release per range set, each under the lock, as the reference does.
    for (const [index, set] of conf.ranges.entries()) {
      await new Allocator(set, store, index).release(args.containerId, args.ifname);
    }
  } finally {
    store.close();
  }
}

async function check(args: CmdArgs): Promise<void> {
  const conf = load(args);
  const store = Store.openExisting(conf.dataDir, conf.name);
  let found = false;
  if (store) {
    try {
      found = await store.locked(() => store.holds(args.containerId, args.ifname));
    } finally {
      store.close();
    }
  }
  if (!found) {
    throw new CniError(
      ErrorCode.internal,
      `host-local: Failed to find address added by container ${args.containerId}`,
    );
  }
}

function hasAttachmentList(config: Record<string, unknown>): boolean {
  return ["cni.dev/valid-attachments", "cni.dev/attachments"].some((k) => k in config);
}

async function gc(args: CmdArgs): Promise<void> {
  const conf = load(args);
  // Without a list the runtime has said nothing about what is valid; an
  // explicit empty list (or null, libcni's nil slice) means nothing is.
  if (!hasAttachmentList(args.config)) return;
  const store = Store.openExisting(conf.dataDir, conf.name);
  if (!store) return;
  let failures: string[];
  try {
    const valid = new Set(
      (args.validAttachments ?? []).map((a) => leaseKey(a.containerID, a.ifname)),
    );
    failures = await store.locked(() => store.releaseAllBut(valid));
  } finally {
    store.close();
  }
  if (failures.length) {
    throw new CniError(
      ErrorCode.ioFailure,
      "host-local: GC failed to release leases",
      failures.join("; "),
    );
  }
}

function status(args: CmdArgs): Promise<void> {
  const conf = load(args);
  try {
    Store.probeWritable(conf.dataDir, conf.name);
  } catch (e) {
    throw new CniError(
      ErrorCode.pluginNotAvailable,
      `host-local: data directory ${storeDir(conf.dataDir, conf.name)} is not writable`,
      (e as Error).message,
    );
  }
  return Promise.resolve();
}

/** The host-local IPAM plugin. */
export const hostLocal: Plugin = { name: "host-local", add, del, check, gc, status };
