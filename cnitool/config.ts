/**
 * Finding and parsing network configurations as libcni does: `*.conflist`
 * lists first, then the deprecated single-plugin `*.conf` / `*.json` files,
 * `cniVersions` negotiation, the bool-or-string flags, and plugins kept in a
 * sibling folder named after the network.
 * @module
 */

import * as z from "zod/mini";
import { describeIssues } from "../lib/cni/spec/schemas.ts";
import { compareVersions, CURRENT_VERSION } from "../lib/cni/spec/version.ts";
import { dirName, errorText, extName, goTypeName, joinPath, marshalMap } from "./go.ts";

/** Default folder of network configurations (`NETCONFPATH`). */
export const DEFAULT_NETCONF_PATH = "/etc/cni/net.d";

/**
 * The typed view libcni takes of one plugin object. Go decodes into typed
 * fields, so a wrong type there fails the load; `null` reads as absent.
 * This is the runtime's loading rule, not a shape plugins share.
 */
const PluginFields = z.looseObject({
  cniVersion: z.nullish(z.string()),
  name: z.nullish(z.string()),
  type: z.nullish(z.string()),
  capabilities: z.nullish(z.record(z.string(), z.nullable(z.boolean()))),
  ipam: z.nullish(z.looseObject({ type: z.nullish(z.string()) })),
  dns: z.nullish(z.looseObject({
    nameservers: z.nullish(z.array(z.string())),
    domain: z.nullish(z.string()),
    search: z.nullish(z.array(z.string())),
    options: z.nullish(z.array(z.string())),
  })),
  prevResult: z.nullish(z.record(z.string(), z.unknown())),
  "cni.dev/valid-attachments": z.nullish(z.array(z.looseObject({
    containerID: z.nullish(z.string()),
    ifname: z.nullish(z.string()),
  }))),
});

/** One plugin of a network: its JSON object and the fields the runtime reads. */
export interface PluginConfig {
  /** The object as written; requests are built from a copy of it. */
  readonly raw: Readonly<Record<string, unknown>>;
  readonly type: string;
  /** The plugin object's own `name` (usually absent in a list). */
  readonly name: string;
  readonly cniVersion: string;
  /** Capabilities switched on or off by the plugin object. */
  readonly capabilities: Readonly<Record<string, boolean>>;
}

/** A network: a list of plugins run in order (libcni's `NetworkConfigList`). */
export interface NetworkConfigList {
  readonly name: string;
  /** The negotiated version ("" when none is given; it counts as 0.1.0). */
  readonly cniVersion: string;
  readonly disableCheck: boolean;
  readonly disableGC: boolean;
  readonly loadOnlyInlinedPlugins: boolean;
  readonly plugins: readonly PluginConfig[];
  /** The file's bytes, kept in the result cache. */
  readonly bytes: Uint8Array;
}

/** No configuration of that name in a folder that has some. */
export class NotFoundError extends Error {
  constructor(readonly dir: string, readonly network: string) {
    super(`no net configuration with name "${network}" in ${dir}`);
    this.name = "NotFoundError";
  }
}

