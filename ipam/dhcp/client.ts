/**
 * The client side of DHCP (RFC 2131 §3–4) on one link of a container:
 * acquiring a lease (DISCOVER, OFFER, REQUEST, ACK), renewing and rebinding
 * it, releasing it; with the reference daemon's retry schedule.
 *
 * One exchange sends a message and waits `timeout` for the answer, sending
 * it again after `timeout`, then `2×timeout` (three sends, as the
 * reference's client library). A failed attempt is retried after 2 s ±1 s
 * four times, then after 4 s, 8 s, … (doubling below `resendMax`) ±1 s,
 * until `resendTimeout` has passed since the first attempt.
 * @module
 */

import {
  BROADCAST_FLAG,
  decodeMessage,
  encodeMessage,
  ipBytes,
  type Message,
  MessageType,
  messageTypeOf,
  newMessage,
  Op,
  Option,
} from "./message.ts";
import { CLIENT_PORT, decodeUdp4, encodeUdp4, SERVER_PORT } from "./packet.ts";
import {
  BROADCAST_MAC,
  type Frame,
  linkState,
  PacketSocket,
  sendUdp,
  setLinkUp,
  SocketError,
} from "./socket.ts";
import { CniError, ErrorCode } from "../../lib/cni/errors.ts";
import { ipOption } from "./options.ts";

/** The daemon's timing flags, in milliseconds, and `-broadcast`. */
export interface ClientConfig {
  timeoutMs: number;
  resendMaxMs: number;
  resendTimeoutMs: number;
  broadcast: boolean;
}

/** What the client says about itself in every message. */
export interface Identity {
  /** Option 61 and the options from `provide`, as sent (61 may be replaced by `provide`). */
  options: Map<number, Uint8Array>;
  /** Option 55: the options asked for. */
  request: number[];
}

/** Where the link is: its namespace and name. */
export interface LinkRef {
  netns: string;
  ifname: string;
}

/** An ACK and the MAC it came from (the server, or the relay in front of it). */
export interface Ack {
  ack: Message;
  serverMac: Uint8Array;
}

/** A lease just acquired, and the index of the link it was acquired on. */
export interface Acquired extends Ack {
  ifindex: number;
}

/** Why an acquisition or renewal failed. */
export class DhcpError extends Error {
  /** No answer at all within the time allowed (the server may come back). */
  readonly timedOut: boolean;

  constructor(msg: string, timedOut = false) {
    super(msg);
    this.name = "DhcpError";
    this.timedOut = timedOut;
  }
}

/** A NAK: the server refuses the address. */
export class NakError extends DhcpError {
  constructor(nak: Message) {
    const text = nak.options.get(Option.message);
    super(
      `server rejected the request with DHCPNAK${
        text ? `: ${new TextDecoder().decode(text)}` : ""
      }`,
    );
    this.name = "NakError";
  }
}

const FAST_RETRIES = 4;
const FAST_DELAY_MS = 2000;
const FIRST_BACKOFF_MS = 4000;
const JITTER_MS = 1000;
const SENDS_PER_EXCHANGE = 3;
/** How often to look for the link while it is not there yet (bridge makes it in parallel). */
const LINK_POLL_MS = 10;

/**
 * The delays between attempts: four fast retries, then exponential backoff
 * capped once it reaches `resendMaxMs`, each with ±1 s of jitter. `random`
 * returns [0, 1).
 */
export function* retryDelays(resendMaxMs: number, random: () => number): Generator<number> {
  const jitter = () => (2 * random() - 1) * JITTER_MS;
  for (let i = 0; i < FAST_RETRIES; i++) yield FAST_DELAY_MS + jitter();
  for (let base = FIRST_BACKOFF_MS;; base = base < resendMaxMs ? base * 2 : base) {
    yield base + jitter();
  }
}

