/**
 * Small TCP/UDP servers and clients inside test namespaces, with Debian's
 * socat: a server answers every connection (or datagram) with a fixed word,
 * so a client learns which container it reached. Servers are processes
 * this test starts and ends by PID; traffic only ever goes to addresses of
 * namespaces the test created.
 * @module
 */

import { spawnOutput, type TestNetns } from "./netns.ts";

/** True when socat is installed (CI installs it). */
export const haveSocat = (() => {
  try {
    return new Deno.Command("socat", { args: ["-V"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
})();

/** A transport protocol a server speaks. */
export type Proto = "tcp" | "udp";

/** A running server; {@link Server.stop} ends it. */
export class Server {
  private constructor(private readonly child: Deno.ChildProcess) {}

  /**
   * Starts a server in `ns` on `port` (IPv4 and IPv6, every address) that
   * answers `word`.
   */
  static async start(ns: TestNetns, proto: Proto, port: number, word: string): Promise<Server> {
    const listen = proto === "tcp"
      ? `TCP6-LISTEN:${port},ipv6only=0,reuseaddr,fork`
      : `UDP6-RECVFROM:${port},ipv6only=0,reuseaddr,fork`;
    const child = new Deno.Command("ip", {
      args: ["netns", "exec", ns.name, "socat", listen, `SYSTEM:echo ${word}`],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const server = new Server(child);
    // Listening as soon as ss shows the socket.
    const flag = proto === "tcp" ? "-ltnH" : "-lunH";
    for (let i = 0; i < 100; i++) {
      const out = await spawnOutput("ip", [
        "netns",
        "exec",
        ns.name,
        "ss",
        flag,
        `sport = :${port}`,
      ]);
      if (out.stdout.trim()) return server;
      await new Promise((r) => setTimeout(r, 50));
    }
    await server.stop();
    throw new Error(`${proto} server on port ${port} in ${ns.name} did not start`);
  }

  /** Ends the server (its PID only) and waits for it. */
  async stop(): Promise<void> {
    try {
      this.child.kill("SIGTERM");
    } catch { /* already gone */ }
    await this.child.status;
  }
}

/** Runs `fn` with servers started by `start`, and stops them all afterwards. */
export async function withServers(
  start: () => Promise<Server>[],
  fn: () => Promise<void>,
): Promise<void> {
  const settled = await Promise.allSettled(start());
  const servers = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
  try {
    const failed = settled.find((s) => s.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    await fn();
  } finally {
    await Promise.all(servers.map((s) => s.stop()));
  }
}

/**
 * Connects from `from` to `host`:`port` and returns what the server said
 * (trimmed), or undefined when nothing answered within `seconds` (10).
 * `sourcePort` pins the client's port (to reuse a conntrack entry).
 */
export async function request(
  from: TestNetns,
  proto: Proto,
  host: string,
  port: number,
  options: { seconds?: number; sourcePort?: number } = {},
): Promise<string | undefined> {
  const addr = host.includes(":") ? `[${host}]` : host;
  // Generous by default: a loaded machine has taken over 3 s for a hairpin answer (the server
  // forks a shell per connection). Tests that expect no answer pass a short `seconds`.
  const seconds = options.seconds ?? 10;
  const source = options.sourcePort ? `,sourceport=${options.sourcePort},reuseaddr` : "";
  const target = proto === "tcp"
    ? `TCP:${addr}:${port},connect-timeout=${seconds}${source}`
    : `UDP:${addr}:${port}${source}`;
  const out = await spawnOutput(
    "ip",
    [
      "netns",
      "exec",
      from.name,
      "socat",
      "-t",
      String(seconds),
      "-T",
      String(seconds),
      "-",
      target,
    ],
    { stdin: "ping\n" },
  );
  const text = out.stdout.trim();
  return text === "" ? undefined : text;
}
