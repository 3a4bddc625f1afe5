/**
 * cnikit's entry point. The applet is chosen by the name the program was
 * started under (a symlink named `bridge`, `host-local`, `cnitool`, …), or by
 * the first argument when started as `cnikit` itself.
 *
 * Every start parses this module and what it imports statically, so it
 * imports only the applet table and a few small modules: the plugin
 * skeleton, zod and each applet's code load when that applet runs (the
 * launcher build keeps them in separate chunks for the same reason).
 * @module
 */

import { APPLET_NAMES, PLUGINS, TOOLS } from "./applets.ts";
import { CniError, ErrorCode, toErrorObject } from "./lib/cni/errors.ts";
import { baseName, executablePath } from "./lib/cni/paths.ts";
import { CNIKIT_VERSION } from "./lib/cni/about.ts";
import { CURRENT_VERSION, versionAnswer } from "./lib/cni/spec/version.ts";

/** The name the program was started under, as busybox reads argv[0]. */
async function invokedName(): Promise<string> {
  if (Deno.build.standalone) {
    // Only a compiled binary needs argv[0]; node:process is too slow to load
    // on every start otherwise.
    const { default: process } = await import("node:process");
    return baseName(process.argv0);
  }
  return baseName(executablePath());
}

function usage(): string {
  return `cnikit: a CNI toolkit — one executable for every CNI plugin and cnitool

Usage:
  cnikit <applet> [args…]        run an applet, e.g. "cnikit cnitool add mynet /run/netns/x"
  <applet> [args…]               the same through a symlink named after the applet
  cnikit --help | --list | --version

Applets:
  ${APPLET_NAMES.join(", ")}
`;
}

/**
 * A runtime that finds this executable under a name cnikit has no applet
 * for expects a CNI error on stdout, not usage text.
 */
async function notAnApplet(name: string): Promise<number> {
  const error = new CniError(
    ErrorCode.pluginNotAvailable,
    `cnikit has no plugin named "${name}"`,
    `the applets are: ${APPLET_NAMES.join(", ")}`,
  );
  const text = JSON.stringify(toErrorObject(error, CURRENT_VERSION), null, 4);
  await Deno.stdout.write(new TextEncoder().encode(text));
  return 1;
}

/** Lets plugins and the runtime run cnikit's own applets in this process. */
async function registerApplets(): Promise<void> {
  const { registerInProcess } = await import("./lib/cni/invoke.ts");
  registerInProcess(executablePath(), PLUGINS);
}

async function main(): Promise<number> {
  let name = await invokedName();
  let args = Deno.args;
  if (!APPLET_NAMES.includes(name)) {
    const [first, ...rest] = args;
    if (first === undefined && Deno.env.get("CNI_COMMAND")) return await notAnApplet(name);
    if (first === "--list") {
      console.log(APPLET_NAMES.join("\n"));
      return 0;
    }
    if (first === "--version") {
      console.log(`cnikit ${CNIKIT_VERSION} (deno ${Deno.version.deno})`);
      return 0;
    }
    if (first === "--help" || first === "-h") {
      console.log(usage());
      return 0;
    }
    if (first === undefined || !APPLET_NAMES.includes(first)) {
      console.error((first === undefined ? "" : `cnikit: unknown applet "${first}"\n\n`) + usage());
      return 1;
    }
    [name, args] = [first, rest];
  }
  const tool = TOOLS.find((t) => t.name === name);
  if (tool) {
    await registerApplets();
    return await tool.run(args);
  }
  const plugin = PLUGINS.find((p) => p.name === name)!;
  const [word, ...rest] = args;
  const command = word === undefined ? undefined : plugin.commands?.[word];
  if (command) {
    await registerApplets();
    return await command(rest);
  }
  if (Deno.env.get("CNI_COMMAND") === "VERSION") {
    await Deno.stdout.write(new TextEncoder().encode(versionAnswer(plugin.versions)));
    return 0;
  }
  const [{ pluginMain }, loaded] = await Promise.all([
    import("./lib/cni/skel.ts"),
    plugin.load(),
    registerApplets(),
  ]);
  return await pluginMain(loaded);
}

Deno.exit(await main());