/** Resolves after `ms`, or early when `signal` aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted || ms <= 0) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done);
  });
}

function randomXid(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0]!;
}

/**
 * Waits until link `ifname` exists in `netns` (the main plugin may create
 * it while IPAM runs, as cnikit's bridge does), sets it up if it is down,
 * and waits up to `carrierMs` more for carrier, so the first DISCOVER is
 * not lost on a veth whose peer is not up yet.
 */
async function readyLink(
  link: LinkRef,
  deadline: number,
  carrierMs: number,
  signal?: AbortSignal,
): Promise<void> {
  let state = linkState(link.netns, link.ifname);
  while (!state) {
    if (Date.now() >= deadline || signal?.aborted) {
      throw new DhcpError(`link "${link.ifname}" not found in netns "${link.netns}"`);
    }
    await sleep(LINK_POLL_MS, signal);
    state = linkState(link.netns, link.ifname);
  }
  if (!state.up) setLinkUp(link.netns, link.ifname, true);
  const carrierDeadline = Math.min(deadline, Date.now() + carrierMs);
  while (!state?.running && Date.now() < carrierDeadline && !signal?.aborted) {
    await sleep(LINK_POLL_MS, signal);
    state = linkState(link.netns, link.ifname);
  }
}

/** What one message goes out as. */
interface Send {
  message: Message;
  srcIp: string;
  dstIp: string;
  dstMac: Uint8Array;
}

/**
 * One exchange: sends, waits, sends again with the wait doubled, three
 * times; returns the first reply that `match` takes, or null.
 */
async function exchange(
  socket: PacketSocket,
  send: Send,
  match: (reply: Message) => boolean,
  cfg: ClientConfig,
  deadline: number,
  signal?: AbortSignal,
): Promise<Ack | null> {
  const bytes = encodeUdp4(
    { ip: send.srcIp, port: CLIENT_PORT },
    { ip: send.dstIp, port: SERVER_PORT },
    encodeMessage(send.message),
  );
  const accept = (frame: Frame): Ack | null => {
    const datagram = decodeUdp4(frame.packet);
    if (!datagram || datagram.dst.port !== CLIENT_PORT) return null;
    let reply: Message;
    try {
      reply = decodeMessage(datagram.payload);
    } catch {
      return null;
    }
    const ours = reply.op === Op.reply && reply.xid === send.message.xid &&
      reply.chaddr.length === send.message.chaddr.length &&
      reply.chaddr.every((b, i) => b === send.message.chaddr[i]);
    return ours && match(reply) ? { ack: reply, serverMac: frame.srcMac } : null;
  };
  let wait = cfg.timeoutMs;
  for (let i = 0; i < SENDS_PER_EXCHANGE && Date.now() < deadline && !signal?.aborted; i++) {
    socket.send(bytes, send.dstMac);
    const reply = await socket.receive(accept, Math.min(Date.now() + wait, deadline), signal);
    if (reply) return reply;
    wait *= 2;
  }
  return null;
}

function clientMessage(
  type: number,
  chaddr: Uint8Array,
  identity: Identity,
  extra: [number, Uint8Array][],
  fields: Partial<Message> = {},
): Message {
  const options = new Map<number, Uint8Array>([[Option.messageType, Uint8Array.of(type)]]);
  for (const [code, value] of extra) options.set(code, value);
  if (type !== MessageType.release) {
    if (identity.request.length) {
      options.set(Option.parameterRequestList, Uint8Array.from(identity.request));
    }
    // The largest message accepted: a full Ethernet frame.
    options.set(Option.maxMessageSize, Uint8Array.of(1500 >> 8, 1500 & 0xff));
  }
  for (const [code, value] of identity.options) {
    // A release carries only what identifies the lease.
    if (type !== MessageType.release || code === Option.clientId) options.set(code, value);
  }
  return newMessage({ op: Op.request, xid: randomXid(), chaddr, options, ...fields });
}

/**
 * Runs `attempt` until it succeeds, with the retry schedule, for at most
 * `cfg.resendTimeoutMs`. A NAK is retried too, as the reference does.
 */
