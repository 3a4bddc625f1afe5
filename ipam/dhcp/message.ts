/**
 * DHCP messages (RFC 2131 §2, options per RFC 2132) as values, and their
 * encoding and decoding. Pure: no sockets, no clock. Options keep their raw
 * bytes; ./options.ts reads the ones a lease needs.
 * @module
 */

/** BOOTP op codes. */
export const Op = { request: 1, reply: 2 } as const;

/** DHCP message types (option 53). */
export const MessageType = {
  discover: 1,
  offer: 2,
  request: 3,
  decline: 4,
  ack: 5,
  nak: 6,
  release: 7,
  inform: 8,
} as const;
export type MessageType = typeof MessageType[keyof typeof MessageType];

/** The option codes this implementation reads or writes itself. */
export const Option = {
  pad: 0,
  subnetMask: 1,
  router: 3,
  domainNameServer: 6,
  hostName: 12,
  domainName: 15,
  staticRoutes: 33,
  requestedAddress: 50,
  leaseTime: 51,
  overload: 52,
  messageType: 53,
  serverId: 54,
  parameterRequestList: 55,
  message: 56,
  maxMessageSize: 57,
  renewalTime: 58,
  rebindingTime: 59,
  clientId: 61,
  domainSearch: 119,
  classlessRoutes: 121,
  end: 255,
} as const;

/** The `flags` bit asking servers to broadcast their replies (RFC 2131 §2, figure 2). */
export const BROADCAST_FLAG = 0x8000;

/** The magic cookie that starts the options field (RFC 2131 §3). */
const MAGIC = [99, 130, 83, 99];
/** op … file: the fixed part before the cookie. */
const FIXED = 236;
/** The smallest message relays must accept (RFC 1542 §2.1); shorter ones are padded. */
const MIN_BOOTP = 300;

/** A DHCP message. Addresses are dotted quads; options raw, in order, one entry per code. */
export interface Message {
  op: 1 | 2;
  /** Hardware type; 1 = Ethernet. */
  htype: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** The client's hardware address (hlen bytes). */
  chaddr: Uint8Array;
  /** Server host name and boot file, as raw bytes (zero-filled when unused). */
  sname: Uint8Array;
  file: Uint8Array;
  options: Map<number, Uint8Array>;
}

/** A message with every field zero or empty except those given. */
export function newMessage(fields: Partial<Message> & Pick<Message, "op" | "xid">): Message {
  return {
    htype: 1,
    hops: 0,
    secs: 0,
    flags: 0,
    ciaddr: "0.0.0.0",
    yiaddr: "0.0.0.0",
    siaddr: "0.0.0.0",
    giaddr: "0.0.0.0",
    chaddr: new Uint8Array(6),
    sname: new Uint8Array(64),
    file: new Uint8Array(128),
    options: new Map(),
    ...fields,
  };
}

/** A malformed message: too short, without the cookie, or with a truncated option. */
export class MessageError extends Error {
  constructor(msg: string) {
    super(msg);
    this.name = "MessageError";
  }
}

/** `10.1.2.3` as its four bytes; throws on anything else. */
export function ipBytes(ip: string): Uint8Array {
  const parts = ip.split(".");
  if (parts.length !== 4 || !parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) {
    throw new RangeError(`not an IPv4 address: ${ip}`);
  }
  return Uint8Array.from(parts, Number);
}

/** Four bytes at `offset` as a dotted quad. */
export function ipString(bytes: Uint8Array, offset = 0): string {
  return Array.from(bytes.subarray(offset, offset + 4)).join(".");
}

