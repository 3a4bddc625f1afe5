/**
 * `dhcp daemon`: the long-running process that acquires and keeps DHCP
 * leases for containers, serving the dhcp plugin over a unix socket (its
 * own, or one passed by systemd socket activation). One lease per client id;
 * calls for different client ids run side by side, calls for one id one
 * after the other. Leases are kept on disk, so a restarted daemon maintains
 * and releases the leases of the containers that still live.
 * @module
 */

import type { Server, Socket } from "node:net";
import * as z from "zod/mini";
import { CniError, ErrorCode } from "../../lib/cni/errors.ts";
import { acquire, type Acquired, type ClientConfig, DhcpError, releaseOnLink } from "./client.ts";
import { identityOf, Lease, type LeaseContext } from "./lease.ts";
import { MessageError } from "./message.ts";
import { OptionError } from "./options.ts";
import { SocketError } from "./socket.ts";
import { LeaseStore } from "./store.ts";
import {
  DEFAULT_SOCKET_PATH,
  type LeaseRequest,
  type LeaseView,
  type ReleaseRequest,
  type Request,
  type Response,
  type WireError,
} from "./wire.ts";

const MAX_REQUEST_BYTES = 1 << 20;

/** The daemon's command line, as the reference's flags. */
export interface DaemonFlags {
  socketPath: string;
  pidFile: string;
  hostPrefix: string;
  stateDir: string;
  broadcast: boolean;
  timeoutMs: number;
  resendMaxMs: number;
  resendTimeoutMs: number;
}

const USAGE = `Usage: dhcp daemon [flags]
  -socketpath PATH     unix socket to listen on (default ${DEFAULT_SOCKET_PATH}; or one socket
                       passed by systemd socket activation)
  -pidfile PATH        write the daemon's PID there (absolute path)
  -hostprefix PATH     prefix of the host's root (the daemon runs in a container)
  -statedir PATH       where leases are kept across restarts (default: dhcp-leases/ beside
                       the socket)
  -broadcast           ask servers to broadcast their replies
  -timeout D           how long one message waits for its answer (default 10s)
  -resendmax D         longest delay between attempts (default 1m2s)
  -resendtimeout D     give up acquiring after this long (default 3m28s)
Durations as Go writes them: 500ms, 10s, 1m30s, 1h.`;

const UNITS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3,
  "μs": 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/** A Go duration (`1m30s`, `1.5h`, `250ms`, `0`) in milliseconds; null when it is not one. */
export function parseGoDuration(text: string): number | null {
  if (text === "0") return 0;
  const match = /^([-+]?)((?:\d+(?:\.\d*)?|\.\d+)[a-zµμ]+)+$/.exec(text);
  if (!match) return null;
  let total = 0;
  for (const [, number, unit] of text.matchAll(/(\d+(?:\.\d*)?|\.\d+)([a-zµμ]+)/g)) {
    const scale = UNITS[unit!];
    if (scale === undefined) return null;
    total += Number(number) * scale;
  }
  return match[1] === "-" ? -total : total;
}

/** A flag error, as Go's flag package words it; exit status 2. */
class FlagError extends Error {}

/**
 * Parses the daemon's flags with Go's rules: `-name value`, `-name=value`,
 * `--name` as well; booleans take `=false`; parsing stops at the first
 * argument that is not a flag. Returns null for `-h`/`-help`.
 */