async function withRetries<T>(
  cfg: ClientConfig,
  signal: AbortSignal | undefined,
  attempt: (deadline: number) => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + cfg.resendTimeoutMs;
  const delays = retryDelays(cfg.resendMaxMs, Math.random);
  let last: unknown;
  let attempts = 0;
  while (Date.now() < deadline && !signal?.aborted) {
    try {
      return await attempt(deadline);
    } catch (e) {
      if (!(e instanceof DhcpError) || e instanceof LinkGoneError) throw e;
      last = e;
      attempts++;
    }
    await sleep(Math.min(delays.next().value!, deadline - Date.now()), signal);
  }
  if (signal?.aborted) throw new DhcpError("stopped");
  const why = last instanceof Error ? last.message : "no attempt made";
  throw new DhcpError(
    `no DHCP lease within ${cfg.resendTimeoutMs / 1000}s (${attempts} attempts): ${why}`,
    !(last instanceof NakError),
  );
}

/** The link went away during an exchange. */
export class LinkGoneError extends DhcpError {
  constructor(link: LinkRef) {
    super(`link "${link.ifname}" in netns "${link.netns}" is gone`);
    this.name = "LinkGoneError";
  }
}

async function withSocket<T>(link: LinkRef, fn: (socket: PacketSocket) => Promise<T>): Promise<T> {
  // A failure is the link's absence only if the link is really not there
  // (a link that is down makes sends fail too).
  const gone = () => {
    try {
      return linkState(link.netns, link.ifname) === null;
    } catch (e) {
      return e instanceof CniError && e.code === ErrorCode.unknownContainer;
    }
  };
  let socket: PacketSocket;
  try {
    socket = PacketSocket.open(link.netns, link.ifname);
  } catch (e) {
    throw gone() ? new LinkGoneError(link) : e;
  }
  try {
    return await fn(socket);
  } catch (e) {
    throw e instanceof SocketError && gone() ? new LinkGoneError(link) : e;
  } finally {
    await socket.close();
  }
}

/**
 * Acquires a lease on `link`: DISCOVER, the first OFFER, REQUEST, ACK.
 * `hint` (an address held before) goes out as the requested address.
 */
export async function acquire(
  link: LinkRef,
  identity: Identity,
  cfg: ClientConfig,
  options: { hint?: string; signal?: AbortSignal } = {},
): Promise<Acquired> {
  const { signal } = options;
  await readyLink(link, Date.now() + cfg.resendTimeoutMs, cfg.timeoutMs, signal);
  return await withSocket(link, (socket) => {
    const chaddr = socket.link.mac;
    const flags = cfg.broadcast ? BROADCAST_FLAG : 0;
    const started = Date.now();
    const secs = () => Math.min(0xffff, Math.floor((Date.now() - started) / 1000));
    const broadcast = (message: Message): Send => ({
      message,
      srcIp: "0.0.0.0",
      dstIp: "255.255.255.255",
      dstMac: BROADCAST_MAC,
    });
    return withRetries(cfg, signal, async (deadline) => {
      const hint: [number, Uint8Array][] = options.hint
        ? [[Option.requestedAddress, ipBytes(options.hint)]]
        : [];
      const discover = clientMessage(MessageType.discover, chaddr, identity, hint, {
        flags,
        secs: secs(),
      });
      const offer = await exchange(
        socket,
        broadcast(discover),
        (m) => messageTypeOf(m) === MessageType.offer && m.options.has(Option.serverId),
        cfg,
        deadline,
        signal,
      );
      if (!offer) throw new DhcpError("no DHCPOFFER received", true);
      const serverId = offer.ack.options.get(Option.serverId)!;
      // The OFFER's xid and the DISCOVER's secs (RFC 2131 §4.4.1, table 5).
      const request = clientMessage(MessageType.request, chaddr, identity, [
        [Option.requestedAddress, ipBytes(offer.ack.yiaddr)],
        [Option.serverId, serverId],
      ], { flags, secs: discover.secs, xid: offer.ack.xid });
      const answer = await exchange(
        socket,
        broadcast(request),
        (m) => {
          const type = messageTypeOf(m);
          const from = m.options.get(Option.serverId);
          // Servers answer only requests naming them (RFC 2131 §4.3.2).
          return (type === MessageType.ack || type === MessageType.nak) &&
            (!from || from.every((b, i) => b === serverId[i]));
        },
        cfg,
        deadline,
        signal,
      );
      if (!answer) throw new DhcpError("no DHCPACK received", true);
      if (messageTypeOf(answer.ack) === MessageType.nak) throw new NakError(answer.ack);
      return { ...answer, ifindex: socket.link.ifindex };
    });
  });
}

