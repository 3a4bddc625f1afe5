/**
 * Test fixtures: throwaway network namespaces with unique names, one that
 * plays the host and any number of containers, removed afterwards even when
 * the test fails. Plugins run inside the fake host so the real host's links,
 * routes and firewall are never touched.
 * @module
 */

import { withTempDir } from "./tempdir.ts";

let counter = 0;

/** A short unique name (interface names are limited to 15 bytes). */
export function uniqueName(prefix: string): string {
  const rand = crypto.getRandomValues(new Uint8Array(3));
  const hex = Array.from(rand, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${prefix}${hex}${(counter++).toString(36)}`.slice(0, 15);
}

/** What a finished process printed and how it ended. */
export interface ProcessOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/** Options for {@link spawnOutput}. */
export interface SpawnOptions {
  /** Added to the inherited environment, or the whole of it with `clearEnv`. */
  env?: Record<string, string>;
  clearEnv?: boolean;
  /** Written to the process's stdin; none when undefined. */
  stdin?: string;
  /** The working folder. */
  cwd?: string;
}

/** Runs a command to its end and returns its exit code and output; never throws on failure. */
export async function spawnOutput(
  cmd: string,
  args: string[],
  options: SpawnOptions = {},
): Promise<ProcessOutput> {
  const child = new Deno.Command(cmd, {
    args,
    ...(options.env ? { env: options.env } : {}),
    ...(options.clearEnv ? { clearEnv: true } : {}),
    ...(options.cwd ? { cwd: options.cwd } : {}),
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(options.stdin));
    await w.close();
  }
  const out = await child.output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

/** Runs a command; throws with its stderr when it fails. */
export async function sh(cmd: string, args: string[], stdin?: string): Promise<string> {
  const out = await spawnOutput(cmd, args, { stdin });
  if (out.code !== 0) {
    throw new Error(`${cmd} ${args.join(" ")} failed (${out.code}): ${out.stderr}`);
  }
  return out.stdout;
}

/** A network namespace created for a test. */
export class TestNetns {
  readonly name: string;
  readonly path: string;

  private constructor(name: string) {
    this.name = name;
    this.path = `/run/netns/${name}`;
  }

  /** Creates a namespace with `lo` up. */
  static async create(prefix = "ck"): Promise<TestNetns> {
    const ns = new TestNetns(uniqueName(prefix));
    await sh("ip", ["netns", "add", ns.name]);
    await sh("ip", ["-n", ns.name, "link", "set", "lo", "up"]);
    return ns;
  }

  /** Runs a command inside this namespace. */
  exec(cmd: string, args: string[], stdin?: string): Promise<string> {
    return sh("ip", ["netns", "exec", this.name, cmd, ...args], stdin);
  }

  /** `ip -j <args>` inside this namespace, parsed. */
  async ipJson<T = unknown>(...args: string[]): Promise<T> {
    const out = await sh("ip", ["-n", this.name, "-j", ...args]);
    return JSON.parse(out || "[]") as T;
  }

  /** Removes the namespace (and with it every link inside). */
  async remove(): Promise<void> {
    await sh("ip", ["netns", "del", this.name]).catch(() => {});
  }
}

/**
 * Runs `fn` with a fresh fake host namespace and `containers` container
 * namespaces, and removes all of them afterwards.
 */
export async function withNamespaces(
  containers: number,
  fn: (host: TestNetns, ...containers: TestNetns[]) => Promise<void>,
): Promise<void> {
  const created: TestNetns[] = [];
  try {
    const host = await TestNetns.create("ckh");
    created.push(host);
    for (let i = 0; i < containers; i++) created.push(await TestNetns.create("ckc"));
    await fn(host, ...created.slice(1));
  } finally {
    await Promise.all(created.map((ns) => ns.remove()));
  }
}

/**
 * {@link withNamespaces} with a fresh temporary directory for the plugins'
 * state as well (a host-local dataDir), passed first; all removed afterwards.
 */
export function withDataDirAndNamespaces(
  containers: number,
  fn: (dataDir: string, host: TestNetns, ...containers: TestNetns[]) => Promise<void>,
): Promise<void> {
  return withTempDir((dataDir) =>
    withNamespaces(containers, (host, ...ctrs) => fn(dataDir, host, ...ctrs))
  );
}

/** True when this process may create namespaces (root with CAP_SYS_ADMIN). */
export const canNetns = (() => {
  try {
    return new Deno.Command("unshare", { args: ["--net", "true"] }).outputSync().success;
  } catch {
    return false;
  }
})();

/** Polls `condition` every 50 ms for up to `ms` (5 s); throws naming `what` when it never holds. */
export async function waitFor(
  condition: () => Promise<boolean> | boolean,
  what: string,
  ms = 5000,
): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
