/**
 * A place for a real container runtime (podman, containerd) to run without
 * touching the machine: the network namespace of a test's fake host, and a
 * private mount namespace in which /sys shows that host's links (as `ip
 * netns exec` arranges), /etc and /opt are overlays whose writes land in a
 * temporary folder, and /var/lib and /run/netns are empty tmpfs (libcni's
 * cache, host-local's leases, container namespaces). Every command runs
 * inside both namespaces through nsenter; the mount namespace is kept by a
 * bind mount and released at the end.
 * @module
 */

import { type ProcessOutput, sh, spawnOutput, type TestNetns } from "./netns.ts";

/** A runtime's sandbox; see the module doc. */
export class Sandbox {
  readonly dir: string;
  readonly host: TestNetns;
  readonly #mnt: string;

  private constructor(dir: string, host: TestNetns) {
    this.dir = dir;
    this.host = host;
    this.#mnt = `${dir}/mntns`;
  }

  /** Makes the sandbox for `host` with its state under `dir`. */
  static async create(host: TestNetns, dir: string): Promise<Sandbox> {
    const box = new Sandbox(dir, host);
    for (const d of ["cgroup", "etc-up", "etc-work", "opt-up", "opt-work"]) {
      await Deno.mkdir(`${dir}/${d}`, { recursive: true });
    }
    await Deno.writeTextFile(box.#mnt, "");
    // A mount namespace can only be kept on a mount that does not propagate.
    await sh("mount", ["--bind", dir, dir]);
    await sh("mount", ["--make-private", dir]);
    try {
      await sh("unshare", [`--mount=${box.#mnt}`, "--propagation", "private", "true"]);
      // sysfs shows the links of the namespace that mounts it; the cgroup
      // hierarchy under it is put back for the OCI runtime.
      await box.run("mount", ["--rbind", "/sys/fs/cgroup", `${dir}/cgroup`]);
      await box.run("mount", ["-t", "sysfs", "sysfs", "/sys"]);
      await box.run("mount", ["--rbind", `${dir}/cgroup`, "/sys/fs/cgroup"]);
      for (const [target, up] of [["/etc", "etc"], ["/opt", "opt"]] as const) {
        await box.run("mount", [
          "-t",
          "overlay",
          "overlay",
          "-o",
          `lowerdir=${target},upperdir=${dir}/${up}-up,workdir=${dir}/${up}-work`,
          target,
        ]);
      }
      for (const target of ["/var/lib", "/run/netns"]) {
        await box.run("mount", ["-t", "tmpfs", "tmpfs", target]);
      }
    } catch (e) {
      await box.close();
      throw e;
    }
    return box;
  }

  /** The nsenter prefix that puts a command inside the sandbox. */
  argv(cmd: string, args: string[]): string[] {
    return ["nsenter", `--mount=${this.#mnt}`, `--net=${this.host.path}`, cmd, ...args];
  }

  /** Runs a command inside; never throws on failure. */
  exec(cmd: string, args: string[], env?: Record<string, string>): Promise<ProcessOutput> {
    const [program, ...rest] = this.argv(cmd, args);
    return spawnOutput(program!, rest, env ? { env } : {});
  }

  /** Runs a command inside; throws with its stderr when it fails. */
  async run(cmd: string, args: string[], env?: Record<string, string>): Promise<string> {
    const out = await this.exec(cmd, args, env);
    if (out.code !== 0) throw new Error(`${cmd} ${args.join(" ")} failed: ${out.stderr}`);
    return out.stdout;
  }

  /** Releases the mount namespace (its mounts go with the last process inside). */
  async close(): Promise<void> {
    await sh("umount", ["-l", this.#mnt]).catch(() => {});
    await sh("umount", ["-l", this.dir]).catch(() => {});
  }
}
