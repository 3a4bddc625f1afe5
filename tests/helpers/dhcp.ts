/**
 * Fixtures for the dhcp tests: a LAN with a real DHCP server (Debian's
 * dnsmasq) in a namespace of its own, behind a bridge in the namespace that
 * plays the host; the dhcp daemon (cnikit's or the reference's) started
 * inside that host; dnsmasq's lease file as the server's truth. Every
 * process is started here and ended by its PID; every namespace and file is
 * removed afterwards.
 * @module
 */

import { DIST_BIN, REFERENCE_BIN } from "./applet.ts";
import { sh, TestNetns, uniqueName, waitFor, withNamespaces } from "./netns.ts";
import { withTempDir } from "./tempdir.ts";

/** The LAN's first three octets: the server is .1, the host .2, leases .10–.250. */
export const LAN = "10.99.0";

/** True when dnsmasq is installed. */
export const haveDnsmasq = (() => {
  try {
    return new Deno.Command("dnsmasq", { args: ["--version"] }).outputSync().success;
  } catch {
    return false;
  }
})();

/** True when Debian's reference dhcp plugin (with its daemon) is installed. */
export const haveReferenceDhcp = (() => {
  try {
    return Deno.statSync(`${REFERENCE_BIN}/dhcp`).isFile;
  } catch {
    return false;
  }
})();

/** One line of dnsmasq's lease file. */
export interface ServerLease {
  expires: number;
  mac: string;
  ip: string;
  hostname: string;
  /** The client id as dnsmasq prints it (`00:63:31:…`), or `*`. */
  clientId: string;
}

/** A long-running process started by a test, its stderr collected. */
export class Started {
  readonly child: Deno.ChildProcess;
  readonly #stderr: string[] = [];
  readonly #reading: Promise<void>;
  /** True once the process has ended. */
  ended = false;

  constructor(child: Deno.ChildProcess) {
    this.child = child;
    child.status.then(() => this.ended = true);
    this.#reading = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.#stderr.push(chunk);
      }
    })();
  }

  /** What it printed on stderr so far. */
  get log(): string {
    return this.#stderr.join("");
  }

  /** Sends `signal` to it (by its PID) and waits for it to end. */
  async stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      this.child.kill(signal);
    } catch { /* ended already */ }
    const status = await this.child.status;
    await this.#reading;
    return status;
  }
}

