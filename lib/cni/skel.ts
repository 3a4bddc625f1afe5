/**
 * The plugin skeleton: everything between a runtime's exec and a plugin's
 * `add`/`check`/`del` handler. It validates the environment in the order and
 * with the codes of the reference skel, negotiates versions, decodes
 * `prevResult`, prints the result in the config's version, and renders every
 * failure as a CNI error object. Plugins written outside this repository use
 * the same entry point (see examples/).
 * @module
 */

import { CNIKIT_VERSION } from "./about.ts";
import { CniError, ErrorCode, toErrorObject } from "./errors.ts";
import {
  isOwnNetns,
  validateContainerId,
  validateIfName,
  validateNetworkName,
} from "./validate.ts";
import {
  convertResult,
  isKnownResultVersion,
  parseResult,
  resultToJSON,
  sameResultShape,
  toCurrentResult,
} from "./spec/convert.ts";
import { GCAttachment, type Result } from "./spec/schemas.ts";
import {
  ALL_VERSIONS,
  CURRENT_VERSION,
  normalizeVersion,
  versionAnswer,
  versionAtLeast,
} from "./spec/version.ts";
import * as z from "zod/mini";

/** The verbs of the CNI protocol. */
export type Command = "ADD" | "DEL" | "CHECK" | "GC" | "STATUS" | "VERSION";

/** Everything a handler gets about one invocation. */
export interface CmdArgs {
  command: Command;
  containerId: string;
  netns: string;
  ifname: string;
  /** Raw CNI_ARGS; parse with `parseCniArgs`. */
  args: string;
  /** CNI_PATH split into directories. */
  path: string[];
  /** The config bytes as received, passed on unchanged to delegates. */
  stdin: Uint8Array;
  /** The config as a JSON object. */
  config: Record<string, unknown>;
  /** The config's cniVersion, "" read as 0.1.0. */
  cniVersion: string;
  /** `prevResult`, converted to the current result shape. */
  prevResult?: Result;
  /** For GC: the attachments that are still valid. */
  validAttachments?: GCAttachment[];
  /** The environment the plugin was started with (for delegation). */
  env: Record<string, string>;
}

/** A CNI plugin: a name and the handlers for the verbs it implements. */
export interface Plugin {
  readonly name: string;
  /** Spec versions the plugin accepts; all of them when absent. */
  readonly versions?: readonly string[];
  add(args: CmdArgs): Promise<Result>;
  del(args: CmdArgs): Promise<void>;
  check?(args: CmdArgs): Promise<void>;
  /** When absent, GC is a successful no-op (as in the reference skel). */
  gc?(args: CmdArgs): Promise<void>;
  /** When absent, STATUS reports ready. */
  status?(args: CmdArgs): Promise<void>;
}

/** How the plugin was started: its environment and a way to read stdin. */
export interface PluginIO {
  env: Record<string, string>;
  readStdin(): Promise<Uint8Array>;
}

/** What the plugin printed on stdout and the exit code it ends with. */
export interface PluginOutput {
  code: number;
  stdout: string;
}

type Requirement = Partial<Record<Command, boolean>>;
const ENV_TABLE: [string, Requirement, ((v: string) => void)?][] = [
  ["CNI_COMMAND", { ADD: true, CHECK: true, DEL: true, GC: true, STATUS: true }],
  ["CNI_CONTAINERID", { ADD: true, CHECK: true, DEL: true }, validateContainerId],
  ["CNI_NETNS", { ADD: true, CHECK: true }],
  ["CNI_IFNAME", { ADD: true, CHECK: true, DEL: true }, validateIfName],
  // The Go skel requires CNI_PATH for every verb but VERSION (GC and STATUS
  // since libcni 1.2), whether or not the plugin delegates: a runtime that
  // forgets it learns so before anything is reserved.
  ["CNI_PATH", { ADD: true, CHECK: true, DEL: true, GC: true, STATUS: true }],
];

function validateEnv(env: Record<string, string>, command: string): void {
  const missing: string[] = [];
  for (const [name, required, validate] of ENV_TABLE) {
    const value = env[name] ?? "";
    const needed = required[command as Command] === true;
    if (value === "") {
      if (needed || name === "CNI_COMMAND") missing.push(name);
    } else if (needed && validate) {
      validate(value);
    }
  }
  if (missing.length) {
    throw new CniError(
      ErrorCode.invalidEnvironment,
      `required env variables [${missing.join(",")}] missing`,
    );
  }
}

