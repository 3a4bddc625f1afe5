/**
 * The daemon's view of a container's link, through libc FFI: a packet
 * socket bound to the link that sends and receives IPv4 packets while the
 * link has no address yet, and ioctls that read its index, MAC and flags or
 * set it up and down.
 *
 * A socket belongs to the netns it was created in, for its whole life. So
 * only `socket()` runs inside the container's netns (a synchronous call in
 * withNetnsSync); binding, ioctls, sending and receiving happen from the
 * host afterwards, and nothing else ever enters the namespace. Sockets live
 * only for one exchange: an open socket would keep a deleted namespace, and
 * with it the container's veth, alive.
 *
 * Waiting for a packet is poll(2) as a nonblocking FFI call, which Deno runs
 * on a worker thread; the socket is read on the JS thread with MSG_DONTWAIT.
 * Requires CAP_NET_RAW, CAP_NET_ADMIN and CAP_SYS_ADMIN.
 * @module
 */

import { errno, libc } from "../../lib/net/libc.ts";
import { withNetnsSync } from "../../lib/net/netns.ts";
import { ipBytes } from "./message.ts";

const AF_INET = 2;
const AF_PACKET = 17;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const ETH_P_IP = 0x0800;
const SOL_SOCKET = 1;
const SO_ATTACH_FILTER = 26;
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const SIOCGIFHWADDR = 0x8927;
const SIOCGIFINDEX = 0x8933;
const IFF_UP = 0x1;
const IFF_RUNNING = 0x40;
const MSG_DONTWAIT = 0x40;
const POLLIN = 0x1;
const EAGAIN = 11;
const ENODEV = 19;
const SOCKADDR_LL = 20;
const IFREQ = 40;
/** How long one poll may block: a closing socket waits at most this long for it. */
const POLL_SLICE_MS = 200;

/** A failed socket call, with errno and libc's text for it. */
export class SocketError extends Error {
  readonly errno: number;

  constructor(what: string, err: number) {
    const text = libc.strerror.call(err);
    super(`${what}: ${text ? new Deno.UnsafePointerView(text).getCString() : `errno ${err}`}`);
    this.name = "SocketError";
    this.errno = err;
  }

  /** The link is gone: ENODEV from an ioctl, ENXIO from a socket whose device vanished. */
  get linkGone(): boolean {
    return this.errno === ENODEV || this.errno === 6;
  }
}

function ifreq(ifname: string): Uint8Array {
  const req = new Uint8Array(IFREQ);
  const name = new TextEncoder().encode(ifname);
  if (name.length > 15) throw new SocketError(`interface name "${ifname}"`, ENODEV);
  req.set(name);
  return req;
}

function ioctl(fd: number, request: number, req: Uint8Array, what: string): DataView {
  if (libc.ioctl.call(fd, BigInt(request), req) < 0) throw new SocketError(what, errno());
  return new DataView(req.buffer, 16);
}

/** A link as the ioctls see it. */
export interface LinkState {
  ifindex: number;
  mac: Uint8Array;
  up: boolean;
  /** Up with carrier (IFF_RUNNING): frames sent now reach the wire. */
  running: boolean;
}

function readLink(fd: number, ifname: string): LinkState {
  const ifindex = ioctl(fd, SIOCGIFINDEX, ifreq(ifname), `looking up "${ifname}"`).getInt32(
    0,
    true,
  );
  const hw = ioctl(fd, SIOCGIFHWADDR, ifreq(ifname), `reading the MAC of "${ifname}"`);
  const mac = new Uint8Array(hw.buffer.slice(18, 24));
  const flags = ioctl(fd, SIOCGIFFLAGS, ifreq(ifname), `reading the flags of "${ifname}"`)
    .getUint16(0, true);
  return { ifindex, mac, up: (flags & IFF_UP) !== 0, running: (flags & IFF_RUNNING) !== 0 };
}