/** The folder is missing or holds no configuration file at all. */
export class NoConfigsFoundError extends Error {
  constructor(readonly dir: string) {
    super(`no net configurations found in ${dir}`);
    this.name = "NoConfigsFoundError";
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function parseJson(bytes: Uint8Array, prefix: string): unknown {
  try {
    return JSON.parse(decoder.decode(bytes));
  } catch (e) {
    throw new Error(`${prefix}: ${(e as Error).message}`);
  }
}

/** Parses one plugin object; it must have a `type`. */
export function pluginConfFromBytes(bytes: Uint8Array): PluginConfig {
  const value = parseJson(bytes, "error parsing configuration");
  if (value !== null && (typeof value !== "object" || Array.isArray(value))) {
    throw new Error(
      `error parsing configuration: cannot decode ${goTypeName(value)} as a plugin object`,
    );
  }
  const raw = (value ?? {}) as Record<string, unknown>;
  const parsed = PluginFields.safeParse(raw);
  if (!parsed.success) {
    throw new Error(`error parsing configuration: ${describeIssues(parsed.error)}`);
  }
  const fields = parsed.data;
  if (!fields.type) throw new Error("error parsing configuration: missing 'type'");
  const capabilities: Record<string, boolean> = {};
  for (const [key, on] of Object.entries(fields.capabilities ?? {})) {
    capabilities[key] = on === true;
  }
  return {
    raw,
    type: fields.type,
    name: fields.name ?? "",
    cniVersion: fields.cniVersion ?? "",
    capabilities,
  };
}

function listError(msg: string): Error {
  return new Error(`error parsing configuration list: ${msg}`);
}

/** Newer than the spec version cnikit implements. */
function tooNew(version: string): boolean {
  return compareVersions(version, CURRENT_VERSION) > 0;
}

function negotiateVersion(list: Record<string, unknown>, declared: string): string {
  if (!("cniVersions" in list)) return declared;
  const listed = list.cniVersions;
  if (!Array.isArray(listed)) {
    throw listError(`invalid type for cniVersions: ${goTypeName(listed)}`);
  }
  const usable: string[] = [];
  listed.forEach((v: unknown, i) => {
    if (typeof v !== "string") {
      throw listError(`invalid type for cniVersions index ${i}: ${goTypeName(v)}`);
    }
    try {
      if (!tooNew(v)) usable.push(v);
    } catch (e) {
      throw listError(`invalid cniVersions entry ${v} at index ${i}: ${errorText(e)}`);
    }
  });
  if (declared !== "") {
    try {
      if (!tooNew(declared)) usable.push(declared);
    } catch (e) {
      throw listError(`invalid cniVersion ${declared}: ${errorText(e)}`);
    }
  }
  // The newest one both sides speak.
  return usable.reduce((best, v) => compareVersions(v, best) > 0 ? v : best, usable[0] ?? declared);
}

function readBool(list: Record<string, unknown>, key: string): boolean {
  if (!(key in list)) return false;
  const value = list[key];
  if (typeof value === "boolean") return value;
  if (typeof value !== "string") throw listError(`invalid type ${goTypeName(value)} for ${key}`);
  const lower = value.toLowerCase();
  if (lower === "true") return true;
  if (lower === "false") return false;
  throw listError(`invalid value ${JSON.stringify(lower)} for ${key}`);
}

/**
 * Parses a network configuration list (the bytes of a `.conflist`). A list
 * without `plugins` is accepted here with none, unless
 * `loadOnlyInlinedPlugins` is set; {@link networkConfFromFile} adds the
 * sibling-folder plugins.
 */
export function networkConfFromBytes(bytes: Uint8Array): NetworkConfigList {
  const value = parseJson(bytes, "error parsing configuration list");
  if (value !== null && (typeof value !== "object" || Array.isArray(value))) {
    throw listError(`cannot decode ${goTypeName(value)} as a configuration list`);
  }
  const list = (value ?? {}) as Record<string, unknown>;
  if (!("name" in list)) throw listError("no name");
  if (typeof list.name !== "string") throw listError(`invalid name type ${goTypeName(list.name)}`);
  let declared = "";
  if ("cniVersion" in list) {
    if (typeof list.cniVersion !== "string") {
      throw listError(`invalid cniVersion type ${goTypeName(list.cniVersion)}`);
    }
    declared = list.cniVersion;
  }
  const cniVersion = negotiateVersion(list, declared);
  const disableCheck = readBool(list, "disableCheck");
  const disableGC = readBool(list, "disableGC");
  const loadOnlyInlinedPlugins = readBool(list, "loadOnlyInlinedPlugins");
  const base = {
    name: list.name,
    cniVersion,
    disableCheck,
    disableGC,
    loadOnlyInlinedPlugins,
    bytes,
  };
  if (!("plugins" in list)) {
    if (loadOnlyInlinedPlugins) {
      throw listError("`loadOnlyInlinedPlugins` is true, and no 'plugins' key");
    }
    return { ...base, plugins: [] };
  }
  const plugins = list.plugins;
  if (!Array.isArray(plugins)) throw listError(`invalid 'plugins' type ${goTypeName(plugins)}`);
  if (plugins.length === 0) throw listError("no plugins in list");
  return {
    ...base,
    plugins: plugins.map((plugin: unknown, i) => {
      try {
        return pluginConfFromBytes(encoder.encode(marshalMap(plugin)));
      } catch (e) {
        throw new Error(`failed to parse plugin config ${i}: ${errorText(e)}`);
      }
    }),
  };
}

/**
 * The files of `dir` whose extension is one of `extensions`, unsorted;
 * folders are skipped and a missing `dir` has none.
 */
export function confFiles(dir: string, extensions: readonly string[]): string[] {
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  return entries
    .filter((e) => !e.isDirectory && extensions.includes(extName(e.name)))
    .map((e) => joinPath(dir, e.name));
}

function byteOrder(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function readFile(path: string): Uint8Array {
  try {
    return Deno.readFileSync(path);
  } catch (e) {
    throw new Error(`error reading ${path}: ${(e as Error).message}`);
  }
}

/** Reads the plugins kept in `<dir>/<network>/*.conf`, in name order. */
export function pluginConfsFromFolder(dir: string, network: string): PluginConfig[] {
  const folder = joinPath(dir, network);
  let files: string[];
  try {
    files = confFiles(folder, [".conf"]).sort(byteOrder);
  } catch (e) {
    throw new Error(`failed to read plugin config files in ${folder}: ${(e as Error).message}`);
  }
  return files.map((file) => pluginConfFromBytes(readFile(file)));
}

/**
 * Loads a `.conflist` file. Unless `loadOnlyInlinedPlugins` is set, plugins
 * from the sibling folder named after the network follow the inline ones.
 */
export function networkConfFromFile(path: string): NetworkConfigList {
  const list = networkConfFromBytes(readFile(path));
  const siblings = list.loadOnlyInlinedPlugins
    ? []
    : pluginConfsFromFolder(dirName(path), list.name);
  const plugins = [...list.plugins, ...siblings];
  if (plugins.length === 0) throw new Error("no plugin configs found");
  return { ...list, plugins };
}

/**
 * Turns a single-plugin configuration into a one-plugin list carrying its
 * name and version; the list's bytes are the re-marshalled list.
 */
export function confListFromConf(conf: PluginConfig): NetworkConfigList {
  const list = { name: conf.name, cniVersion: conf.cniVersion, plugins: [conf.raw] };
  return networkConfFromBytes(encoder.encode(marshalMap(list)));
}

function loadSingleConf(dir: string, name: string): PluginConfig {
  const files = confFiles(dir, [".conf", ".json"]).sort(byteOrder);
  if (files.length === 0) throw new NoConfigsFoundError(dir);
  for (const file of files) {
    const conf = pluginConfFromBytes(readFile(file));
    if (conf.name === name) return conf;
  }
  throw new NotFoundError(dir, name);
}

/**
 * Finds network `name` in `dir`: the first `.conflist` (in path order) of
 * that name, else the first `.conf`/`.json` of that name as a one-plugin
 * list. A file that fails to load stops the search.
 */
export function loadNetworkConf(dir: string, name: string): NetworkConfigList {
  const lists = confFiles(dir, [".conflist"]).sort(byteOrder);
  for (const file of lists) {
    const list = networkConfFromFile(file);
    if (list.name === name) return list;
  }
  let single: PluginConfig;
  try {
    single = loadSingleConf(dir, name);
  } catch (e) {
    if (lists.length && e instanceof NoConfigsFoundError) throw new NotFoundError(dir, name);
    throw e;
  }
  return confListFromConf(single);
}
