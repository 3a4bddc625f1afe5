/**
 * Every applet cnikit can act as, by the name a runtime looks up in CNI_PATH
 * or a user types after `cnikit`. Each applet's code is loaded only when that
 * applet runs, so a plugin call never pays for the others' start-up.
 * @module
 */

import type { PluginLoader } from "./lib/cni/invoke.ts";
import { versionsFrom } from "./lib/cni/spec/version.ts";

/** A tool with its own command line (cnitool, daemons, installers). */
export interface Tool {
  readonly name: string;
  run(args: string[]): Promise<number>;
}

/**
 * A CNI plugin; `commands` are the words that make its executable act as a
 * tool instead (`dhcp daemon`), as the reference's binaries do.
 */
export interface PluginApplet extends PluginLoader {
  readonly commands?: Readonly<Record<string, (args: string[]) => Promise<number>>>;
  /**
   * The spec versions the plugin accepts (all when absent), the same as its
   * `Plugin.versions`: VERSION is answered from here without loading the
   * plugin, since runtimes ask it of every plugin they find.
   */
  readonly versions?: readonly string[];
}

/** The plugins, in the order `cnikit --help` lists them. */
export const PLUGINS: readonly PluginApplet[] = [
  { name: "loopback", load: async () => (await import("./plugins/main/loopback/mod.ts")).loopback },
  { name: "ptp", load: async () => (await import("./plugins/main/ptp/mod.ts")).ptp },
  { name: "bridge", load: async () => (await import("./plugins/main/bridge/mod.ts")).bridge },
  { name: "macvlan", load: async () => (await import("./plugins/main/macvlan/mod.ts")).macvlan },
  { name: "ipvlan", load: async () => (await import("./plugins/main/ipvlan/mod.ts")).ipvlan },
  { name: "vlan", load: async () => (await import("./plugins/main/vlan/mod.ts")).vlan },
  { name: "dummy", load: async () => (await import("./plugins/main/dummy/mod.ts")).dummy },
  { name: "tap", load: async () => (await import("./plugins/main/tap/mod.ts")).tap },
  {
    name: "host-device",
    load: async () => (await import("./plugins/main/host-device/mod.ts")).hostDevice,
  },
  { name: "host-local", load: async () => (await import("./ipam/host_local/mod.ts")).hostLocal },
  { name: "static", load: async () => (await import("./ipam/static/mod.ts")).staticIpam },
  {
    name: "bandwidth",
    load: async () => (await import("./plugins/meta/bandwidth/mod.ts")).bandwidth,
    versions: versionsFrom("0.3.0"),
  },
  { name: "tuning", load: async () => (await import("./plugins/meta/tuning/mod.ts")).tuning },
  {
    name: "dhcp",
    load: async () => (await import("./ipam/dhcp/mod.ts")).dhcp,
    commands: {
      daemon: async (args) => (await import("./ipam/dhcp/daemon.ts")).daemonMain(args),
    },
  },
  { name: "sbr", load: async () => (await import("./plugins/meta/sbr/mod.ts")).sbr },
  {
    name: "vrf",
    load: async () => (await import("./plugins/meta/vrf/mod.ts")).vrf,
    versions: versionsFrom("0.3.1"),
  },
  { name: "portmap", load: async () => (await import("./plugins/meta/portmap/mod.ts")).portmap },
  {
    name: "firewall",
    load: async () => (await import("./plugins/meta/firewall/mod.ts")).firewall,
    versions: versionsFrom("0.4.0"),
  },
];

/** The tools. */
export const TOOLS: readonly Tool[] = [
  { name: "cnitool", run: async (args) => (await import("./cnitool/main.ts")).cnitoolMain(args) },
  { name: "agent", run: async (args) => (await import("./agent/main.ts")).agentMain(args) },
  {
    name: "install",
    run: async (args) =>
      (await import("./agent/install.ts")).installMain(args, PLUGINS.map((p) => p.name)),
  },
];

/** Every applet name: the plugins, then the tools. */
export const APPLET_NAMES: readonly string[] = [...PLUGINS, ...TOOLS].map((a) => a.name);