function setUpFlag(fd: number, ifname: string, up: boolean): void {
  const req = ifreq(ifname);
  const flags = ioctl(fd, SIOCGIFFLAGS, req, `reading the flags of "${ifname}"`).getUint16(0, true);
  new DataView(req.buffer, 16).setUint16(0, up ? flags | IFF_UP : flags & ~IFF_UP, true);
  ioctl(fd, SIOCSIFFLAGS, req, `setting "${ifname}" ${up ? "up" : "down"}`);
}

/** socket(2) inside `netns`. */
function socketIn(netns: string, domain: number, type: number): number {
  const fd = withNetnsSync(netns, () => libc.socket.call(domain, type | SOCK_CLOEXEC, 0));
  if (fd < 0) throw new SocketError("socket", errno());
  return fd;
}

/** Runs `fn` with a throwaway control socket in `netns` (for ioctls). */
function withControlSocket<T>(netns: string, fn: (fd: number) => T): T {
  const fd = socketIn(netns, AF_INET, SOCK_DGRAM);
  try {
    return fn(fd);
  } finally {
    libc.close.call(fd);
  }
}

/**
 * Link `ifname` in `netns`, or null when the link is not there. Throws
 * (code 3 CniError) when the netns cannot be opened.
 */
export function linkState(netns: string, ifname: string): LinkState | null {
  return withControlSocket(netns, (fd) => {
    try {
      return readLink(fd, ifname);
    } catch (e) {
      if (e instanceof SocketError && e.linkGone) return null;
      throw e;
    }
  });
}

/** Sets link `ifname` in `netns` up or down. */
export function setLinkUp(netns: string, ifname: string, up: boolean): void {
  withControlSocket(netns, (fd) => setUpFlag(fd, ifname, up));
}

/**
 * Classic BPF run on every packet before it is queued: IPv4 UDP to port 68,
 * not a fragment. Offsets count from the IP header (a SOCK_DGRAM packet
 * socket strips the link header first).
 */
const FILTER: [number, number, number, number][] = [
  [0x30, 0, 0, 9], // ldb [9]            protocol
  [0x15, 0, 6, 17], // jeq #17, else drop
  [0x28, 0, 0, 6], // ldh [6]            flags + fragment offset
  [0x45, 4, 0, 0x1fff], // jset #0x1fff → drop
  [0xb1, 0, 0, 0], // ldxb 4*([0]&0xf)    header length
  [0x48, 0, 0, 2], // ldh [x+2]           UDP destination port
  [0x15, 0, 1, 68], // jeq #68, else drop
  [0x06, 0, 0, 0x40000], // ret: accept
  [0x06, 0, 0, 0], // ret: drop
];

function attachFilter(fd: number): void {
  const program = new Uint8Array(FILTER.length * 8);
  const view = new DataView(program.buffer);
  FILTER.forEach(([code, jt, jf, k], i) => {
    view.setUint16(i * 8, code, true);
    program[i * 8 + 2] = jt;
    program[i * 8 + 3] = jf;
    view.setUint32(i * 8 + 4, k, true);
  });
  const fprog = new Uint8Array(16);
  const fview = new DataView(fprog.buffer);
  fview.setUint16(0, FILTER.length, true);
  fview.setBigUint64(8, BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(program))), true);
  if (libc.setsockopt.call(fd, SOL_SOCKET, SO_ATTACH_FILTER, fprog, fprog.length) < 0) {
    throw new SocketError("attaching the DHCP filter", errno());
  }
}

function sockaddrLl(ifindex: number, mac?: Uint8Array): Uint8Array {
  const sll = new Uint8Array(SOCKADDR_LL);
  const view = new DataView(sll.buffer);
  view.setUint16(0, AF_PACKET, true);
  view.setUint16(2, ETH_P_IP); // network order
  view.setInt32(4, ifindex, true);
  if (mac) {
    sll[11] = mac.length;
    sll.set(mac, 12);
  }
  return sll;
}

/**
 * Sends one UDP datagram from this thread's namespace (the daemon's own),
 * routed as any host traffic, from an ephemeral port.
 */