/** A big-endian unsigned 32-bit value as four bytes. */
export function u32Bytes(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

/**
 * Encodes `message`. Options are written in map order, each longer than
 * 255 bytes split into several instances (RFC 3396); the options field ends
 * with `end` and is padded so the message is at least 300 bytes.
 */
export function encodeMessage(message: Message): Uint8Array {
  const body: number[] = [];
  for (const [code, value] of message.options) {
    if (code === Option.pad || code === Option.end) {
      throw new RangeError(`option ${code} cannot carry a value`);
    }
    // An empty option still appears once (e.g. a bare rapid-commit).
    for (let at = 0; at === 0 || at < value.length; at += 255) {
      const part = value.subarray(at, at + 255);
      body.push(code, part.length, ...part);
    }
  }
  body.push(Option.end);
  const length = Math.max(FIXED + MAGIC.length + body.length, MIN_BOOTP);
  const out = new Uint8Array(length);
  const view = new DataView(out.buffer);
  out[0] = message.op;
  out[1] = message.htype;
  out[2] = message.chaddr.length;
  out[3] = message.hops;
  view.setUint32(4, message.xid);
  view.setUint16(8, message.secs);
  view.setUint16(10, message.flags);
  out.set(ipBytes(message.ciaddr), 12);
  out.set(ipBytes(message.yiaddr), 16);
  out.set(ipBytes(message.siaddr), 20);
  out.set(ipBytes(message.giaddr), 24);
  if (message.chaddr.length > 16) throw new RangeError("chaddr longer than 16 bytes");
  out.set(message.chaddr, 28);
  out.set(message.sname.subarray(0, 64), 44);
  out.set(message.file.subarray(0, 128), 108);
  out.set(MAGIC, FIXED);
  out.set(body, FIXED + MAGIC.length);
  return out;
}

/**
 * Reads the options in `bytes` into `into`; instances of one code are
 * concatenated (RFC 3396). Stops at `end`; a field without one ends at its
 * last byte (servers omit `end` in overloaded sname/file fields).
 */
function readOptions(bytes: Uint8Array, into: Map<number, Uint8Array>, where: string): void {
  let i = 0;
  while (i < bytes.length) {
    const code = bytes[i]!;
    if (code === Option.end) return;
    if (code === Option.pad) {
      i++;
      continue;
    }
    if (i + 1 >= bytes.length) throw new MessageError(`option ${code} in ${where} has no length`);
    const length = bytes[i + 1]!;
    const start = i + 2;
    if (start + length > bytes.length) {
      throw new MessageError(`option ${code} in ${where} runs past the end`);
    }
    const value = bytes.subarray(start, start + length);
    const before = into.get(code);
    if (before) {
      const joined = new Uint8Array(before.length + value.length);
      joined.set(before);
      joined.set(value, before.length);
      into.set(code, joined);
    } else {
      into.set(code, value.slice());
    }
    i = start + length;
  }
}

/**
 * Decodes a message. Options overloaded into `file` and `sname` (option
 * 52) are read after the options field, file first (RFC 2131 §4.1).
 */
export function decodeMessage(bytes: Uint8Array): Message {
  if (bytes.length < FIXED + MAGIC.length) {
    throw new MessageError(`message of ${bytes.length} bytes is shorter than a DHCP header`);
  }
  if (MAGIC.some((b, i) => bytes[FIXED + i] !== b)) throw new MessageError("no DHCP magic cookie");
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const op = bytes[0]!;
  if (op !== Op.request && op !== Op.reply) throw new MessageError(`unknown op ${op}`);
  const hlen = Math.min(bytes[2]!, 16);
  const sname = bytes.slice(44, 108);
  const file = bytes.slice(108, FIXED);
  const options = new Map<number, Uint8Array>();
  readOptions(bytes.subarray(FIXED + MAGIC.length), options, "options");
  const overload = options.get(Option.overload)?.[0] ?? 0;
  if (overload & 1) readOptions(file, options, "file");
  if (overload & 2) readOptions(sname, options, "sname");
  return {
    op: op as Message["op"],
    htype: bytes[1]!,
    hops: bytes[3]!,
    xid: view.getUint32(4),
    secs: view.getUint16(8),
    flags: view.getUint16(10),
    ciaddr: ipString(bytes, 12),
    yiaddr: ipString(bytes, 16),
    siaddr: ipString(bytes, 20),
    giaddr: ipString(bytes, 24),
    chaddr: bytes.slice(28, 28 + hlen),
    sname,
    file,
    options,
  };
}

/** The message type (option 53), or undefined when missing (plain BOOTP). */
export function messageTypeOf(message: Message): number | undefined {
  const value = message.options.get(Option.messageType);
  return value?.length === 1 ? value[0] : undefined;
}
