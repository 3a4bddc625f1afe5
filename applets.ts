/**
 * Every plugin cnikit can act as, by the name a runtime looks up in CNI_PATH.
 *
 * Each is loaded on demand: bundled, a dynamic import becomes a module that
 * is evaluated only when called, so a call pays only for the plugin it runs
 * (its schemas, its code), not for all of them.
 * @module
 */

import type { Plugin } from "./lib/skel.ts";

/** Loads one plugin. */
export type PluginLoader = () => Promise<Plugin>;

/** The plugins by name, in the order `cnikit --help` lists them. */
export const PLUGIN_LOADERS: Readonly<Record<string, PluginLoader>> = {
  loopback: () => import("./plugins/loopback.ts").then((m) => m.loopback),
  ptp: () => import("./plugins/ptp.ts").then((m) => m.ptp),
  bridge: () => import("./plugins/bridge.ts").then((m) => m.bridge),
  "host-local": () => import("./ipam/host_local/mod.ts").then((m) => m.hostLocal),
  static: () => import("./ipam/static.ts").then((m) => m.staticIpam),
};

/** Every applet name: the plugins plus `cnitool`. */
export const APPLET_NAMES: readonly string[] = [...Object.keys(PLUGIN_LOADERS), "cnitool"];
