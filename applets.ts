/**
 * Every plugin cnikit can act as, by the name a runtime looks up in CNI_PATH.
 * @module
 */

import type { Plugin } from "./lib/cni/skel.ts";
import { hostLocal } from "./ipam/host_local/mod.ts";
import { staticIpam } from "./ipam/static/mod.ts";
import { bridge } from "./plugins/main/bridge/mod.ts";
import { loopback } from "./plugins/main/loopback/mod.ts";
import { ptp } from "./plugins/main/ptp/mod.ts";

/** The plugins, in the order `cnikit --help` lists them. */
export const PLUGINS: readonly Plugin[] = [loopback, ptp, bridge, hostLocal, staticIpam];

/** Every applet name: the plugins plus `cnitool`. */
export const APPLET_NAMES: readonly string[] = [...PLUGINS.map((p) => p.name), "cnitool"];
