/**
 * dhcp: IPAM from a DHCP server on the container's LAN, through the
 * `dhcp daemon` that acquires the lease inside the container's netns and
 * keeps it renewed. The plugin parses the config, resolves the options to
 * send (`provide`, `request`, CNI_ARGS) and asks the daemon over its unix
 * socket (./wire.ts); it loads none of the daemon's code.
 * @module
 */

import * as z from "zod/mini";
import { GoInt, goList, goStruct, parseConf } from "../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig } from "../../lib/cni/errors.ts";
import { toHex } from "../../lib/cni/hash.ts";
import { canonicalIP, ipEquals, parseCIDR } from "../../lib/cni/ipnet.ts";
import type { CmdArgs, Plugin } from "../../lib/cni/skel.ts";
import type { Result } from "../../lib/cni/spec/schemas.ts";
import {
  type Attachment,
  DEFAULT_SOCKET_PATH,
  type LeaseRequest,
  type LeaseView,
  type Request,
  type Response,
  WIRE_VERSION,
} from "./wire.ts";

/**
 * Option names, as dhcp-options(5) spells them: the reference's six, and
 * the ones a lease result reads. Any other option is given by its code.
 */
export const OPTION_NAMES: Readonly<Record<string, number>> = {
  "subnet-mask": 1,
  "routers": 3,
  "domain-name-servers": 6,
  "host-name": 12,
  "domain-name": 15,
  "interface-mtu": 26,
  "static-routes": 33,
  "ntp-servers": 42,
  "vendor-class-identifier": 60,
  "dhcp-client-identifier": 61,
  "user-class": 77,
  "domain-search": 119,
};

/** Asked for unless a `request` entry sets `skipDefault`: routers, subnet mask. */
const DEFAULT_REQUEST = [3, 1];
const CLIENT_ID = 61;
/** What the daemon writes itself; a `provide` entry cannot replace them. */
const DAEMON_OPTIONS = new Set([0, 50, 52, 53, 54, 55, 57, 255]);
const MAX_VALUE_BYTES = 255;

const OptionName = z.union([z.string(), GoInt]);

const DhcpNet = goStruct({
  name: z.optional(z.string()),
  ipam: z.optional(goStruct({
    type: z.optional(z.string()),
    daemonSocketPath: z.optional(z.string()),
    request: goList(
      goStruct({ skipDefault: z.optional(z.boolean()), option: z.optional(OptionName) }),
    ),
    provide: goList(goStruct({
      option: z.optional(OptionName),
      value: z.optional(z.string()),
      fromArg: z.optional(z.string()),
    })),
    priority: z.optional(GoInt),
  })),
});
type DhcpIpam = NonNullable<z.infer<typeof DhcpNet>["ipam"]>;

/** An option name or decimal code (0–255) as its code; a CNI error otherwise. */
export function parseOptionName(option: string | number): number {
  const text = String(option);
  const code = OPTION_NAMES[text] ?? (/^\d+$/.test(text) ? Number(text) : NaN);
  if (!(code >= 0 && code <= 255)) {
    throw invalidConfig(`Can not parse option "${text}": not a known name or a code 0-255`);
  }
  return code;
}

/**
 * CNI_ARGS read as the reference's dhcp plugin reads them: `K=V` pairs,
 * split at the first `=`, anything else ignored.
 */
function looseArgs(raw: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const pair of raw.split(";")) {
    const at = pair.indexOf("=");
    if (at >= 0) out.set(pair.slice(0, at), pair.slice(at + 1));
  }
  return out;
}

/**
 * The client id of an attachment: `<containerID>/<network>/<ifname>`, cut
 * to 254 bytes (option 61 holds 255 with its type byte).
 */
export function clientIdOf(containerId: string, network: string, ifname: string): string {
  const bytes = new TextEncoder().encode(`${containerId}/${network}/${ifname}`);
  return new TextDecoder().decode(bytes.subarray(0, 254));
}

/**
 * The options every message carries (option 61 with type byte 0, then the
 * `provide` entries, a later one replacing an earlier one of the same
 * code) and the list of options to ask for.
 */
export function resolveOptions(
  ipam: Pick<DhcpIpam, "provide" | "request">,
  cniArgs: string,
  clientId: string,
): { options: Map<number, Uint8Array>; request: number[] } {
  const options = new Map<number, Uint8Array>([
    [CLIENT_ID, new Uint8Array([0, ...new TextEncoder().encode(clientId)])],
  ]);
  const args = looseArgs(cniArgs);
  for (const p of ipam.provide ?? []) {
    const code = parseOptionName(p.option ?? "");
    if (DAEMON_OPTIONS.has(code)) {
      throw invalidConfig(`option ${code} cannot be provided: the daemon sets it`);
    }
    const values: [string, string][] = [];
    if (p.value) values.push([p.value, ""]);
    const fromArg = p.fromArg !== undefined ? args.get(p.fromArg) : undefined;
    if (fromArg !== undefined) values.push([fromArg, ` from CNI_ARGS "${p.fromArg}"`]);
    for (const [text, where] of values) {
      const bytes = new TextEncoder().encode(text);
      if (bytes.length > MAX_VALUE_BYTES) {
        throw invalidConfig(
          `value too long for option "${p.option}"${where}: ${bytes.length} bytes, at most ${MAX_VALUE_BYTES}`,
        );
      }
      options.set(code, bytes);
    }
  }
  const request: number[] = [];
  let skipDefault = false;
  for (const r of ipam.request ?? []) {
    if (r.skipDefault) skipDefault = true;
    if (r.option === undefined || r.option === "") continue;
    const code = parseOptionName(r.option);
    if (code === 0 || code === 255) throw invalidConfig(`option ${code} cannot be requested`);
    if (!request.includes(code)) request.push(code);
  }
  if (!skipDefault) {
    for (const code of DEFAULT_REQUEST) if (!request.includes(code)) request.push(code);
  }
  return { options, request };
}