export function sendUdp(ip: string, port: number, payload: Uint8Array): void {
  const fd = libc.socket.call(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw new SocketError("socket", errno());
  try {
    const sin = new Uint8Array(16);
    const view = new DataView(sin.buffer);
    view.setUint16(0, AF_INET, true);
    view.setUint16(2, port);
    sin.set(ipBytes(ip), 4);
    const sent = libc.sendto.call(fd, payload, BigInt(payload.length), 0, sin, sin.length);
    if (sent < 0) throw new SocketError(`sending to ${ip}:${port}`, errno());
  } finally {
    libc.close.call(fd);
  }
}

/** The Ethernet broadcast address. */
export const BROADCAST_MAC = new Uint8Array([255, 255, 255, 255, 255, 255]);

/** A received IPv4 packet and the MAC it came from. */
export interface Frame {
  packet: Uint8Array;
  srcMac: Uint8Array;
}

/**
 * A packet socket on one link: IPv4 packets in and out, UDP to port 68
 * only on the way in.
 */
export class PacketSocket {
  readonly link: LinkState;
  #fd: number;
  #polling: Promise<number> | undefined;
  readonly #pollfd = new Uint8Array(8);
  readonly #buffer = new Uint8Array(4096);
  readonly #from = new Uint8Array(SOCKADDR_LL);
  readonly #fromLength = new Uint8Array(4);

  private constructor(fd: number, link: LinkState) {
    this.#fd = fd;
    this.link = link;
    const view = new DataView(this.#pollfd.buffer);
    view.setInt32(0, fd, true);
    view.setInt16(4, POLLIN, true);
  }

  /**
   * Opens a socket on `ifname` in `netns`. Unbound until the filter is in
   * place (protocol 0 receives nothing), so no stray packet is queued.
   */
  static open(netns: string, ifname: string): PacketSocket {
    const fd = socketIn(netns, AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK);
    try {
      const link = readLink(fd, ifname);
      attachFilter(fd);
      if (libc.bind.call(fd, sockaddrLl(link.ifindex), SOCKADDR_LL) < 0) {
        throw new SocketError(`binding to "${ifname}"`, errno());
      }
      return new PacketSocket(fd, link);
    } catch (e) {
      libc.close.call(fd);
      throw e;
    }
  }

  /** Sends an IPv4 packet to `mac` on the link. */
  send(packet: Uint8Array, mac: Uint8Array): void {
    const sent = libc.sendto.call(
      this.#fd,
      packet,
      BigInt(packet.length),
      0,
      sockaddrLl(this.link.ifindex, mac),
      SOCKADDR_LL,
    );
    if (sent < 0) throw new SocketError("sending", errno());
  }

  /** The next queued packet, or null when none is waiting. */
  #read(): Frame | null {
    new DataView(this.#fromLength.buffer).setUint32(0, SOCKADDR_LL, true);
    const n = Number(
      libc.recvfrom.call(
        this.#fd,
        this.#buffer,
        BigInt(this.#buffer.length),
        MSG_DONTWAIT,
        this.#from,
        this.#fromLength,
      ),
    );
    if (n < 0) {
      const err = errno();
      if (err === EAGAIN) return null;
      throw new SocketError("receiving", err);
    }
    return { packet: this.#buffer.slice(0, n), srcMac: this.#from.slice(12, 18) };
  }

  /**
   * The next packet that `accept` takes, or null once `deadline`
   * (Date.now() milliseconds) passes or `signal` aborts.
   */
  async receive<T>(
    accept: (frame: Frame) => T | null,
    deadline: number,
    signal?: AbortSignal,
  ): Promise<T | null> {
    for (;;) {
      for (let frame = this.#read(); frame; frame = this.#read()) {
        const taken = accept(frame);
        if (taken !== null) return taken;
      }
      const left = deadline - Date.now();
      if (left <= 0 || signal?.aborted) return null;
      this.#polling = libc.poll.call(this.#pollfd, 1n, Math.min(left, POLL_SLICE_MS));
      await this.#polling;
      this.#polling = undefined;
    }
  }

  /** Closes the socket once no poll is using its descriptor any more. */
  async close(): Promise<void> {
    if (this.#fd < 0) return;
    await this.#polling;
    libc.close.call(this.#fd);
    this.#fd = -1;
  }
}
