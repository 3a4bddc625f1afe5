/**
 * The runtime side of CNI, with libcni's behaviour: running a network's
 * plugins for ADD, CHECK, DEL, GC and STATUS, building each request
 * (name, version, capabilities, prevResult), caching results, and wording
 * errors as libcni does. Plugins that are cnikit applets run in this process
 * (see lib/invoke.ts).
 * @module
 */

import { CniError } from "../lib/cni/errors.ts";
import { cniEnvironment, type CniVars, type PluginExec, processExec } from "../lib/cni/invoke.ts";
import { validateContainerId, validateIfName, validateNetworkName } from "../lib/cni/validate.ts";
import { parseResult, resultToJSON } from "../lib/cni/spec/convert.ts";
import type { AnyResult } from "../lib/cni/spec/schemas.ts";
import { CURRENT_VERSION, normalizeVersion, versionAtLeast } from "../lib/cni/spec/version.ts";
import { type NetworkAttachment, ResultCache } from "./cache.ts";
import type { NetworkConfigList, PluginConfig } from "./config.ts";
import { errorText, marshalMap } from "./go.ts";
import type { GCArgs, RuntimeConf } from "./types.ts";

/** How the runtime finds and runs plugins. */
export interface RuntimeOptions {
  /** Folders searched for plugin executables, in order. */
  path: string[];
  /** The cache folder; /var/lib/cni by default. */
  cacheDir?: string;
  /** Deadline for each plugin call. */
  timeoutMs?: number;
  /** The environment plugins inherit; this process's by default. */
  env?: Record<string, string>;
  /** How plugins are found and run; as processes from `path` by default. */
  exec?: PluginExec;
}

/** CHECK asked of a network whose version predates it. */
export class CheckNotSupportedError extends Error {
  constructor(version: string) {
    super(`configuration version "${version}" does not support the CHECK command`);
    this.name = "CheckNotSupportedError";
  }
}

/** `e` with `prefix` in front of its text, keeping a CNI error's code. */
function wrap(prefix: string, e: unknown): Error {
  if (e instanceof CniError) return new CniError(e.code, prefix + e.message, e.details);
  return new Error(prefix + errorText(e), { cause: e });
}

/** `type="bridge"` or `type="bridge" name="mynet"`, as errors name a plugin. */
function describePlugin(plugin: PluginConfig): string {
  const type = `type=${JSON.stringify(plugin.type)}`;
  return plugin.name ? `${type} name=${JSON.stringify(plugin.name)}` : type;
}

/** Only the capabilities the plugin enables and the runtime supplies. */
function runtimeConfigFor(
  plugin: PluginConfig,
  rt: RuntimeConf,
): Record<string, unknown> | undefined {
  const offered = rt.capabilityArgs ?? {};
  const out: Record<string, unknown> = {};
  for (const [capability, enabled] of Object.entries(plugin.capabilities)) {
    if (enabled && Object.hasOwn(offered, capability)) out[capability] = offered[capability];
  }
  return Object.keys(out).length ? out : undefined;
}

const encoder = new TextEncoder();

/**
 * The stdin of one plugin call: the plugin object with the network's name
 * and version, the previous result and the runtime config injected.
 */
export function buildRequest(
  list: Pick<NetworkConfigList, "name" | "cniVersion">,
  plugin: PluginConfig,
  prevResult?: AnyResult,
  rt?: RuntimeConf,
): Uint8Array {
  const conf: Record<string, unknown> = {
    ...plugin.raw,
    name: list.name,
    cniVersion: list.cniVersion,
  };
  if (prevResult) conf.prevResult = resultToJSON(prevResult);
  const runtimeConfig = rt && runtimeConfigFor(plugin, rt);
  if (runtimeConfig) conf.runtimeConfig = runtimeConfig;
  return encoder.encode(marshalMap(conf));
}

/** Decodes an ADD's stdout in the version it declares, else the config's. */
function decodeResult(stdout: string, configVersion: string): AnyResult {
  let value: unknown;
  try {
    value = JSON.parse(stdout);
  } catch (e) {
    throw new Error(`failed to unmarshal raw result: ${(e as Error).message}`);
  }
  return parseResult(value, normalizeVersion(configVersion));
}

/** Decodes a VERSION answer into the versions the plugin supports. */
function decodeVersionInfo(stdout: string): string[] {
  let info: { cniVersion?: unknown; supportedVersions?: unknown };
  try {
    info = JSON.parse(stdout) ?? {};
  } catch (e) {
    throw new Error(`decoding version info: ${(e as Error).message}`);
  }
  if (typeof info.cniVersion !== "string" || info.cniVersion === "") {
    throw new Error("decoding version info: missing field cniVersion");
  }
  const supported = info.supportedVersions;
  if (Array.isArray(supported) && supported.length) {
    if (!supported.every((v) => typeof v === "string")) {
      throw new Error("decoding version info: supportedVersions must be strings");
    }
    return supported;
  }
  if (info.cniVersion === "0.2.0") return ["0.1.0", "0.2.0"];
  throw new Error("decoding version info: missing field supportedVersions");
}

