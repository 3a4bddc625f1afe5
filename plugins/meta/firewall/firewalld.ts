/**
 * The firewall with firewalld: each container address becomes a source of
 * a firewalld zone (`trusted` unless `firewalldZone` says otherwise) through
 * firewalld's D-Bus API (`org.fedoraproject.FirewallD1.zone.addSource`,
 * `removeSource`, `querySource`), spoken directly on the system bus
 * (dbus.ts). An ingress policy still goes to iptables, as in the reference.
 * @module
 */

import { checkFailed } from "../../../lib/net/check.ts";
import { CniError, ErrorCode } from "../../../lib/cni/errors.ts";
import { parseCIDR } from "../../../lib/cni/ipnet.ts";
import type { NetfilterBackend } from "../../../lib/netfilter/backend.ts";
import { DbusConnection, DbusError, systemBusPath } from "./dbus.ts";
import { familiesOf, setupIsolation } from "./iptables.ts";
import { collectRecords } from "./records.ts";
import { type FirewallSpec, hostCidr } from "./spec.ts";

const NAME = "org.fedoraproject.FirewallD1";
const PATH = "/org/fedoraproject/FirewallD1";
const ZONE = "org.fedoraproject.FirewallD1.zone";

/** A connection to the system bus on which firewalld owns its name; undefined when it does not. */
export async function connectFirewalld(): Promise<DbusConnection | undefined> {
  const path = systemBusPath();
  if (!path) return undefined;
  let bus: DbusConnection | undefined;
  try {
    bus = await DbusConnection.connect(path);
    await bus.call(
      "org.freedesktop.DBus",
      "/org/freedesktop/DBus",
      "org.freedesktop.DBus",
      "GetNameOwner",
      [
        NAME,
      ],
    );
    return bus;
  } catch {
    bus?.close();
    return undefined;
  }
}

/** The firewall through firewalld on `bus`, zone `zone`, with records under `dataDir`. */
export function firewallFirewalld(
  bus: DbusConnection,
  zone: string,
  dataDir: string,
): NetfilterBackend<FirewallSpec> {
  const zoneCall = (method: string, cidr: string) =>
    bus.call(NAME, PATH, ZONE, method, [zone, cidr]);
  const remove = async (cidrs: string[]) => {
    // As in the reference: a source that is not there (any more) is no error.
    for (const cidr of cidrs) await zoneCall("removeSource", cidr).catch(() => {});
  };
  return {
    name: "firewalld",

    async setup(_owner, spec) {
      for (const ip of spec.ips) {
        const cidr = hostCidr(ip);
        try {
          await zoneCall("addSource", cidr);
        } catch (e) {
          if (!(e instanceof DbusError) || !e.message.includes("ZONE_ALREADY_SET")) {
            throw new CniError(
              ErrorCode.ioFailure,
              `failed to add the address ${cidr} to ${zone} zone: ${(e as Error).message}`,
            );
          }
        }
      }
      if (spec.isolation) await setupIsolation(spec.isolation, familiesOf(spec));
    },

    async check(_owner, spec) {
      for (const ip of spec.ips) {
        const cidr = hostCidr(ip);
        const found = await zoneCall("querySource", cidr).catch(() => false);
        if (found !== true) {
          checkFailed(`failed to find the address ${cidr} in ${zone} zone`);
        }
      }
    },

    async teardown(_owner, spec) {
      await remove((spec?.ips ?? []).map(hostCidr));
    },

    async gc(network, valid) {
      await collectRecords(
        dataDir,
        network,
        valid,
        (_owner, ips) => remove(ips.flatMap((ip) => parseCIDR(ip) ?? []).map(hostCidr)),
      );
    },
  };
}
