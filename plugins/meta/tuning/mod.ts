/**
 * tuning: a chained plugin that sets network sysctls and link attributes
 * (MAC, promiscuous mode, MTU, all-multicast, queue length) of the
 * container's interface, saves what it changed and puts it back on DEL.
 *
 * Sysctls are written directly inside the namespace; the link is read and
 * changed by one `ip -batch` there, so an ADD costs one process.
 * @module
 */

import * as z from "zod/mini";
import { parseCniArgs } from "../../../lib/cni/args.ts";
import { GoInt, goStruct, NETCONF_FIELDS, parseConf } from "../../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig } from "../../../lib/cni/errors.ts";
import { checkFailed } from "../../../lib/net/check.ts";
import { requireTools } from "../../../lib/net/exec.ts";
import { ipBatch, IpBatchError, type LinkInfo } from "../../../lib/net/ip.ts";
import { getLink, parseMac } from "../../../lib/net/link.ts";
import { netnsExists, requireNetns, withNetnsSync } from "../../../lib/net/netns.ts";
import { withRollback } from "../../../lib/cni/rollback.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";
import {
  backupPath,
  currentAttrs,
  gcBackups,
  type LinkAttrs,
  readBackup,
  removeBackup,
  setCommands,
  writeBackup,
} from "./backup.ts";
import {
  checkAllowlist,
  checkDuplicateSysctlKeys,
  DEFAULT_ALLOWLIST,
  readAllowlist,
  sysctlPath,
} from "./sysctl.ts";

const DEFAULT_DATA_DIR = "/run/cni/tuning";

const Sysctls = z.record(z.string(), z.string());
const Overrides = goStruct({
  sysctl: z.optional(Sysctls),
  mac: z.optional(z.string()),
  promisc: z.optional(z.boolean()),
  mtu: z.optional(GoInt),
  allmulti: z.optional(z.boolean()),
  txQLen: z.optional(GoInt),
});

const TuningConf = goStruct({
  ...NETCONF_FIELDS,
  dataDir: z.optional(z.string()),
  sysctl: z.optional(Sysctls),
  mac: z.optional(z.string()),
  promisc: z.optional(z.boolean()),
  mtu: z.optional(GoInt),
  txQLen: z.optional(GoInt),
  allmulti: z.optional(z.boolean()),
  runtimeConfig: z.optional(goStruct({ mac: z.optional(z.string()) })),
  args: z.optional(goStruct({ cni: z.optional(Overrides) })),
});

/** What an attachment is to get: sysctl files with values, and link attributes. */
interface Tuning {
  name: string;
  dataDir: string;
  /** Config key → value, the args' keys merged in. */
  sysctl: Record<string, string>;
  link: LinkAttrs;
  /** The configured promisc, false included: CHECK wants it off then. */
  promisc: boolean;
}

function dataDirOf(config: Record<string, unknown>): string {
  const conf = parseConf(goStruct({ dataDir: z.optional(z.string()) }), config);
  return conf.dataDir || DEFAULT_DATA_DIR;
}

/**
 * The config with its overrides applied in the reference's order: the
 * config, then CNI_ARGS `MAC`, then `runtimeConfig.mac`, then `args.cni`.
 */
function loadTuning(args: CmdArgs): Tuning {
  const conf = parseConf(TuningConf, args.config);
  const cniArgs = parseCniArgs(args.args, ["MAC"]);
  const over = conf.args?.cni ?? {};
  const sources: [string | undefined, number][] = [
    [conf.mac, ErrorCode.invalidNetworkConfig],
    [cniArgs.MAC, ErrorCode.invalidEnvironment],
    [conf.runtimeConfig?.mac, ErrorCode.invalidNetworkConfig],
    [over.mac, ErrorCode.invalidNetworkConfig],
  ];
  let mac: string | undefined;
  for (const [value, code] of sources) {
    if (value === undefined || value === "") continue;
    const parsed = parseMac(value);
    if (!parsed) {
      throw new CniError(code, `invalid args ${value} for MAC addr: not a unicast Ethernet MAC`);
    }
    mac = parsed;
  }
  const promisc = over.promisc ?? conf.promisc ?? false;
  const mtu = over.mtu ?? conf.mtu ?? 0;
  const txQLen = over.txQLen ?? conf.txQLen;
  const allmulti = over.allmulti ?? conf.allmulti;
  if (mtu < 0) throw invalidConfig(`invalid mtu ${mtu}`);
  if (txQLen !== undefined && txQLen < 0) throw invalidConfig(`invalid txQLen ${txQLen}`);
  const link: LinkAttrs = {};
  if (mac) link.mac = mac;
  if (promisc) link.promisc = true;
  if (mtu) link.mtu = mtu;
  if (allmulti !== undefined) link.allmulti = allmulti;
  if (txQLen !== undefined) link.txQLen = txQLen;
  return {
    name: conf.name,
    dataDir: conf.dataDir || DEFAULT_DATA_DIR,
    sysctl: { ...conf.sysctl, ...over.sysctl },
    link,
    promisc,
  };
}

