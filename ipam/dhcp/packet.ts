/**
 * IPv4 and UDP headers around a DHCP message, for the packet socket that
 * carries DHCP before the interface has an address (RFC 791, RFC 768).
 * Pure.
 * @module
 */

import { ipBytes, ipString } from "./message.ts";

/** The UDP ports of DHCP (RFC 2131 §4.1). */
export const SERVER_PORT = 67;
export const CLIENT_PORT = 68;

const IP_HEADER = 20;
const UDP_HEADER = 8;
const PROTO_UDP = 17;

/** An address and a port. */
export interface Endpoint {
  ip: string;
  port: number;
}

/** A received UDP datagram. */
export interface Datagram {
  src: Endpoint;
  dst: Endpoint;
  payload: Uint8Array;
}

/** The Internet checksum (RFC 1071) of `bytes`, starting from `sum`. */
export function checksum(bytes: Uint8Array, sum = 0): number {
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += (bytes[i]! << 8) | bytes[i + 1]!;
  if (bytes.length % 2) sum += bytes[bytes.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/**
 * An IPv4 packet holding one UDP datagram: TTL 64, no fragmentation, both
 * checksums filled in.
 */
export function encodeUdp4(src: Endpoint, dst: Endpoint, payload: Uint8Array): Uint8Array {
  const total = IP_HEADER + UDP_HEADER + payload.length;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out[0] = 0x45;
  view.setUint16(2, total);
  out[8] = 64;
  out[9] = PROTO_UDP;
  out.set(ipBytes(src.ip), 12);
  out.set(ipBytes(dst.ip), 16);
  view.setUint16(10, checksum(out.subarray(0, IP_HEADER)));
  const udpLength = UDP_HEADER + payload.length;
  view.setUint16(20, src.port);
  view.setUint16(22, dst.port);
  view.setUint16(24, udpLength);
  out.set(payload, IP_HEADER + UDP_HEADER);
  // The pseudo header: addresses, protocol and UDP length.
  const pseudo = new Uint8Array(12);
  pseudo.set(out.subarray(12, 20));
  pseudo[9] = PROTO_UDP;
  new DataView(pseudo.buffer).setUint16(10, udpLength);
  const partial = 0xffff & ~checksum(pseudo);
  // 0 means "no checksum" in UDP; a computed 0 is sent as all ones.
  view.setUint16(26, checksum(out.subarray(IP_HEADER), partial) || 0xffff);
  return out;
}

/**
 * The UDP datagram in an IPv4 packet; null for anything else (another
 * protocol, a fragment, a bad header checksum, lengths that do not add up).
 * The UDP checksum is not verified: a packet read from a packet socket may
 * still carry a partial checksum left to the NIC (veth, virtio).
 */
export function decodeUdp4(packet: Uint8Array): Datagram | null {
  if (packet.length < IP_HEADER + UDP_HEADER || packet[0]! >> 4 !== 4) return null;
  const ihl = (packet[0]! & 0x0f) * 4;
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const total = view.getUint16(2);
  if (ihl < IP_HEADER || total < ihl + UDP_HEADER || total > packet.length) return null;
  if (packet[9] !== PROTO_UDP || (view.getUint16(6) & 0x3fff) !== 0) return null;
  if (checksum(packet.subarray(0, ihl)) !== 0) return null;
  const udpLength = view.getUint16(ihl + 4);
  if (udpLength < UDP_HEADER || ihl + udpLength > total) return null;
  return {
    src: { ip: ipString(packet, 12), port: view.getUint16(ihl) },
    dst: { ip: ipString(packet, 16), port: view.getUint16(ihl + 2) },
    payload: packet.slice(ihl + UDP_HEADER, ihl + udpLength),
  };
}
