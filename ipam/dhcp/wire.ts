/**
 * What the dhcp plugin and its daemon say to each other over the daemon's
 * unix socket: one connection per call, one JSON object on one line each
 * way (request, then response), then the daemon closes the connection.
 * Documented in ./README.md ("Wire format"). Binary values travel as hex.
 * Nothing here loads daemon code, so the plugin stays small.
 * @module
 */

import type { Dns, Route } from "../../lib/cni/spec/schemas.ts";

/** Where the daemon listens, and the plugin calls, unless told otherwise. */
export const DEFAULT_SOCKET_PATH = "/run/cni/dhcp.sock";

/** The version every request carries; a daemon refuses others. */
export const WIRE_VERSION = 1;

/** The attachment a request is about. */
export interface Attachment {
  /** `<containerID>/<network>/<ifname>`, at most 254 bytes: the lease's key. */
  clientId: string;
  /** Absolute path of the container's netns. */
  netns: string;
  ifname: string;
}

/** ADD (acquire or reuse) and CHECK (confirm with the server). */
export interface LeaseRequest extends Attachment {
  v: typeof WIRE_VERSION;
  op: "add" | "check";
  /** Options sent with every message, as `[code, hex bytes]` (option 61 among them). */
  options: [number, string][];
  /** Option 55: the codes asked for. */
  request: number[];
}

/** DEL: stop maintaining the lease and release it. */
export interface ReleaseRequest extends Attachment {
  v: typeof WIRE_VERSION;
  op: "del";
}

/** Any request. */
export type Request = LeaseRequest | ReleaseRequest;

/** A lease as the plugin turns it into a result. */
export interface LeaseView {
  /** `address/prefix`. */
  address: string;
  gateway?: string;
  routes: Route[];
  dns?: Dns;
}

/** A CNI error from the daemon. */
export interface WireError {
  code: number;
  msg: string;
  details?: string;
}

/** The answer: `ok` (a lease for add/check, `{}` for del) or `error`. */
export type Response = { ok: LeaseView | Record<string, never> } | { error: WireError };

/** Hex (as `toHex` writes it) back to bytes; throws on odd lengths or non-hex digits. */
export function fromHex(hex: string): Uint8Array {
  if (hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) throw new RangeError(`not hex: ${hex}`);
  return Uint8Array.from(
    { length: hex.length / 2 },
    (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16),
  );
}
