/**
 * `cnikit install`: the install-cni step of a Kubernetes DaemonSet. Copies
 * this executable into the node's CNI bin directory and makes one symlink
 * per plugin applet beside it, each by a rename over the old file, so a
 * runtime exec'ing a plugin meanwhile finds the old program or the new one,
 * never half of one. Files of other plugins stay as they are. Then it
 * writes the node's CNI list, when the node already holds a subnet (saved
 * by an earlier agent run in --state-dir); otherwise the agent writes it as
 * soon as it has leased one, and the node stays NotReady until then.
 * @module
 */

import { baseName, CHUNK_DIR, executablePath } from "../lib/cni/paths.ts";
import { parseCIDR } from "../lib/cni/ipnet.ts";
import { writeList } from "./cniconf.ts";
import { type FlagSpec, flagsUsage, parseFlags, required, UsageError } from "./flags.ts";
import { LIST_FLAGS } from "./main.ts";
import { readSavedSubnet } from "./state.ts";

/** The flags of `cnikit install`. */
export const INSTALL_FLAGS: readonly FlagSpec[] = [
  { name: "bin-dir", value: "DIR", help: "the node's CNI bin directory", default: "/opt/cni/bin" },
  {
    name: "keep-existing",
    help: "leave a file that is not cnikit's under a plugin's name as it is",
  },
  ...LIST_FLAGS,
  { name: "help", help: "show this help" },
];

function usage(): string {
  return `Usage: cnikit install [flags]

Copies cnikit into the CNI bin directory with a symlink per plugin, keeping
every other file there, and writes the node's CNI list when the node already
holds a subnet.

${flagsUsage(INSTALL_FLAGS)}`;
}

function realPath(path: string): string | undefined {
  try {
    return Deno.realPathSync(path);
  } catch {
    return undefined;
  }
}

/** Replaces `dest` by a copy of `source` (mode 0755) through a rename. */
async function copyAtomically(source: string, dest: string): Promise<void> {
  const temp = `${dest.slice(0, dest.lastIndexOf("/"))}/.${baseName(dest)}.tmp-${Deno.pid}`;
  try {
    await Deno.copyFile(source, temp);
    await Deno.chmod(temp, 0o755);
    await Deno.rename(temp, dest);
  } catch (e) {
    await Deno.remove(temp).catch(() => {});
    throw e;
  }
}

/**
 * Copies a launcher build's chunk folder (none in a compiled build): the
 * content-named chunks first and the entry last, each through a rename, so
 * a plugin starting meanwhile loads the old build or the new one whole.
 */
async function copyChunks(from: string, to: string): Promise<void> {
  let names: string[];
  try {
    names = [...Deno.readDirSync(from)].filter((e) => e.isFile).map((e) => e.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  await Deno.mkdir(to, { recursive: true });
  names.sort((a, b) => Number(a === "main.js") - Number(b === "main.js"));
  for (const name of names) await copyAtomically(`${from}/${name}`, `${to}/${name}`);
}

/** Replaces `dest` by a symlink to `target` through a rename. */
async function symlinkAtomically(target: string, dest: string): Promise<void> {
  const temp = `${dest.slice(0, dest.lastIndexOf("/"))}/.${baseName(dest)}.tmp-${Deno.pid}`;
  await Deno.remove(temp).catch(() => {});
  await Deno.symlink(target, temp);
  try {
    await Deno.rename(temp, dest);
  } catch (e) {
    await Deno.remove(temp).catch(() => {});
    throw e;
  }
}

/** What is at `path`: nothing, cnikit's link, or something else. */
async function occupant(path: string): Promise<"none" | "ours" | "other"> {
  try {
    const info = await Deno.lstat(path);
    if (info.isSymlink && (await Deno.readLink(path)) === "cnikit") return "ours";
    return "other";
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "none";
    throw e;
  }
}

/** `cnikit install …` with the plugin applets' names; returns the exit code. */
export async function installMain(args: string[], plugins: readonly string[]): Promise<number> {
  try {
    const { values, positionals } = parseFlags(INSTALL_FLAGS, args);
    if (values.get("help") === "true") {
      console.log(usage());
      return 0;
    }
    if (positionals.length) throw new UsageError(`unexpected argument "${positionals[0]}"`);
    const binDir = required(values, "bin-dir").replace(/\/+$/, "");
    await Deno.mkdir(binDir, { recursive: true });
    const self = executablePath();
    const dest = `${binDir}/cnikit`;
    const real = realPath(self) ?? self;
    if (real !== realPath(dest)) {
      await copyChunks(
        `${real.slice(0, real.lastIndexOf("/"))}/${CHUNK_DIR}`,
        `${binDir}/${CHUNK_DIR}`,
      );
      await copyAtomically(self, dest);
    }
    const kept: string[] = [];
    for (const name of plugins) {
      const path = `${binDir}/${name}`;
      if (values.get("keep-existing") === "true" && await occupant(path) === "other") {
        kept.push(name);
        continue;
      }
      await symlinkAtomically("cnikit", path);
    }
    const linked = plugins.filter((p) => !kept.includes(p));
    console.log(
      `cnikit install: ${dest} with ${linked.join(", ")}` +
        (kept.length ? `; kept the existing ${kept.join(", ")}` : ""),
    );
    const stateDir = required(values, "state-dir");
    const list = `${required(values, "cni-conf-dir")}/${required(values, "cni-conf-file")}`;
    const saved = await readSavedSubnet(stateDir);
    const subnet = saved && parseCIDR(saved.subnet);
    if (!saved || !subnet) {
      console.log(
        `cnikit install: no subnet saved in ${stateDir} yet; the agent writes ${list} once it has leased one`,
      );
      return 0;
    }
    const written = await writeList(list, {
      networkName: required(values, "network-name"),
      subnet,
      mtu: saved.mtu,
      ipamDataDir: required(values, "ipam-data-dir"),
    });
    console.log(`cnikit install: ${written ? "wrote" : "kept"} ${list} (${saved.subnet})`);
    return 0;
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`cnikit install: ${e.message}\nRun "cnikit install --help" for the flags.`);
      return 2;
    }
    console.error(`cnikit install: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}
