/**
 * One lease held by the daemon for one attachment, and its maintenance
 * (RFC 2131 §4.4.5): bound until T1, then renewing with its server until
 * T2, then rebinding with any server until it expires. On expiry, or when a
 * server refuses it (DHCPNAK), the link goes down, since the address is no
 * longer the container's. Maintenance stops when the link or its namespace
 * is gone. Everything a lease does runs one step at a time.
 * @module
 */

import { toHex } from "../../lib/cni/hash.ts";
import { CniError, ErrorCode } from "../../lib/cni/errors.ts";
import {
  type Ack,
  acquire,
  type Acquired,
  type ClientConfig,
  DhcpError,
  type Identity,
  LinkGoneError,
  type LinkRef,
  NakError,
  refresh,
  releaseFromHost,
  releaseOnLink,
  retryDelays,
} from "./client.ts";
import { decodeMessage, encodeMessage } from "./message.ts";
import { INFINITE, type LeaseFacts, leaseFacts } from "./options.ts";
import { linkState, setLinkUp } from "./socket.ts";
import type { LeaseRecord, LeaseStore } from "./store.ts";
import { type Attachment, fromHex, type LeaseView } from "./wire.ts";

/** How often a bound lease looks for its link, between renewals. */
const LINK_CHECK_MS = 10_000;
/** setTimeout's largest delay. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** What a lease needs from the daemon. */
export interface LeaseContext {
  cfg: ClientConfig;
  store: LeaseStore;
  log(message: string): void;
  /** The lease ended on its own (expired, refused, link gone): drop it. */
  forget(lease: Lease): void;
}

/** The identity sent for a record's options. */
export function identityOf(options: [number, string][], request: number[]): Identity {
  return { options: new Map(options.map(([code, hex]) => [code, fromHex(hex)])), request };
}

/** A lease and its maintenance. */
export class Lease {
  readonly #ctx: LeaseContext;
  #record: LeaseRecord;
  #ack: Ack;
  #facts: LeaseFacts;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #work: Promise<void> = Promise.resolve();
  readonly #stop = new AbortController();
  #ended = false;
  #delays: Generator<number> | undefined;

  private constructor(record: LeaseRecord, ack: Ack, ctx: LeaseContext) {
    this.#ctx = ctx;
    this.#record = record;
    this.#ack = ack;
    this.#facts = leaseFacts(ack.ack);
  }

  /** A lease from a stored record; throws when its ACK cannot be read. */
  static fromRecord(record: LeaseRecord, ctx: LeaseContext): Lease {
    const ack = { ack: decodeMessage(fromHex(record.ack)), serverMac: fromHex(record.serverMac) };
    return new Lease(record, ack, ctx);
  }

  /** A lease just acquired; throws (OptionError) when the ACK lacks what a result needs. */
  static fromAck(
    at: Attachment,
    options: [number, string][],
    request: number[],
    acquired: Acquired,
    ctx: LeaseContext,
  ): Lease {
    const record: LeaseRecord = {
      clientId: at.clientId,
      netns: at.netns,
      ifname: at.ifname,
      ifindex: acquired.ifindex,
      options,
      request,
      ack: toHex(encodeMessage(acquired.ack)),
      serverMac: toHex(acquired.serverMac),
      boundAt: Date.now(),
    };
    return new Lease(record, acquired, ctx);
  }

  get clientId(): string {
    return this.#record.clientId;
  }

  get record(): LeaseRecord {
    return this.#record;
  }

  get #link(): LinkRef {
    return { netns: this.#record.netns, ifname: this.#record.ifname };
  }

  get #identity(): Identity {
    return identityOf(this.#record.options, this.#record.request);
  }

