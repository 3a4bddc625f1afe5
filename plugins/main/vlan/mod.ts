/**
 * vlan: the container gets an 802.1Q link with id `vlanId` on `master` (a
 * host link, or one inside the container with `linkInContainer`), with an
 * address from IPAM.
 *
 * The link is made and configured as macvlan's (lib/net/container_link):
 * one `ip` process where the master is, one inside the container. DEL does
 * not look at the master: it succeeds when the master is gone (the
 * reference's DEL fails then, and the runtime retries it forever).
 * @module
 */

import * as z from "zod/mini";
import { GoInt, goStruct, NETCONF_FIELDS, parseConf } from "../../../lib/cni/conf.ts";
import { CniError, ErrorCode, invalidConfig } from "../../../lib/cni/errors.ts";
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
import type { LinkInfo } from "../../../lib/net/ip.ts";
import { getLink } from "../../../lib/net/link.ts";

const VlanConf = goStruct({
  ...NETCONF_FIELDS,
  master: z.optional(z.string()),
  vlanId: z.optional(GoInt),
  mtu: z.optional(GoInt),
  linkInContainer: z.optional(z.boolean()),
});
type VlanConf = z.infer<typeof VlanConf>;

/** A config with what ADD, CHECK and STATUS need checked. */
interface Conf {
  master: string;
  vlanId: number;
  mtu: number;
  inContainer: boolean;
  ipamType: string;
  dns: VlanConf["dns"];
}

function loadConf(args: CmdArgs): Conf {
  const raw = parseConf(VlanConf, args.config);
  if (!raw.master) {
    throw invalidConfig(
      `"master" field is required. It specifies the host interface name to create the VLAN for`,
    );
  }
  const vlanId = raw.vlanId ?? 0;
  if (vlanId < 0 || vlanId > 4094) {
    throw invalidConfig(`invalid VLAN ID ${vlanId} (must be between 0 and 4094 inclusive)`);
  }
  if (!raw.ipam?.type) throw invalidConfig("vlan: an ipam section with a type is required");
  return {
    master: raw.master,
    vlanId,
    mtu: raw.mtu ?? 0,
    inContainer: raw.linkInContainer ?? false,
    ipamType: raw.ipam.type,
    dns: raw.dns,
  };
}

async function add(args: CmdArgs): Promise<Result> {
  const conf = loadConf(args);
  return await attachContainerLink(args, {
    make: () =>
      createContainerLink(
        args.netns,
        args.ifname,
        {
          what: "vlan",
          inContainer: conf.inContainer,
          master: conf.master,
          commands: (name, netns) => [
            linkAddCommand({
              name,
              kind: "vlan",
              master: conf.master,
              mtu: conf.mtu,
              ...(conf.inContainer ? {} : { netns }),
              typeArgs: ["id", String(conf.vlanId)],
            }),
          ],
        },
        (master: LinkInfo) => {
          if (conf.mtu < 0 || conf.mtu > master.mtu) {
            throw invalidConfig(`invalid MTU ${conf.mtu}, must be [0, master MTU(${master.mtu})]`);
          }
        },
      ),
    ipamType: conf.ipamType,
    ...(conf.dns ? { dns: conf.dns } : {}),
  });
}

async function del(args: CmdArgs): Promise<void> {
  // Only the IPAM type: neither the master nor a valid vlanId is needed to clean up.
  const raw = parseConf(VlanConf, args.config);
  await detachContainerLink(args, raw.ipam?.type ?? "");
}

async function check(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  await checkAttachedLink(args, {
    plugin: "vlan",
    kind: "vlan",
    ipamType: conf.ipamType,
    master: conf.master,
    masterInContainer: conf.inContainer,
    verify: (link) => {
      const id = link.linkinfo?.info_data?.id;
      if (id !== conf.vlanId) {
        checkFailed(`vlan: link ${args.ifname} has VLAN id ${id}, configured ${conf.vlanId}`);
      }
      if (conf.mtu && conf.mtu !== link.mtu) {
        checkFailed(
          `vlan: configured MTU of ${args.ifname} is ${conf.mtu}, current value is ${link.mtu}`,
        );
      }
    },
  });
}

/** STATUS: the IPAM plugin's, and the master must exist here. */
async function status(args: CmdArgs): Promise<void> {
  const conf = loadConf(args);
  await delegate(conf.ipamType, "STATUS", args);
  if (!conf.inContainer && !await getLink(conf.master)) {
    throw new CniError(ErrorCode.pluginNotAvailable, `master "${conf.master}" not found`);
  }
}

async function gc(args: CmdArgs): Promise<void> {
  const conf = parseConf(VlanConf, args.config);
  if (conf.ipam?.type) await delegate(conf.ipam.type, "GC", args);
}

/** The vlan plugin. */
export const vlan: Plugin = { name: "vlan", add, del, check, status, gc };
