/**
 * dummy: the container gets a dummy link (no peer, no master) carrying
 * addresses from IPAM: an address that is always up, for services bound to
 * it.
 *
 * The link is made inside the container under a temporary name, renamed
 * and configured there (lib/net/container_link): two `ip` processes.
 * @module
 */

import { goStruct, NETCONF_FIELDS, parseConf } from "../../../lib/cni/conf.ts";
import { invalidConfig } from "../../../lib/cni/errors.ts";
import { delegate } from "../../../lib/cni/invoke.ts";
import type { CmdArgs, Plugin } from "../../../lib/cni/skel.ts";
import type { Result } from "../../../lib/cni/spec/schemas.ts";
import { checkFailed } from "../../../lib/net/check.ts";
import {
  attachContainerLink,
  checkAttachedLink,
  createContainerLink,
  detachContainerLink,
  linkAddCommand,
} from "../../../lib/net/container_link.ts";

const DummyConf = goStruct(NETCONF_FIELDS);

/** The IPAM type, which ADD and CHECK require. */
function ipamTypeOf(args: CmdArgs): string {
  const type = parseConf(DummyConf, args.config).ipam?.type;
  if (!type) throw invalidConfig("dummy interface requires an IPAM configuration");
  return type;
}

async function add(args: CmdArgs): Promise<Result> {
  const ipamType = ipamTypeOf(args);
  const dns = parseConf(DummyConf, args.config).dns;
  return await attachContainerLink(args, {
    make: () =>
      createContainerLink(args.netns, args.ifname, {
        what: "dummy",
        inContainer: true,
        commands: (name) => [linkAddCommand({ name, kind: "dummy" })],
      }),
    ipamType,
    ...(dns ? { dns } : {}),
  });
}

async function del(args: CmdArgs): Promise<void> {
  await detachContainerLink(args, parseConf(DummyConf, args.config).ipam?.type ?? "");
}

async function check(args: CmdArgs): Promise<void> {
  await checkAttachedLink(args, {
    plugin: "dummy",
    kind: "dummy",
    ipamType: ipamTypeOf(args),
    verify: (link) => {
      if (!link.flags.includes("UP")) checkFailed(`Interface ${args.ifname} is down`);
    },
  });
}

async function status(args: CmdArgs): Promise<void> {
  const type = parseConf(DummyConf, args.config).ipam?.type;
  if (type) await delegate(type, "STATUS", args);
}

async function gc(args: CmdArgs): Promise<void> {
  const type = parseConf(DummyConf, args.config).ipam?.type;
  if (type) await delegate(type, "GC", args);
}

/** The dummy plugin. */
export const dummy: Plugin = { name: "dummy", add, del, check, status, gc };