/** The sysctl files and values, every key checked before anything is written. */
function sysctlFiles(tuning: Tuning, ifname: string): [string, string][] {
  return Object.entries(tuning.sysctl).map(([key, value]) => [sysctlPath(key, ifname), value]);
}

function requirePrev(args: CmdArgs): Result {
  if (!args.prevResult) throw invalidConfig("Required prevResult missing");
  return args.prevResult;
}

/**
 * Writes the sysctls inside the container and returns the files written
 * with the values they had. On a failure, what was written is put back.
 */
function writeSysctls(netns: string, files: [string, string][]): [string, string][] {
  const before: [string, string][] = [];
  let failure: CniError | undefined;
  withNetnsSync(netns, () => {
    for (const [file, value] of files) {
      try {
        const old = Deno.readTextFileSync(file);
        Deno.writeTextFileSync(file, value);
        before.push([file, old]);
      } catch (e) {
        failure = new CniError(
          ErrorCode.ioFailure,
          `failed to set sysctl ${file} to ${JSON.stringify(value)}: ${(e as Error).message}`,
        );
        return;
      }
    }
  });
  if (failure) {
    restoreSysctls(netns, before);
    throw failure;
  }
  return before;
}

/** Writes back the values {@link writeSysctls} replaced, newest first, as far as it can. */
function restoreSysctls(netns: string, before: [string, string][]): void {
  withNetnsSync(netns, () => {
    for (const [file, value] of [...before].reverse()) {
      try {
        Deno.writeTextFileSync(file, value);
      } catch { /* best effort: this only follows another failure */ }
    }
  });
}

async function add(args: CmdArgs): Promise<Result> {
  checkDuplicateSysctlKeys(new TextDecoder().decode(args.stdin));
  const tuning = loadTuning(args);
  const allowlist = readAllowlist(args.env.CNIKIT_TUNING_ALLOWLIST || DEFAULT_ALLOWLIST);
  if (allowlist) checkAllowlist(Object.keys(tuning.sysctl), allowlist);
  const files = sysctlFiles(tuning, args.ifname);
  const prev = structuredClone(requirePrev(args));
  requireNetns(args.netns);

  return await withRollback(async (rollback) => {
    if (files.length) {
      const before = writeSysctls(args.netns, files);
      rollback.defer("sysctls", () => restoreSysctls(args.netns, before));
    }
    const changes = setCommands(args.ifname, tuning.link, "add");
    if (changes.length) {
      let before: LinkInfo;
      try {
        [[before]] = await ipBatch([["link", "show", "dev", args.ifname], ...changes], {
          netns: args.netns,
        }) as [[LinkInfo]];
      } catch (e) {
        if (!(e instanceof IpBatchError)) throw e;
        if (e.line === 1) {
          throw new CniError(ErrorCode.ioFailure, `failed to get "${args.ifname}": ${e.message}`);
        }
        const [[link]] = e.outputs as [[LinkInfo]];
        await restoreLink(args.netns, args.ifname, currentAttrs(link, tuning.link));
        throw e;
      }
      const saved = currentAttrs(before, tuning.link);
      rollback.defer("link attributes", () => restoreLink(args.netns, args.ifname, saved));
      writeBackup(backupPath(tuning.dataDir, args.containerId, args.ifname), saved, tuning.name);
    }
    if (tuning.link.mac) {
      for (const iface of prev.interfaces ?? []) {
        if (iface.name === args.ifname) iface.mac = tuning.link.mac;
      }
    }
    return prev;
  });
}

/** Gives the link back `attrs`, trying every step; throws what failed. */
async function restoreLink(netns: string, ifname: string, attrs: LinkAttrs): Promise<void> {
  await ipBatch(setCommands(ifname, attrs, "restore"), { netns, force: true });
}