export function parseDaemonFlags(args: string[]): DaemonFlags | null {
  const values: Record<string, string> = {};
  let broadcast = false;
  const names = [
    "socketpath",
    "pidfile",
    "hostprefix",
    "statedir",
    "timeout",
    "resendmax",
    "resendtimeout",
  ];
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") break;
    const m = /^--?([^=-][^=]*)(?:=(.*))?$/s.exec(arg);
    if (!m) break;
    const [, name, inline] = m as unknown as [string, string, string | undefined];
    if (name === "h" || name === "help") return null;
    if (name === "broadcast") {
      if (inline === undefined || /^(1|t|T|true|TRUE|True)$/.test(inline)) broadcast = true;
      else if (/^(0|f|F|false|FALSE|False)$/.test(inline)) broadcast = false;
      else throw new FlagError(`invalid boolean value "${inline}" for -broadcast`);
      continue;
    }
    if (!names.includes(name)) throw new FlagError(`flag provided but not defined: -${name}`);
    const value = inline ?? args[++i];
    if (value === undefined) throw new FlagError(`flag needs an argument: -${name}`);
    values[name] = value;
  }
  const duration = (name: string, fallback: number) => {
    if (values[name] === undefined) return fallback;
    const ms = parseGoDuration(values[name]!);
    if (ms === null) {
      throw new FlagError(`invalid value "${values[name]}" for flag -${name}: parse error`);
    }
    return ms;
  };
  const hostPrefix = values.hostprefix ?? "";
  const socketPath = values.socketpath || DEFAULT_SOCKET_PATH;
  const socketDir = (hostPrefix + socketPath).replace(/\/[^/]*$/, "") || "/";
  return {
    socketPath,
    pidFile: values.pidfile ?? "",
    hostPrefix,
    stateDir: values.statedir || `${socketDir === "/" ? "" : socketDir}/dhcp-leases`,
    broadcast,
    timeoutMs: duration("timeout", 10_000),
    resendMaxMs: duration("resendmax", 62_000),
    resendTimeoutMs: duration("resendtimeout", 208_000),
  };
}

const Attachment = {
  v: z.literal(1),
  clientId: z.string().check(z.minLength(1), z.maxLength(254)),
  ifname: z.string().check(z.minLength(1), z.maxLength(15)),
};
const Code = z.number().check(z.int(), z.gte(1), z.lte(254));
const RequestSchema = z.discriminatedUnion("op", [
  z.object({
    ...Attachment,
    netns: z.string().check(z.startsWith("/")),
    op: z.enum(["add", "check"]),
    options: z.array(z.tuple([Code, z.string().check(z.regex(/^([0-9a-f]{2}){0,255}$/))])),
    request: z.array(Code),
  }),
  // DEL may come without a netns (CNI_NETNS is optional for it).
  z.object({ ...Attachment, netns: z.string(), op: z.literal("del") }),
]);

function log(message: string): void {
  console.error(`${new Date().toISOString()} ${message}`);
}

/** Any failure as the CNI error the plugin prints. */
function wireError(e: unknown, clientId: string): WireError {
  if (e instanceof CniError) {
    return { code: e.code, msg: e.message, ...(e.details ? { details: e.details } : {}) };
  }
  const known = e instanceof DhcpError || e instanceof OptionError || e instanceof SocketError ||
    e instanceof MessageError;
  const code = e instanceof DhcpError && e.timedOut
    ? ErrorCode.tryAgainLater
    : known
    ? ErrorCode.ioFailure
    : ErrorCode.internal;
  return { code, msg: `dhcp ${clientId}: ${(e as Error).message ?? String(e)}` };
}

/** The daemon: its leases, its socket, its lifetime. */
export class Daemon {
  readonly #flags: DaemonFlags;
  readonly #cfg: ClientConfig;
  readonly #store: LeaseStore;
  readonly #leases = new Map<string, Lease>();
  readonly #locks = new Map<string, Promise<void>>();
  readonly #shutdown = new AbortController();
  /** Acquisitions under way, by client id: a DEL for one cancels it. */
  readonly #acquiring = new Map<string, AbortController>();
  readonly #ctx: LeaseContext;