/** A CNI runtime over one plugin path and one result cache (libcni's `CNIConfig`). */
export class CniRuntime {
  readonly path: string[];
  readonly cache: ResultCache;
  readonly timeoutMs: number | undefined;
  readonly #env: Record<string, string> | undefined;
  readonly #exec: PluginExec;

  constructor(options: RuntimeOptions) {
    this.path = options.path;
    this.cache = new ResultCache(options.cacheDir);
    this.timeoutMs = options.timeoutMs;
    this.#env = options.env;
    this.#exec = options.exec ?? processExec;
  }

  #find(type: string): string {
    return this.#exec.findPlugin(type, this.path);
  }

  /** Runs the plugin at `path`; CNI_PATH is this runtime's unless `vars` says otherwise. */
  async #run(path: string, vars: CniVars, stdin: Uint8Array): Promise<string> {
    const env = cniEnvironment({ path: this.path, ...vars }, this.#env ?? Deno.env.toObject());
    return await this.#exec.execPlugin(path, env, stdin, { timeoutMs: this.timeoutMs });
  }

  /** Looks `type` up (again on every call, as plugins may come and go) and runs it. */
  async #runType(type: string, vars: CniVars, stdin: Uint8Array): Promise<string> {
    return await this.#run(this.#find(type), vars, stdin);
  }

  #attachmentVars(command: CniVars["command"], rt: RuntimeConf): CniVars {
    return {
      command,
      containerId: rt.containerId,
      netns: rt.netns,
      ifname: rt.ifname,
      args: rt.args ?? [],
    };
  }

  async #addOne(
    list: NetworkConfigList,
    plugin: PluginConfig,
    prev: AnyResult | undefined,
    rt: RuntimeConf,
  ): Promise<AnyResult> {
    const path = this.#find(plugin.type);
    validateContainerId(rt.containerId);
    validateNetworkName(list.name);
    validateIfName(rt.ifname);
    const stdin = buildRequest(list, plugin, prev, rt);
    const stdout = await this.#run(path, this.#attachmentVars("ADD", rt), stdin);
    return decodeResult(stdout, list.cniVersion);
  }

  /**
   * ADD: runs the plugins in order, each getting the previous one's result,
   * then caches and returns the last result (`undefined` only for a list
   * without plugins). A failure stops the chain; nothing is cached and no
   * DEL is run (that is the caller's duty).
   */
  async addNetworkList(list: NetworkConfigList, rt: RuntimeConf): Promise<AnyResult | undefined> {
    let result: AnyResult | undefined;
    for (const plugin of list.plugins) {
      try {
        result = await this.#addOne(list, plugin, result, rt);
      } catch (e) {
        throw wrap(`plugin ${describePlugin(plugin)} failed (add): `, e);
      }
    }
    try {
      this.cache.write(result, list.bytes, list.name, rt);
    } catch (e) {
      throw wrap(`failed to set network "${list.name}" cached result: `, e);
    }
    return result;
  }

  /**
   * CHECK (spec 0.4.0 and later): runs the plugins in order, each getting
   * the cached result. Nothing runs when the list sets `disableCheck`.
   */
  async checkNetworkList(list: NetworkConfigList, rt: RuntimeConf): Promise<void> {
    if (!versionAtLeast(list.cniVersion, "0.4.0")) {
      throw new CheckNotSupportedError(list.cniVersion);
    }
    if (list.disableCheck) return;
    let cached: AnyResult | undefined;
    try {
      cached = this.cache.readResult(list.name, list.cniVersion, rt);
    } catch (e) {
      throw wrap(`failed to get network "${list.name}" cached result: `, e);
    }
    for (const plugin of list.plugins) {
      await this.#runType(
        plugin.type,
        this.#attachmentVars("CHECK", rt),
        buildRequest(list, plugin, cached, rt),
      );
    }
  }

  /**
   * DEL: runs the plugins in reverse order, each getting the cached result
   * (0.4.0 and later), and removes the cache entry once all succeeded. An
   * unreadable cache entry is dropped and DEL goes on without prevResult.
   */
  async delNetworkList(list: NetworkConfigList, rt: RuntimeConf): Promise<void> {
    let cached: AnyResult | undefined;
    if (versionAtLeast(list.cniVersion, "0.4.0")) {
      try {
        cached = this.cache.readResult(list.name, list.cniVersion, rt);
      } catch {
        this.cache.remove(list.name, rt);
      }
    }
    for (const plugin of [...list.plugins].reverse()) {
      try {
        await this.#runType(
          plugin.type,
          this.#attachmentVars("DEL", rt),
          buildRequest(list, plugin, cached, rt),
        );
      } catch (e) {
        throw wrap(`plugin ${describePlugin(plugin)} failed (delete): `, e);
      }
    }
    this.cache.remove(list.name, rt);
  }

  /**
   * GC: DELs every cached attachment of this network that `args` does not
   * name as valid (all of them without `args`), then, for 1.1.0 and later,
   * sends GC to every plugin. Goes on past failures and throws them
   * together. Nothing happens when the list sets `disableGC`.
   */
  async gcNetworkList(list: NetworkConfigList, args?: GCArgs): Promise<void> {
    if (list.disableGC) return;
    let cached: NetworkAttachment[];
    try {
      cached = this.cache.attachments();
    } catch {
      return;
    }
    const valid = new Set(
      (args?.validAttachments ?? []).map((a) => JSON.stringify([a.containerID, a.ifname])),
    );
    const errors: Error[] = [];
    for (const attachment of cached) {
      if (attachment.network !== list.name) continue;
      if (valid.has(JSON.stringify([attachment.containerId, attachment.ifName]))) continue;
      const rt: RuntimeConf = {
        containerId: attachment.containerId,
        netns: attachment.netns,
        ifname: attachment.ifName,
      };
      if (attachment.cniArgs) rt.args = attachment.cniArgs;
      if (attachment.capabilityArgs) rt.capabilityArgs = attachment.capabilityArgs;
      try {
        await this.delNetworkList(list, rt);
      } catch (e) {
        errors.push(wrap(`failed to delete stale attachment ${rt.containerId} ${rt.ifname}: `, e));
      }
    }
    if (atLeast(list.cniVersion, "1.1.0")) {
      const inject: Record<string, unknown> = { name: list.name, cniVersion: list.cniVersion };
      if (args) {
        // The 1.1.0 text named the key cni.dev/attachments by mistake; send both.
        inject["cni.dev/valid-attachments"] = args.validAttachments ?? null;
        inject["cni.dev/attachments"] = args.validAttachments ?? null;
      }
      for (const plugin of list.plugins) {
        try {
          await this.#runType(
            plugin.type,
            { command: "GC" },
            encoder.encode(marshalMap({ ...plugin.raw, ...inject })),
          );
        } catch (e) {
          errors.push(wrap(`failed to GC plugin ${plugin.type}: `, e));
        }
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length) throw new AggregateError(errors, errors.map(errorText).join("\n"));
  }

  /**
   * STATUS (1.1.0 and later): asks each plugin in order whether it can take
   * ADDs; the first failure is thrown as the plugin reported it, so its code
   * (50, 51) survives.
   */
  async statusNetworkList(list: NetworkConfigList): Promise<void> {
    if (!atLeast(list.cniVersion, "1.1.0")) return;
    for (const plugin of list.plugins) {
      const stdin = marshalMap({ ...plugin.raw, name: list.name, cniVersion: list.cniVersion });
      await this.#runType(plugin.type, { command: "STATUS" }, encoder.encode(stdin));
    }
  }

  /** The spec versions a plugin supports, by asking it (VERSION). */
  async versionInfo(type: string): Promise<string[]> {
    const path = this.#find(type);
    // Old skels insist on these being set even for VERSION.
    const vars: CniVars = { command: "VERSION", netns: "dummy", ifname: "dummy", path: ["dummy"] };
    let stdout: string;
    try {
      stdout = await this.#run(
        path,
        vars,
        encoder.encode(JSON.stringify({ cniVersion: CURRENT_VERSION })),
      );
    } catch (e) {
      if (errorText(e) === "unknown CNI_COMMAND: VERSION") return ["0.1.0"];
      throw e;
    }
    return decodeVersionInfo(stdout);
  }

  /**
   * Checks that every plugin exists and supports the list's version;
   * returns the capabilities the plugins enable. All problems are reported
   * together.
   */
  async validateNetworkList(list: NetworkConfigList): Promise<string[]> {
    const expected = normalizeVersion(list.cniVersion);
    const errors: string[] = [];
    const capabilities = new Set<string>();
    for (const plugin of list.plugins) {
      try {
        if (!(await this.versionInfo(plugin.type)).includes(expected)) {
          throw new Error(`plugin ${plugin.type} does not support config version "${expected}"`);
        }
      } catch (e) {
        errors.push(errorText(e));
      }
      for (const [name, on] of Object.entries(plugin.capabilities)) if (on) capabilities.add(name);
    }
    if (errors.length) throw new Error(`[${errors.join(" ")}]`);
    return [...capabilities];
  }
}

/** `a >= b`, with an unparsable version counting as older. */
function atLeast(a: string, b: string): boolean {
  try {
    return versionAtLeast(a, b);
  } catch {
    return false;
  }
}