/** How a lease is extended: by its server (renewing) or by any server (rebinding). */
export type Refresh = "renew" | "rebind";

/**
 * One attempt at extending `lease` (RFC 2131 §4.4.5): a REQUEST with
 * ciaddr set, unicast to the server (renew) or broadcast (rebind). Returns
 * the ACK, or null when no answer came before `deadline`; throws NakError.
 */
export async function refresh(
  link: LinkRef,
  identity: Identity,
  lease: Ack,
  how: Refresh,
  cfg: ClientConfig,
  deadline: number,
  signal?: AbortSignal,
): Promise<Ack | null> {
  return await withSocket(link, async (socket) => {
    const address = lease.ack.yiaddr;
    const request = clientMessage(MessageType.request, socket.link.mac, identity, [], {
      ciaddr: address,
      ...(how === "rebind" && cfg.broadcast ? { flags: BROADCAST_FLAG } : {}),
    });
    const send: Send = how === "renew"
      ? {
        message: request,
        srcIp: address,
        dstIp: serverIdOf(lease),
        dstMac: lease.serverMac,
      }
      : { message: request, srcIp: address, dstIp: "255.255.255.255", dstMac: BROADCAST_MAC };
    const answer = await exchange(
      socket,
      send,
      (m) => {
        const type = messageTypeOf(m);
        return type === MessageType.ack || type === MessageType.nak;
      },
      cfg,
      deadline,
      signal,
    );
    if (answer && messageTypeOf(answer.ack) === MessageType.nak) throw new NakError(answer.ack);
    return answer;
  });
}

/** The server identifier of a lease's ACK. */
export function serverIdOf(lease: Ack): string {
  const id = lease.ack.options.get(Option.serverId);
  return id ? ipOption(Option.serverId, id) : lease.ack.siaddr;
}

/**
 * The DHCPRELEASE for `lease` (RFC 2131 §4.4.6): ciaddr, server identifier
 * and client identifier. Nothing answers it.
 */
export function releaseMessage(lease: Ack, identity: Identity): Message {
  return clientMessage(MessageType.release, lease.ack.chaddr, identity, [
    [Option.serverId, ipBytes(serverIdOf(lease))],
  ], { ciaddr: lease.ack.yiaddr });
}

/** Sends the DHCPRELEASE for `lease` through `link`, unicast to the server. */
export async function releaseOnLink(
  link: LinkRef,
  identity: Identity,
  lease: Ack,
): Promise<void> {
  await withSocket(link, (socket) => {
    socket.send(
      encodeUdp4(
        { ip: lease.ack.yiaddr, port: CLIENT_PORT },
        { ip: serverIdOf(lease), port: SERVER_PORT },
        encodeMessage(releaseMessage(lease, identity)),
      ),
      lease.serverMac,
    );
    return Promise.resolve();
  });
}

/**
 * Sends the DHCPRELEASE for `lease` from the daemon's own namespace, routed
 * to the server: for a link that is gone already (bridge deletes the
 * container's link before it calls IPAM DEL).
 */
export function releaseFromHost(identity: Identity, lease: Ack): void {
  sendUdp(serverIdOf(lease), SERVER_PORT, encodeMessage(releaseMessage(lease, identity)));
}