interface Call {
  socketPath: string;
  ipam: DhcpIpam;
  attachment: Attachment;
}

function prepare(args: CmdArgs): Call {
  const net = parseConf(DhcpNet, args.config, "IPAM config");
  const ipam = net.ipam;
  if (!ipam) throw invalidConfig("IPAM config missing 'ipam' key");
  // The daemon runs elsewhere: it needs the netns as an absolute path.
  const netns = args.netns === "" || args.netns.startsWith("/")
    ? args.netns
    : `${Deno.cwd()}/${args.netns}`;
  return {
    socketPath: ipam.daemonSocketPath || DEFAULT_SOCKET_PATH,
    ipam,
    attachment: {
      clientId: clientIdOf(args.containerId, net.name ?? "", args.ifname),
      netns,
      ifname: args.ifname,
    },
  };
}

async function readAll(conn: Deno.Conn): Promise<string> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(16384);
  for (let n = await conn.read(buffer); n !== null; n = await conn.read(buffer)) {
    chunks.push(buffer.slice(0, n));
  }
  return new TextDecoder().decode(
    chunks.reduce((all, c) => {
      const joined = new Uint8Array(all.length + c.length);
      joined.set(all);
      joined.set(c, all.length);
      return joined;
    }, new Uint8Array()),
  );
}

/** A connection to the daemon, or a CNI error with `code` naming the socket. */
async function connect(socketPath: string, code: number): Promise<Deno.Conn> {
  try {
    return await Deno.connect({ transport: "unix", path: socketPath });
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? "no such socket"
      : e instanceof Deno.errors.ConnectionRefused
      ? "connection refused"
      : (e as Error).message;
    throw new CniError(
      code,
      `cannot reach the DHCP daemon at ${socketPath}: ${why}`,
      'is "dhcp daemon" running? (systemd: cni-dhcp.socket)',
    );
  }
}

/** Sends `request` to the daemon at `socketPath` and returns its `ok` answer. */
async function callDaemon(
  socketPath: string,
  request: Request,
): Promise<LeaseView | Record<string, never>> {
  const conn = await connect(socketPath, ErrorCode.tryAgainLater);
  let text: string;
  try {
    await conn.write(new TextEncoder().encode(JSON.stringify(request) + "\n"));
    text = await readAll(conn);
  } finally {
    conn.close();
  }
  let response: Response;
  try {
    response = JSON.parse(text);
  } catch {
    throw new CniError(
      ErrorCode.ioFailure,
      `the DHCP daemon at ${socketPath} ended the call without an answer`,
      text,
    );
  }
  if ("error" in response) {
    throw new CniError(response.error.code, response.error.msg, response.error.details ?? "");
  }
  return response.ok;
}

function leaseRequest(call: Call, op: LeaseRequest["op"], args: CmdArgs): LeaseRequest {
  const { options, request } = resolveOptions(call.ipam, args.args, call.attachment.clientId);
  return {
    v: WIRE_VERSION,
    op,
    ...call.attachment,
    options: [...options].map(([code, value]) => [code, toHex(value)]),
    request,
  };
}

async function add(args: CmdArgs): Promise<Result> {
  const call = prepare(args);
  const lease = await callDaemon(call.socketPath, leaseRequest(call, "add", args)) as LeaseView;
  const priority = call.ipam.priority;
  const result: Result = {
    cniVersion: "1.1.0",
    ips: [{ address: lease.address, ...(lease.gateway ? { gateway: lease.gateway } : {}) }],
    routes: lease.routes.map((r) => (priority ? { ...r, priority } : r)),
  };
  if (lease.dns) result.dns = lease.dns;
  return result;
}

async function del(args: CmdArgs): Promise<void> {
  const call = prepare(args);
  await callDaemon(call.socketPath, { v: WIRE_VERSION, op: "del", ...call.attachment });
}

async function check(args: CmdArgs): Promise<void> {
  const call = prepare(args);
  const lease = await callDaemon(call.socketPath, leaseRequest(call, "check", args)) as LeaseView;
  const prev = args.prevResult;
  if (!prev) return;
  const held = parseCIDR(lease.address)!;
  const listed = (prev.ips ?? []).some((ip) => {
    const net = parseCIDR(ip.address);
    return net && net.prefix === held.prefix && ipEquals(canonicalIP(net.ip), held.ip);
  });
  if (!listed) {
    throw new CniError(
      ErrorCode.internal,
      `dhcp: the lease holds ${lease.address}, which prevResult does not list`,
    );
  }
}

/** STATUS: ready when the daemon accepts connections (code 50 when it does not). */
async function status(args: CmdArgs): Promise<void> {
  const net = parseConf(DhcpNet, args.config, "IPAM config");
  (await connect(net.ipam?.daemonSocketPath || DEFAULT_SOCKET_PATH, ErrorCode.pluginNotAvailable))
    .close();
}

/** The dhcp IPAM plugin. */
export const dhcp: Plugin = { name: "dhcp", add, del, check, status };