function decodeConfig(stdin: Uint8Array): Record<string, unknown> {
  let config: unknown;
  try {
    config = JSON.parse(new TextDecoder().decode(stdin));
  } catch (e) {
    throw new CniError(
      ErrorCode.decodingFailure,
      `error unmarshall network config: ${(e as Error).message}`,
    );
  }
  if (typeof config !== "object" || config === null || Array.isArray(config)) {
    throw new CniError(
      ErrorCode.decodingFailure,
      "error unmarshall network config: not a JSON object",
    );
  }
  const name = (config as { name?: unknown }).name;
  if (name !== undefined && typeof name !== "string") {
    throw new CniError(
      ErrorCode.decodingFailure,
      "error unmarshall network config: name is not a string",
    );
  }
  validateNetworkName(name ?? "");
  return config as Record<string, unknown>;
}

function configVersion(config: Record<string, unknown>): string {
  const v = config.cniVersion;
  if (v !== undefined && typeof v !== "string") {
    throw new CniError(ErrorCode.decodingFailure, "cniVersion must be a string");
  }
  return normalizeVersion(v);
}

function requireVersion(plugin: Plugin, version: string): void {
  const supported = plugin.versions ?? ALL_VERSIONS;
  if (!supported.includes(version)) {
    throw new CniError(
      ErrorCode.incompatibleVersion,
      "incompatible CNI versions",
      `config is "${version}", plugin supports [${supported.map((s) => `"${s}"`).join(" ")}]`,
    );
  }
}

function requireAtLeast(version: string, minimum: string, verb: string): void {
  let ok: boolean;
  try {
    ok = versionAtLeast(version, minimum);
  } catch (e) {
    throw new CniError(ErrorCode.decodingFailure, (e as Error).message);
  }
  if (!ok) {
    throw new CniError(ErrorCode.incompatibleVersion, `config version does not allow ${verb}`);
  }
}

function decodePrevResult(config: Record<string, unknown>, version: string): Result | undefined {
  const raw = config.prevResult;
  if (raw === undefined || raw === null) return undefined;
  const parsed = parseResult(raw, version);
  if (!sameResultShape(parsed.cniVersion, version)) {
    throw new CniError(
      ErrorCode.decodingFailure,
      `could not parse prevResult: result version "${parsed.cniVersion}" does not match config version "${version}"`,
    );
  }
  return toCurrentResult(parsed);
}

/**
 * DEL's prevResult, or undefined when it cannot be read. DEL must clean up
 * whatever it can: a prevResult only adds hints (the host veth's name), and
 * the cleanup by name and container ID must not depend on it. The
 * reference reads it only where it needs it, and succeeds the same way.
 */
async function prevResultForDel(
  config: Record<string, unknown>,
  version: string,
): Promise<Result | undefined> {
  try {
    return decodePrevResult(config, version);
  } catch (e) {
    if (!(e instanceof CniError)) throw e;
    await Deno.stderr.write(
      new TextEncoder().encode(`DEL ignores a prevResult it cannot read: ${e.message}\n`),
    );
    return undefined;
  }
}

const GCRequest = z.looseObject({
  "cni.dev/valid-attachments": z.nullish(z.array(GCAttachment)),
  "cni.dev/attachments": z.nullish(z.array(GCAttachment)),
});

function pretty(value: unknown): string {
  return JSON.stringify(value, null, 4);
}

/** The text printed when a plugin is run by hand without CNI_COMMAND. */
export function aboutText(plugin: Plugin): string {
  return `CNI ${plugin.name} plugin cnikit ${CNIKIT_VERSION}\nCNI protocol versions supported: ${
    (plugin.versions ?? ALL_VERSIONS).join(", ")
  }\n`;
}

/**
 * Runs one plugin invocation to completion and returns what to print and
 * the exit code. Never throws: every failure becomes a CNI error object.
 */