/**
 * Puts back what ADD changed. Always succeeds: what cannot be restored is
 * reported on stderr. The backup stays only while a restore may still work
 * later (the namespace not named, or a step failing).
 */
async function del(args: CmdArgs): Promise<void> {
  const file = backupPath(dataDirOf(args.config), args.containerId, args.ifname);
  // Without CNI_NETNS the namespace may still be alive: keep the backup for
  // a later DEL (or GC).
  if (!args.netns) return;
  const saved = readBackup(file);
  if (saved === undefined) return;
  if (saved === "corrupt") {
    console.error(`tuning: ${file} is not a tuning backup; removed`);
    removeBackup(file);
    return;
  }
  if (!netnsExists(args.netns)) {
    removeBackup(file);
    return;
  }
  const commands = [
    ["link", "show", "dev", args.ifname],
    ...setCommands(args.ifname, saved, "restore"),
  ];
  try {
    await ipBatch(commands, { netns: args.netns, force: true });
  } catch (e) {
    const gone = e instanceof IpBatchError && /Command failed -:1\b/.test(e.message);
    if (!gone) {
      console.error(`tuning: failed to restore ${args.ifname}: ${(e as Error).message}`);
      return;
    }
  }
  removeBackup(file);
}

async function check(args: CmdArgs): Promise<void> {
  checkDuplicateSysctlKeys(new TextDecoder().decode(args.stdin));
  const tuning = loadTuning(args);
  const files = sysctlFiles(tuning, args.ifname);
  requirePrev(args);
  requireNetns(args.netns);
  const words = (s: string) => s.trim().split(/\s+/).join(" ");
  const current = withNetnsSync(args.netns, () =>
    files.map(([file]) => {
      try {
        return Deno.readTextFileSync(file);
      } catch (e) {
        return e as Error;
      }
    }));
  for (const [i, [file, want]] of files.entries()) {
    const have = current[i]!;
    if (have instanceof Error) checkFailed(`failed to read ${file}: ${have.message}`);
    // The kernel separates the numbers of a multi-value sysctl with tabs.
    if (words(have as string) !== words(want)) {
      checkFailed(
        `Error: Tuning configured value of ${file} is ${want}, current value is ${
          (have as string).replace(/\n$/, "")
        }`,
      );
    }
  }
  const link = await getLink(args.ifname, args.netns) ??
    checkFailed(`Cannot find container link ${args.ifname}`);
  const want = tuning.link;
  if (want.mac && want.mac !== link.address) {
    checkFailed(
      `Error: Tuning configured Ethernet of ${args.ifname} is ${want.mac}, current value is ${link.address}`,
    );
  }
  const promisc = link.flags.includes("PROMISC");
  if (promisc !== tuning.promisc) {
    checkFailed(
      `Error: Tuning link ${args.ifname} configured promisc is ${tuning.promisc}, current value is ${
        promisc ? 1 : 0
      }`,
    );
  }
  if (want.mtu && want.mtu !== link.mtu) {
    checkFailed(
      `Error: Tuning configured MTU of ${args.ifname} is ${want.mtu}, current value is ${link.mtu}`,
    );
  }
  const allmulti = link.flags.includes("ALLMULTI");
  if (want.allmulti !== undefined && want.allmulti !== allmulti) {
    checkFailed(
      `Error: Tuning configured all-multicast mode of ${args.ifname} is ${want.allmulti}, current value is ${allmulti}`,
    );
  }
  // `ip -j` leaves a queue length of 0 out.
  const txqlen = link.txqlen ?? 0;
  if (want.txQLen !== undefined && want.txQLen !== txqlen) {
    checkFailed(
      `Error: Tuning configured Transmit Queue Length of ${args.ifname} is ${want.txQLen}, current value is ${txqlen}`,
    );
  }
}

function gc(args: CmdArgs): Promise<void> {
  const conf = parseConf(
    goStruct({ name: z.string(), dataDir: z.optional(z.string()) }),
    args.config,
  );
  gcBackups(conf.dataDir || DEFAULT_DATA_DIR, conf.name, args.validAttachments ?? []);
  return Promise.resolve();
}

/** STATUS: the `ip` tool must be at hand. */
function status(): Promise<void> {
  return requireTools("ip");
}

/** The tuning plugin. */
export const tuning: Plugin = { name: "tuning", add, del, check, gc, status };
