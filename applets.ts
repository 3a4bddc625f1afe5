/**
 * Every plugin cnikit can act as, by the name a runtime looks up in CNI_PATH.
 * @module
 */

import type { Plugin } from "./lib/skel.ts";
import { hostLocal } from "./ipam/host_local/mod.ts";
import { staticIpam } from "./ipam/static.ts";
import { bridge } from "./plugins/bridge.ts";
import { loopback } from "./plugins/loopback.ts";
import { ptp } from "./plugins/ptp.ts";

/** The plugins, in the order `cnikit --help` lists them. */
export const PLUGINS: readonly Plugin[] = [loopback, ptp, bridge, hostLocal, staticIpam];

/** Every applet name: the plugins plus `cnitool`. */
export const APPLET_NAMES: readonly string[] = [...PLUGINS.map((p) => p.name), "cnitool"];