function spawn(argv: string[]): Started {
  return new Started(
    new Deno.Command(argv[0]!, {
      args: argv.slice(1),
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn(),
  );
}

/** True when something accepts connections on the unix socket `path`. */
async function answers(path: string): Promise<boolean> {
  try {
    (await Deno.connect({ transport: "unix", path })).close();
    return true;
  } catch {
    return false;
  }
}

/** The DHCP server's side of a test LAN. */
export class DhcpServer {
  readonly ns: TestNetns;
  readonly dir: string;
  #process: Started | undefined;

  constructor(ns: TestNetns, dir: string) {
    this.ns = ns;
    this.dir = dir;
  }

  get leaseFile(): string {
    return `${this.dir}/dnsmasq.leases`;
  }

  /**
   * Starts dnsmasq in the foreground (its PID is ours to end) with `extra`
   * options, leasing `.first`–`.last` of the LAN.
   */
  async start(extra: string[] = [], first = 10, last = 250): Promise<void> {
    this.#process = spawn([
      "ip",
      "netns",
      "exec",
      this.ns.name,
      "dnsmasq",
      "--keep-in-foreground",
      "--conf-file=/dev/null",
      "--port=0",
      "--user=root",
      "--interface=lan0",
      "--bind-interfaces",
      "--no-ping",
      "--dhcp-authoritative",
      `--dhcp-range=${LAN}.${first},${LAN}.${last},255.255.255.0,2m`,
      `--dhcp-option=option:router,${LAN}.1`,
      `--dhcp-leasefile=${this.leaseFile}`,
      `--pid-file=${this.dir}/dnsmasq.pid`,
      "--log-dhcp",
      "--log-facility=-",
      ...extra,
    ]);
    await waitFor(() => this.#process!.log.includes("DHCP, sockets bound"), "dnsmasq to listen");
  }

  /** Ends dnsmasq (by its PID). */
  async stop(): Promise<void> {
    await this.#process?.stop();
    this.#process = undefined;
  }

  /**
   * The server's leases once it holds `count` of them: it writes its lease
   * file after it sends the ACK, so a read right after ADD may be early.
   */
  async waitForLeases(count: number): Promise<ServerLease[]> {
    let leases: ServerLease[] = [];
    try {
      await waitFor(
        async () => (leases = await this.leases()).length === count,
        `${count} leases`,
        10_000,
      );
    } catch (e) {
      throw new Error(`${(e as Error).message}; holds: ${JSON.stringify(leases)}`);
    }
    return leases;
  }

  /**
   * Waits until the server holds no lease. A DHCPRELEASE has no answer:
   * the server drops the lease when it gets to the packet.
   */
  async waitForNoLeases(): Promise<void> {
    await this.waitForLeases(0);
  }

  /** dnsmasq's log so far. */
  get log(): string {
    return this.#process?.log ?? "";
  }

  /**
   * The leases dnsmasq has written to its lease file. dnsmasq rewrites the
   * file in place (truncate, then write), so it is read until two reads
   * 50 ms apart agree.
   */
  async leases(): Promise<ServerLease[]> {
    const read = () => Deno.readTextFile(this.leaseFile).catch(() => "");
    let text = await read();
    for (let tries = 0; tries < 40; tries++) {
      await new Promise((r) => setTimeout(r, 50));
      const again = await read();
      if (again === text) break;
      text = again;
    }
    return text.split("\n").filter(Boolean).map((line) => {
      const [expires, mac, ip, hostname, clientId] = line.split(" ");
      return {
        expires: Number(expires),
        mac: mac!,
        ip: ip!,
        hostname: hostname!,
        clientId: clientId!,
      };
    });
  }
}

/** A client id as dnsmasq prints it: type byte 0, then the text, in hex pairs. */
export function dnsmasqClientId(id: string, typeByte = true): string {
  const bytes = [...(typeByte ? [0] : []), ...new TextEncoder().encode(id)];
  return bytes.map((b) => b.toString(16).padStart(2, "0")).join(":");
}

/** A dhcp daemon running inside the fake host. */
export class DaemonProcess extends Started {
  readonly socketPath: string;

  constructor(child: Deno.ChildProcess, socketPath: string) {
    super(child);
    this.socketPath = socketPath;
  }
}

/** How {@link DhcpLan.startDaemon} starts a daemon. */
export interface DaemonOptions {
  flags?: string[];
  bin?: string;
  socketPath?: string;
  launcher?: string[];
}

/** The test LAN: host namespace with its bridge, the server, a directory. */
export interface DhcpLan {
  host: TestNetns;
  bridge: string;
  server: DhcpServer;
  dir: string;
  /**
   * Starts a daemon in the host: cnikit's unless `bin` names the
   * reference's, with `flags` (FAST_FLAGS), on `socketPath` (a new one),
   * behind `launcher` (e.g. systemd-socket-activate) when given.
   */
  startDaemon(options?: DaemonOptions): Promise<DaemonProcess>;
}

/** Daemon flags that keep the tests short. */
export const FAST_FLAGS = ["-timeout", "2s", "-resendtimeout", "10s"];

/**
 * Runs `fn` on a fresh LAN: the host namespace holds bridge `bridge` with
 * the host's address .2 (so the host reaches the server, as on a real
 * LAN), the server namespace is plugged into it with .1 and runs dnsmasq
 * with `dnsmasqOptions`. Daemons started through the LAN are stopped and
 * everything removed afterwards.
 */
export function withDhcpLan(
  dnsmasqOptions: string[],
  fn: (lan: DhcpLan) => Promise<void>,
): Promise<void> {
  return withTempDir((dir) =>
    withNamespaces(0, async (host) => {
      const serverNs = await TestNetns.create("cks");
      const server = new DhcpServer(serverNs, dir);
      const daemons: DaemonProcess[] = [];
      try {
        const bridge = uniqueName("ckbr");
        const peer = uniqueName("cksv");
        await sh(
          "ip",
          ["-n", host.name, "-batch", "-"],
          [
            `link add ${bridge} type bridge`,
            `link set ${bridge} up`,
            `addr add ${LAN}.2/24 dev ${bridge}`,
            `link add ${peer} type veth peer name lan0 netns ${serverNs.name}`,
            `link set ${peer} master ${bridge} up`,
          ].join("\n") + "\n",
        );
        await sh(
          "ip",
          ["-n", serverNs.name, "-batch", "-"],
          [
            `addr add ${LAN}.1/24 dev lan0`,
            "link set lan0 up",
          ].join("\n") + "\n",
        );
        await server.start(dnsmasqOptions);
        let count = 0;
        await fn({
          host,
          bridge,
          server,
          dir,
          startDaemon: async (options = {}) => {
            const socketPath = options.socketPath ?? `${dir}/daemon${count++}/dhcp.sock`;
            await Deno.mkdir(socketPath.replace(/\/[^/]*$/, ""), { recursive: true });
            const argv = [
              `${options.bin ?? DIST_BIN}/dhcp`,
              "daemon",
              "-socketpath",
              socketPath,
              ...(options.flags ?? FAST_FLAGS),
            ];
            const daemon = new DaemonProcess(
              new Deno.Command("ip", {
                args: ["netns", "exec", host.name, ...(options.launcher ?? []), ...argv],
                stdin: "null",
                stdout: "null",
                stderr: "piped",
              }).spawn(),
              socketPath,
            );
            daemons.push(daemon);
            await waitFor(
              async () => await answers(socketPath) || daemon.ended,
              "the daemon's socket",
              30_000,
            );
            if (daemon.ended) {
              const status = await daemon.child.status;
              throw new Error(
                `the daemon ended before it listened (exit ${status.code}, signal ${status.signal}):\n${daemon.log}`,
              );
            }
            return daemon;
          },
        });
      } catch (e) {
        // What the daemons and the server said is what explains a failure.
        for (const daemon of daemons) {
          console.error(`--- dhcp daemon ${daemon.socketPath}\n${daemon.log}`);
        }
        console.error(`--- dnsmasq\n${server.log}`);
        throw e;
      } finally {
        for (const daemon of daemons) await daemon.stop("SIGKILL");
        await server.stop();
        await serverNs.remove();
      }
    })
  );
}
