/**
 * Allocation from one range set, as the reference does it: a requested
 * address if asked for, otherwise round-robin from the address after the
 * last one reserved in the set, wrapping across its ranges and skipping
 * gateways. Each call runs under the store's lock.
 * @module
 */

import { CniError, ErrorCode, invalidConfig } from "../../lib/cni/errors.ts";
import { addToIP, formatIP, type IP, ipEquals } from "../../lib/cni/ipnet.ts";
import type { IPConfig } from "../../lib/cni/spec/schemas.ts";
import { type Range, rangeContains, rangeFor, type RangeSet, rangeSetString } from "./config.ts";
import { leasesOf, type Store } from "./store.ts";

/**
 * Walks a range set's addresses once, starting after `last` when it lies in
 * the set (else at the first range's start), and stops when it is back
 * where it began. Gateways are skipped.
 */
export class RangeIter {
  #set: RangeSet;
  #index = 0;
  #cur: IP | null = null;
  #first: IP | null = null;

  constructor(set: RangeSet, last: IP | null) {
    this.#set = set;
    const holder = last ? set.findIndex((r) => rangeContains(r, last)) : -1;
    if (holder >= 0) {
      this.#index = holder;
      this.#cur = last;
    } else {
      this.#first = set[0]!.start;
    }
  }

  /** The next candidate and its range, or null once the set is exhausted. */
  next(): { ip: IP; range: Range } | null {
    let r = this.#set[this.#index]!;
    if (this.#cur === null) {
      this.#cur = r.start;
      this.#first = r.start;
      if (!ipEquals(this.#cur, r.gateway)) return { ip: this.#cur, range: r };
    }
    for (;;) {
      if (ipEquals(this.#cur, r.end)) {
        this.#index = (this.#index + 1) % this.#set.length;
        r = this.#set[this.#index]!;
        this.#cur = r.start;
      } else {
        this.#cur = addToIP(this.#cur, 1n);
      }
      if (this.#first === null) this.#first = this.#cur;
      else if (ipEquals(this.#cur, this.#first)) return null;
      if (!ipEquals(this.#cur, r.gateway)) return { ip: this.#cur, range: r };
    }
  }
}

function ipConfig(ip: IP, range: Range): IPConfig {
  return { address: `${formatIP(ip)}/${range.subnet.prefix}`, gateway: formatIP(range.gateway) };
}

/** Allocates and releases the addresses of one range set (its index names it in the store). */
export class Allocator {
  readonly set: RangeSet;
  readonly index: number;
  #store: Store;

  constructor(set: RangeSet, store: Store, index: number) {
    this.set = set;
    this.index = index;
    this.#store = store;
  }

  /** Reserves an address for the attachment: `requested` if given, else the next free one. */
  get(id: string, ifname: string, requested?: IP): Promise<IPConfig> {
    return this.#store.locked(() =>
      requested ? this.#getRequested(id, ifname, requested) : this.#getNext(id, ifname)
    );
  }

  /** Releases everything the attachment holds in this store. */
  release(id: string, ifname: string): Promise<void> {
    return this.#store.locked(() => this.#store.release(id, ifname));
  }

  #getRequested(id: string, ifname: string, ip: IP): IPConfig {
    const range = rangeFor(this.set, ip);
    if (!range) {
      throw invalidConfig(`${formatIP(ip)} not in range set ${rangeSetString(this.set)}`);
    }
    if (ipEquals(ip, range.gateway)) {
      throw invalidConfig(`requested ip ${formatIP(ip)} is subnet's gateway`);
    }
    if (!this.#store.reserve(id, ifname, ip, this.index)) {
      throw new CniError(
        ErrorCode.tryAgainLater,
        `requested IP address ${formatIP(ip)} is not available in range set ${
          rangeSetString(this.set)
        }`,
      );
    }
    return ipConfig(ip, range);
  }

  #getNext(id: string, ifname: string): IPConfig {
    const entries = this.#store.scan();
    // The spec forbids a second ADD for an attachment without a DEL between.
    for (const held of leasesOf(entries, id, ifname)) {
      if (rangeFor(this.set, held)) {
        throw new CniError(
          ErrorCode.invalidEnvironment,
          `${formatIP(held)} has been allocated to ${id}, duplicate allocation is not allowed`,
        );
      }
    }
    // Under the lock the listing is current: skip taken addresses without a
    // failed open each; reserve() still creates exclusively.
    const taken = new Set(entries.map((e) => e.name));
    const iter = new RangeIter(this.set, this.#store.lastReservedIP(this.index));
    for (let c = iter.next(); c; c = iter.next()) {
      if (taken.has(formatIP(c.ip))) continue;
      if (this.#store.reserve(id, ifname, c.ip, this.index)) return ipConfig(c.ip, c.range);
    }
    throw new CniError(
      ErrorCode.tryAgainLater,
      `no IP addresses available in range set: ${rangeSetString(this.set)}`,
    );
  }
}
