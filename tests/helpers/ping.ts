/**
 * ICMP echo from inside a test namespace, without a `ping` binary (not every
 * machine has iputils): a datagram ICMP socket opened through libc FFI while
 * the thread is inside the namespace. The socket keeps that namespace after
 * the thread has left it, so the exchange itself needs no setns.
 * @module
 */

import { parseIP } from "../../lib/cni/ipnet.ts";
import { closeLibc } from "../../lib/net/libc.ts";
import { withNetnsSync } from "../../lib/net/netns.ts";
import type { TestNetns } from "./netns.ts";

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  sendto: { parameters: ["i32", "buffer", "usize", "i32", "buffer", "u32"], result: "isize" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
} as const;

const AF_INET = 2;
const AF_INET6 = 10;
const SOCK_DGRAM = 2;
const IPPROTO_ICMP = 1;
const IPPROTO_ICMPV6 = 58;
const SOL_SOCKET = 1;
const SO_RCVTIMEO = 20;

function sockaddr(ip: string): Uint8Array {
  const parsed = parseIP(ip);
  if (!parsed) throw new Error(`not an IP: ${ip}`);
  const v4 = parsed.family === 4;
  const buf = new Uint8Array(v4 ? 16 : 28);
  new DataView(buf.buffer).setUint16(0, v4 ? AF_INET : AF_INET6, true);
  const bytes = v4 ? 4 : 16;
  for (let i = 0; i < bytes; i++) {
    buf[(v4 ? 4 : 8) + i] = Number((parsed.value >> BigInt(8 * (bytes - 1 - i))) & 0xffn);
  }
  return buf;
}

/**
 * True when `from` gets an echo reply from `ip` within `seconds`. One
 * request per 200 ms, so a neighbour or DAD that settles meanwhile is
 * waited for rather than failed.
 */
export async function ping(from: TestNetns, ip: string, seconds = 5): Promise<boolean> {
  const v4 = !ip.includes(":");
  const libc = Deno.dlopen("libc.so.6", SYMBOLS);
  const c = libc.symbols;
  try {
    const fd = withNetnsSync(from.path, () => {
      // Datagram ICMP sockets are allowed for the groups in this range (per netns).
      Deno.writeTextFileSync("/proc/sys/net/ipv4/ping_group_range", "0 0");
      return c.socket(v4 ? AF_INET : AF_INET6, SOCK_DGRAM, v4 ? IPPROTO_ICMP : IPPROTO_ICMPV6);
    });
    if (fd < 0) throw new Error("cannot open an ICMP socket");
    try {
      const timeout = new Uint8Array(16);
      new DataView(timeout.buffer).setBigInt64(8, 200_000n, true); // 200 ms
      c.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeout, 16);
      const dest = sockaddr(ip);
      const reply = new Uint8Array(1500);
      const deadline = Date.now() + seconds * 1000;
      for (let seq = 1; Date.now() < deadline; seq++) {
        // type, code, checksum (the kernel fills it and the id), id, seq.
        const echo = new Uint8Array([v4 ? 8 : 128, 0, 0, 0, 0, 0, seq >> 8, seq & 0xff]);
        c.sendto(fd, echo, BigInt(echo.length), 0, dest, dest.length);
        // Any echo reply will do: this socket's id was only ever sent to `ip`,
        // and a late reply to an earlier request counts as much as this one's.
        const n = Number(c.recv(fd, reply, BigInt(reply.length), 0));
        if (n >= 8 && reply[0] === (v4 ? 0 : 129)) return true;
        await new Promise((r) => setTimeout(r, 0));
      }
      return false;
    } finally {
      c.close(fd);
    }
  } finally {
    libc.close();
    closeLibc();
  }
}

/**
 * The addresses of `ips` (IPv4) that did not answer an echo from `from`
 * within `seconds`: one ICMP socket, a request to every address still
 * silent every 300 ms, replies told apart by their source. A sweep of
 * hundreds of pods in a fraction of a second, with no process per address.
 */
export async function pingSweep(from: TestNetns, ips: string[], seconds = 10): Promise<string[]> {
  const libc = Deno.dlopen("libc.so.6", {
    ...SYMBOLS,
    recvfrom: {
      parameters: ["i32", "buffer", "usize", "i32", "buffer", "buffer"],
      result: "isize",
    },
  });
  const c = libc.symbols;
  const silent = new Set(ips);
  try {
    const fd = withNetnsSync(from.path, () => {
      Deno.writeTextFileSync("/proc/sys/net/ipv4/ping_group_range", "0 0");
      return c.socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP);
    });
    if (fd < 0) throw new Error("cannot open an ICMP socket");
    try {
      const timeout = new Uint8Array(16);
      new DataView(timeout.buffer).setBigInt64(8, 50_000n, true); // 50 ms
      c.setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, timeout, 16);
      const reply = new Uint8Array(1500);
      const source = new Uint8Array(16);
      const sourceLen = new Uint8Array(4);
      const deadline = Date.now() + seconds * 1000;
      for (let round = 1; silent.size > 0 && Date.now() < deadline; round++) {
        for (const ip of silent) {
          const echo = new Uint8Array([8, 0, 0, 0, 0, 0, round >> 8, round & 0xff]);
          const dest = sockaddr(ip);
          c.sendto(fd, echo, BigInt(echo.length), 0, dest, dest.length);
        }
        const until = Math.min(deadline, Date.now() + 300);
        while (silent.size > 0 && Date.now() < until) {
          new DataView(sourceLen.buffer).setUint32(0, 16, true);
          const n = Number(c.recvfrom(fd, reply, BigInt(reply.length), 0, source, sourceLen));
          if (n < 8 || reply[0] !== 0) continue;
          silent.delete(Array.from(source.subarray(4, 8)).join("."));
        }
        await new Promise((r) => setTimeout(r, 0));
      }
      return [...silent];
    } finally {
      c.close(fd);
    }
  } finally {
    libc.close();
    closeLibc();
  }
}
