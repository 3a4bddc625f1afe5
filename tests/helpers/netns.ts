/**
 * Test fixtures: throwaway network namespaces with unique names, one that
 * plays the host and any number of containers, removed afterwards even when
 * the test fails. Plugins run inside the fake host so the real host's links,
 * routes and firewall are never touched.
 * @module
 */

let counter = 0;

/** A short unique name (interface names are limited to 15 bytes). */
export function uniqueName(prefix: string): string {
  const rand = crypto.getRandomValues(new Uint8Array(3));
  const hex = Array.from(rand, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${prefix}${hex}${(counter++).toString(36)}`.slice(0, 15);
}

/** Runs a command; throws with its stderr when it fails. */
export async function sh(cmd: string, args: string[], stdin?: string): Promise<string> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(stdin));
    await w.close();
  }
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `${cmd} ${args.join(" ")} failed (${out.code}): ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  return text;
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

/** True when this process may create namespaces (root with CAP_SYS_ADMIN). */
export const canNetns = (() => {
  try {
    return new Deno.Command("unshare", { args: ["--net", "true"] }).outputSync().success;
  } catch {
    return false;
  }
})();