export async function runPlugin(plugin: Plugin, io: PluginIO): Promise<PluginOutput> {
  let version = CURRENT_VERSION;
  try {
    const command = io.env.CNI_COMMAND ?? "";
    if (command === "") {
      await Deno.stderr.write(new TextEncoder().encode(aboutText(plugin)));
      return { code: 0, stdout: "" };
    }
    validateEnv(io.env, command);
    if (command === "VERSION") return { code: 0, stdout: versionAnswer(plugin.versions) };
    let stdin: Uint8Array;
    try {
      stdin = await io.readStdin();
    } catch (e) {
      throw new CniError(ErrorCode.ioFailure, `error reading from stdin: ${(e as Error).message}`);
    }
    const config = decodeConfig(stdin);
    if (!["ADD", "DEL", "CHECK", "GC", "STATUS"].includes(command)) {
      throw new CniError(ErrorCode.invalidEnvironment, `unknown CNI_COMMAND: ${command}`);
    }
    const configured = configVersion(config);
    // Errors carry the config's version only when it is one a runtime can
    // read back; an unknown or malformed one gets the newest instead.
    if (isKnownResultVersion(configured)) version = configured;
    if (command === "CHECK") requireAtLeast(configured, "0.4.0", "CHECK");
    if (command === "GC" || command === "STATUS") requireAtLeast(configured, "1.1.0", command);
    requireVersion(plugin, configured);

    const netns = io.env.CNI_NETNS ?? "";
    const override = (io.env.CNI_NETNS_OVERRIDE ?? "").toLowerCase();
    if (
      (command === "ADD" || command === "DEL") && netns && override !== "1" && override !== "true"
    ) {
      if (isOwnNetns(netns)) {
        throw new CniError(
          ErrorCode.invalidNetns,
          "plugin's netns and netns from CNI_NETNS should not be the same",
        );
      }
    }
    const args: CmdArgs = {
      command: command as Command,
      containerId: io.env.CNI_CONTAINERID ?? "",
      netns,
      ifname: io.env.CNI_IFNAME ?? "",
      args: io.env.CNI_ARGS ?? "",
      path: (io.env.CNI_PATH ?? "").split(":").filter(Boolean),
      stdin,
      config,
      cniVersion: configured,
      env: io.env,
    };
    if (command === "ADD" || command === "CHECK") {
      const prev = decodePrevResult(config, configured);
      if (prev) args.prevResult = prev;
    } else if (command === "DEL") {
      const prev = await prevResultForDel(config, configured);
      if (prev) args.prevResult = prev;
    }
    switch (command) {
      case "ADD": {
        const result = await plugin.add(args);
        return { code: 0, stdout: pretty(resultToJSON(convertResult(result, configured))) };
      }
      case "DEL":
        await plugin.del(args);
        break;
      case "CHECK":
        await plugin.check?.(args);
        break;
      case "GC": {
        const gc = GCRequest.safeParse(config);
        if (!gc.success) {
          throw new CniError(ErrorCode.decodingFailure, "invalid cni.dev/valid-attachments");
        }
        args.validAttachments = gc.data["cni.dev/valid-attachments"] ??
          gc.data["cni.dev/attachments"] ?? [];
        await plugin.gc?.(args);
        break;
      }
      case "STATUS":
        await plugin.status?.(args);
        break;
    }
    return { code: 0, stdout: "" };
  } catch (error) {
    return { code: 1, stdout: pretty(toErrorObject(error, version)) };
  }
}

/**
 * Reads all of stdin synchronously: a config is small, and the streams API
 * costs ~5 ms of start-up on every plugin call.
 */
function readStdinSync(): Uint8Array {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(65536);
  let total = 0;
  for (let n = Deno.stdin.readSync(buffer); n !== null; n = Deno.stdin.readSync(buffer)) {
    chunks.push(buffer.slice(0, n));
    total += n;
  }
  const all = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    all.set(chunk, offset);
    offset += chunk.length;
  }
  return all;
}

/**
 * Runs `plugin` as the process's main program: reads the real environment
 * and stdin, prints, and exits. This is the SDK entry point.
 */
export async function pluginMain(plugin: Plugin): Promise<never> {
  const output = await runPlugin(plugin, {
    env: Deno.env.toObject(),
    readStdin: () => Promise.resolve(readStdinSync()),
  });
  if (output.stdout) await Deno.stdout.write(new TextEncoder().encode(output.stdout));
  Deno.exit(output.code);
}