  constructor(flags: DaemonFlags) {
    this.#flags = flags;
    this.#cfg = {
      timeoutMs: flags.timeoutMs,
      resendMaxMs: flags.resendMaxMs,
      resendTimeoutMs: flags.resendTimeoutMs,
      broadcast: flags.broadcast,
    };
    this.#store = new LeaseStore(flags.stateDir);
    this.#ctx = {
      cfg: this.#cfg,
      store: this.#store,
      log,
      forget: (lease) => {
        if (this.#leases.get(lease.clientId) === lease) this.#leases.delete(lease.clientId);
      },
    };
  }

  /** Runs `fn` after every earlier call for `clientId` has finished. */
  #locked<T>(clientId: string, fn: () => Promise<T>): Promise<T> {
    const before = this.#locks.get(clientId) ?? Promise.resolve();
    const run = before.then(fn);
    const tail = run.then(() => {}, () => {});
    this.#locks.set(clientId, tail);
    tail.then(() => {
      if (this.#locks.get(clientId) === tail) this.#locks.delete(clientId);
    });
    return run;
  }

  /** Answers one request; never throws. */
  async handle(raw: unknown): Promise<Response> {
    const parsed = RequestSchema.safeParse(raw);
    if (!parsed.success) {
      return {
        error: {
          code: ErrorCode.decodingFailure,
          msg: `dhcp daemon: bad request: ${parsed.error.issues.map((i) => i.message).join("; ")}`,
        },
      };
    }
    const request = parsed.data as Request;
    const netns = this.#flags.hostPrefix + request.netns;
    const at = { ...request, netns };
    try {
      switch (at.op) {
        case "add":
          return { ok: await this.#locked(at.clientId, () => this.#add(at)) };
        case "check":
          return { ok: await this.#locked(at.clientId, () => this.#check(at)) };
        case "del":
          // A runtime that gave up on an ADD sends DEL: stop waiting for a server.
          this.#acquiring.get(at.clientId)?.abort();
          await this.#locked(at.clientId, () => this.#release(at));
          return { ok: {} };
      }
    } catch (e) {
      return { error: wireError(e, at.clientId) };
    }
  }

  async #add(at: LeaseRequest): Promise<LeaseView> {
    const have = this.#leases.get(at.clientId);
    if (have?.matches(at) && have.usable()) {
      log(`${at.clientId}: reusing lease ${have.describe()}`);
      return have.view();
    }
    if (have) await have.release();
    log(`${at.clientId}: acquiring a lease on "${at.ifname}" in ${at.netns}`);
    const identity = identityOf(at.options, at.request);
    const cancel = new AbortController();
    this.#acquiring.set(at.clientId, cancel);
    let acquired: Acquired;
    try {
      acquired = await acquire(at, identity, this.#cfg, {
        signal: AbortSignal.any([cancel.signal, this.#shutdown.signal]),
      });
    } catch (e) {
      const failure = cancel.signal.aborted
        ? new DhcpError("cancelled by a DEL of the same attachment")
        : e;
      log(`${at.clientId}: no lease: ${(failure as Error).message}`);
      throw failure;
    } finally {
      this.#acquiring.delete(at.clientId);
    }
    let lease: Lease;
    try {
      lease = Lease.fromAck(at, at.options, at.request, acquired, this.#ctx);
      await this.#store.save(lease.record);
    } catch (e) {
      // An ACK without a mask (or a full disk) is no lease to keep.
      await releaseOnLink(at, identity, acquired).catch(() => {});
      throw e;
    }
    this.#leases.set(at.clientId, lease);
    log(`${at.clientId}: lease acquired, ${lease.describe()}`);
    lease.start();
    return lease.view();
  }

  async #check(at: LeaseRequest): Promise<LeaseView> {
    const lease = this.#leases.get(at.clientId);
    if (!lease || !lease.matches(at)) {
      throw new DhcpError(`no lease for "${at.clientId}" on "${at.ifname}" in ${at.netns}`);
    }
    await lease.confirm();
    return lease.view();
  }

  async #release(at: ReleaseRequest): Promise<void> {
    const lease = this.#leases.get(at.clientId);
    // An unknown lease is released already: DEL succeeds.
    if (lease) await lease.release();
  }

  /** Takes up the leases a previous daemon left on disk. */
  async #resumeLeases(): Promise<void> {
    await this.#store.init();
    const records = await this.#store.load((file, why) => log(`ignoring ${file}: ${why}`));
    for (const record of records) {
      let lease: Lease;
      try {
        lease = Lease.fromRecord(record, this.#ctx);
      } catch (e) {
        log(`${record.clientId}: stored lease unreadable, dropped: ${(e as Error).message}`);
        await this.#store.remove(record.clientId);
        continue;
      }
      this.#leases.set(record.clientId, lease);
      log(`${record.clientId}: found lease ${lease.describe()}`);
      this.#locked(record.clientId, () => lease.resume()).catch((e) =>
        log(`${record.clientId}: resuming failed: ${(e as Error).message}`)
      );
    }
  }

  #serve(socket: Socket): void {
    const chunks: Uint8Array[] = [];
    let size = 0;
    let answered = false;
    socket.on("error", () => {});
    socket.on("data", (chunk: Uint8Array) => {
      if (answered) return;
      chunks.push(chunk);
      size += chunk.length;
      const text = new TextDecoder().decode(concat(chunks));
      const newline = text.indexOf("\n");
      if (newline < 0 && size < MAX_REQUEST_BYTES) return;
      answered = true;
      let raw: unknown;
      try {
        raw = JSON.parse(newline < 0 ? text : text.slice(0, newline));
      } catch (e) {
        socket.end(
          JSON.stringify({
            error: { code: ErrorCode.decodingFailure, msg: `dhcp daemon: ${(e as Error).message}` },
          }) + "\n",
        );
        return;
      }
      this.handle(raw).then((response) => socket.end(JSON.stringify(response) + "\n"));
    });
  }

  /** The listening socket: systemd's, or our own at the socket path. */
  async #listen(): Promise<{ server: Server; ownPath?: string }> {
    const net = await import("node:net");
    const server = net.createServer((socket) => this.#serve(socket));
    const listening = (target: { fd: number } | string) =>
      new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(target as string, () => {
          server.off("error", reject);
          resolve();
        });
      });
    const fds = Deno.env.get("LISTEN_FDS");
    if (fds !== undefined && Deno.env.get("LISTEN_PID") === String(Deno.pid)) {
      // As sd_listen_fds(unset_environment=1): children must not take them too.
      for (const name of ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"]) Deno.env.delete(name);
      if (fds !== "1") throw new Error(`${fds} sockets passed by socket activation; expected 1`);
      await listening({ fd: 3 });
      return { server };
    }
    const path = this.#flags.hostPrefix + this.#flags.socketPath;
    await Deno.mkdir(path.replace(/\/[^/]*$/, "") || "/", { recursive: true, mode: 0o700 });
    await removeStaleSocket(path);
    await listening(path);
    return { server, ownPath: path };
  }

  /** Runs until SIGTERM or SIGINT; returns the exit status. */
  async run(): Promise<number> {
    const { pidFile } = this.#flags;
    if (pidFile) {
      if (!pidFile.startsWith("/")) throw new Error(`pidfile "${pidFile}" is not an absolute path`);
      await Deno.writeTextFile(pidFile, String(Deno.pid));
    }
    await this.#resumeLeases();
    const { server, ownPath } = await this.#listen();
    log(
      `dhcp daemon listening on ${
        ownPath ?? "the socket passed by systemd"
      } (leases in ${this.#flags.stateDir})`,
    );
    await new Promise<void>((resolve) => {
      const stop = (signal: Deno.Signal) => {
        log(`${signal}: stopping`);
        resolve();
      };
      Deno.addSignalListener("SIGTERM", () => stop("SIGTERM"));
      Deno.addSignalListener("SIGINT", () => stop("SIGINT"));
    });
    this.#shutdown.abort();
    server.close();
    for (const lease of this.#leases.values()) lease.stop();
    if (ownPath) await Deno.remove(ownPath).catch(() => {});
    if (pidFile) await Deno.remove(pidFile).catch(() => {});
    return 0;
  }
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

/**
 * Removes a socket file nobody answers on (a daemon killed with -9 leaves
 * it behind); refuses to start beside a live daemon.
 */
async function removeStaleSocket(path: string): Promise<void> {
  try {
    const info = await Deno.lstat(path);
    if (!info.isSocket) throw new Error(`${path} exists and is not a socket`);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  try {
    const conn = await Deno.connect({ transport: "unix", path });
    conn.close();
    throw new Error(`another daemon is listening on ${path}`);
  } catch (e) {
    if (!(e instanceof Deno.errors.ConnectionRefused)) throw e;
  }
  await Deno.remove(path);
}

/** `dhcp daemon [flags]`: the exit status. */
export async function daemonMain(args: string[]): Promise<number> {
  let flags: DaemonFlags | null;
  try {
    flags = parseDaemonFlags(args);
  } catch (e) {
    console.error(`${(e as Error).message}\n${USAGE}`);
    return 2;
  }
  if (!flags) {
    console.log(USAGE);
    return 0;
  }
  // A daemon must not die of one failed background task.
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    log(`unhandled: ${event.reason instanceof Error ? event.reason.message : event.reason}`);
  });
  try {
    return await new Daemon(flags).run();
  } catch (e) {
    log((e as Error).message);
    return 1;
  }
}