  #at(seconds: number): number {
    return seconds === INFINITE ? Infinity : this.#record.boundAt + seconds * 1000;
  }

  /** When the lease expires, and when renewing (T1) and rebinding (T2) start. */
  get #times(): { t1: number; t2: number; expiry: number } {
    const expiry = this.#at(this.#facts.leaseTime);
    // A server's T2 past expiry or T1 past T2 makes no sense; clamp them.
    const t2 = Math.min(this.#at(this.#facts.rebindingTime), expiry);
    return { t1: Math.min(this.#at(this.#facts.renewalTime), t2), t2, expiry };
  }

  /** The lease as the plugin reports it. */
  view(): LeaseView {
    const f = this.#facts;
    const view: LeaseView = { address: `${f.address}/${f.prefix}`, routes: f.routes };
    if (f.routers[0]) view.gateway = f.routers[0];
    if (Object.keys(f.dns).length) view.dns = f.dns;
    return view;
  }

  /** True when `at` names this lease's namespace and link. */
  matches(at: Attachment): boolean {
    return at.netns === this.#record.netns && at.ifname === this.#record.ifname;
  }

  /** Still maintained, unexpired, on the link it was acquired on. */
  usable(): boolean {
    return !this.#ended && Date.now() < this.#times.expiry && this.#linkAlive() !== false;
  }

  /**
   * Whether the link is still the one the lease was acquired on: false when
   * it or its namespace is gone (or replaced), undefined when that could
   * not be told (then it counts as there).
   */
  #linkAlive(): boolean | undefined {
    try {
      return linkState(this.#record.netns, this.#record.ifname)?.ifindex === this.#record.ifindex;
    } catch (e) {
      if (e instanceof CniError && e.code === ErrorCode.unknownContainer) return false;
      this.#ctx.log(`${this.clientId}: cannot look at the link: ${(e as Error).message}`);
      return undefined;
    }
  }

  /** Runs `fn` after everything the lease is doing already. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#work.then(fn);
    this.#work = run.then(() => {}, () => {});
    return run;
  }

  #schedule(ms: number): void {
    clearTimeout(this.#timer);
    if (this.#ended) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#serial(() => this.#step()).catch((e) =>
        this.#ctx.log(`${this.clientId}: maintenance failed: ${(e as Error).message}`)
      );
    }, Math.max(0, Math.min(ms, MAX_TIMER_MS)));
  }

  /** Starts maintaining a bound lease. */
  start(): void {
    this.#serial(() => this.#step()).catch((e) =>
      this.#ctx.log(`${this.clientId}: maintenance failed: ${(e as Error).message}`)
    );
  }

  /**
   * Takes up a lease found on disk by a restarted daemon: maintained as
   * before when unexpired; else acquired again asking for the same address.
   * If the server gives another one, that one is released and the link goes
   * down, as on expiry: the container holds an address it no longer leases.
   */
  resume(): Promise<void> {
    return this.#serial(async () => {
      if (this.#linkAlive() === false) {
        return await this.#abandon("link gone while the daemon was down");
      }
      if (Date.now() < this.#times.expiry) return await this.#step();
      const address = this.#facts.address;
      this.#ctx.log(
        `${this.clientId}: lease expired while the daemon was down, asking for ${address} again`,
      );
      let again: Acquired;
      try {
        again = await acquire(this.#link, this.#identity, this.#ctx.cfg, {
          hint: address,
          signal: this.#stop.signal,
        });
      } catch (e) {
        if (this.#stop.signal.aborted) return;
        return await this.#expire(`no lease again: ${(e as Error).message}`);
      }
      if (again.ack.yiaddr !== address) {
        await releaseOnLink(this.#link, this.#identity, again).catch(() => {});
        return await this.#expire(`the server now offers ${again.ack.yiaddr} instead`);
      }
      await this.#commit(again);
      this.#ctx.log(`${this.clientId}: lease taken up again, ${this.describe()}`);
      await this.#step();
    });
  }

  async #commit(ack: Ack): Promise<void> {
    const facts = leaseFacts(ack.ack);
    this.#ack = ack;
    this.#facts = facts;
    this.#record = {
      ...this.#record,
      ack: toHex(encodeMessage(ack.ack)),
      serverMac: toHex(ack.serverMac),
      boundAt: Date.now(),
    };
    this.#delays = undefined;
    await this.#ctx.store.save(this.#record);
  }

  /** One maintenance step: look at the link, then renew, rebind or expire when due. */
  async #step(): Promise<void> {
    if (this.#ended || this.#stop.signal.aborted) return;
    if (this.#linkAlive() === false) return await this.#abandon("link or netns gone");
    const { t1, t2, expiry } = this.#times;
    if (Date.now() >= expiry) return await this.#expire("lease expired");
    if (Date.now() < t1) return this.#schedule(Math.min(t1 - Date.now(), LINK_CHECK_MS));
    const how = Date.now() < t2 ? "renew" : "rebind";
    const until = how === "renew" ? t2 : expiry;
    try {
      const ack = await refresh(
        this.#link,
        this.#identity,
        this.#ack,
        how,
        this.#ctx.cfg,
        until,
        this.#stop.signal,
      );
      if (ack) {
        await this.#commit(ack);
        this.#ctx.log(
          `${this.clientId}: lease ${how === "renew" ? "renewed" : "rebound"}, ${this.describe()}`,
        );
        return this.#schedule(Math.min(this.#times.t1 - Date.now(), LINK_CHECK_MS));
      }
      if (this.#stop.signal.aborted) return;
      this.#ctx.log(`${this.clientId}: no answer to ${how}`);
    } catch (e) {
      if (e instanceof NakError) return await this.#expire(`${how} refused: ${e.message}`);
      if (e instanceof LinkGoneError) return await this.#abandon(e.message);
      this.#ctx.log(`${this.clientId}: ${how} failed: ${(e as Error).message}`);
    }
    this.#delays ??= retryDelays(this.#ctx.cfg.resendMaxMs, Math.random);
    this.#schedule(Math.min(this.#delays.next().value!, until - Date.now()));
  }

  /** The lease for the log: address, prefix and expiry. */
  describe(): string {
    const { expiry } = this.#times;
    return `${this.#facts.address}/${this.#facts.prefix}, expires ${
      expiry === Infinity ? "never" : new Date(expiry).toISOString()
    }`;
  }

  /** The address is no longer the container's: the link goes down and the lease ends. */
  async #expire(why: string): Promise<void> {
    this.#ctx.log(`${this.clientId}: ${why}, bringing "${this.#record.ifname}" down`);
    try {
      setLinkUp(this.#record.netns, this.#record.ifname, false);
    } catch (e) {
      this.#ctx.log(`${this.clientId}: failed to bring the link down: ${(e as Error).message}`);
    }
    await this.#end(why);
  }

  async #end(why: string): Promise<void> {
    if (this.#ended) return;
    this.#ended = true;
    clearTimeout(this.#timer);
    this.#ctx.log(`${this.clientId}: maintenance stops: ${why}`);
    this.#ctx.forget(this);
    await this.#ctx.store.remove(this.clientId);
  }

  /**
   * CHECK: asks the server to confirm the lease now (a renewal, sent at
   * most twice). Throws when the lease has ended, its link
   * is gone, or the server refuses it; no answer leaves it valid until it
   * expires.
   */
  confirm(): Promise<void> {
    return this.#serial(async () => {
      if (this.#ended) throw new DhcpError(`no lease for "${this.clientId}"`);
      if (this.#linkAlive() === false) {
        await this.#abandon("link or netns gone");
        throw new DhcpError(`link "${this.#record.ifname}" of the lease is gone`);
      }
      const { t2, expiry } = this.#times;
      if (Date.now() >= expiry) {
        await this.#expire("lease expired");
        throw new DhcpError("the lease has expired");
      }
      try {
        const ack = await refresh(
          this.#link,
          this.#identity,
          this.#ack,
          Date.now() < t2 ? "renew" : "rebind",
          this.#ctx.cfg,
          // Two sends: the message, and once more after -timeout.
          Date.now() + 3 * this.#ctx.cfg.timeoutMs,
          this.#stop.signal,
        );
        if (ack) {
          await this.#commit(ack);
          this.#ctx.log(`${this.clientId}: lease confirmed, ${this.describe()}`);
        } else {
          this.#ctx.log(`${this.clientId}: no answer to the check; the lease stays valid`);
        }
      } catch (e) {
        if (e instanceof NakError) await this.#expire(`check refused: ${e.message}`);
        throw e;
      }
      this.#schedule(0);
    });
  }

  /**
   * DEL: stops maintenance and sends a DHCPRELEASE, through the link while
   * it is there, else from the host. A lease that ended already has nothing
   * to release.
   */
  release(): Promise<void> {
    this.#stop.abort();
    clearTimeout(this.#timer);
    return this.#serial(async () => {
      if (this.#ended) return;
      let via = "the link";
      try {
        if (this.#linkAlive() === false) throw new LinkGoneError(this.#link);
        await releaseOnLink(this.#link, this.#identity, this.#ack);
      } catch (e) {
        if (!(e instanceof LinkGoneError)) throw e;
        via = "the host";
        this.#releaseFromHost();
      }
      await this.#end(`released through ${via}`);
    });
  }

  /** Best effort: a release that cannot be sent leaves the lease to expire at the server. */
  #releaseFromHost(): void {
    try {
      releaseFromHost(this.#identity, this.#ack);
    } catch (e) {
      this.#ctx.log(`${this.clientId}: failed to send DHCPRELEASE: ${(e as Error).message}`);
    }
  }

  /** The link is gone: the lease is of no use to anyone; tell the server, stop. */
  async #abandon(why: string): Promise<void> {
    this.#releaseFromHost();
    await this.#end(why);
  }

  /** Stops maintenance (the daemon is stopping); the lease stays on disk for the next one. */
  stop(): void {
    this.#ended = true;
    this.#stop.abort();
    clearTimeout(this.#timer);
  }
}
