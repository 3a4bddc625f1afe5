/**
 * cnitool: runs a network configuration against a network namespace, as
 * the reference cnitool does (`cnitool <add|check|del|gc|status> <network>
 * <netns>`), reading the same environment variables, plus CNI_CACHE_DIR and
 * CNI_TIMEOUT.
 * @module
 */

import { CniError } from "../lib/cni/errors.ts";
import { sha512Hex } from "../lib/cni/hash.ts";
import { CNIKIT_VERSION } from "../lib/cni/about.ts";
import { ALL_VERSIONS } from "../lib/cni/spec/version.ts";
import { DEFAULT_CACHE_DIR } from "./cache.ts";
import { DEFAULT_NETCONF_PATH, loadNetworkConf, type NetworkConfigList } from "./config.ts";
import { absPath, errorText, marshalIndent } from "./go.ts";
import { resultToJSON } from "../lib/cni/spec/convert.ts";
import { CniRuntime } from "./runtime.ts";
import type { RuntimeConf } from "./types.ts";

/** A mistake in how cnitool was called: reported with a pointer to --help. */
class UsageError extends Error {}

interface Verb {
  summary: string;
  run(runtime: CniRuntime, list: NetworkConfigList, rt: RuntimeConf): Promise<string>;
}

const VERBS: Record<string, Verb> = {
  add: {
    summary: "Attach the network to a namespace and print the result",
    async run(runtime, list, rt) {
      const result = await runtime.addNetworkList(list, rt);
      return result ? marshalIndent(resultToJSON(result)) : "";
    },
  },
  check: {
    summary: "Check that an attachment is still as ADD left it (0.4.0 and later)",
    async run(runtime, list, rt) {
      await runtime.checkNetworkList(list, rt);
      return "";
    },
  },
  del: {
    summary: "Detach the network from a namespace",
    async run(runtime, list, rt) {
      await runtime.delNetworkList(list, rt);
      return "";
    },
  },
  gc: {
    summary: "Delete every cached attachment of the network, then send GC (1.1.0 and later)",
    async run(runtime, list) {
      // No list of valid attachments: cnitool knows of none, so all go.
      await runtime.gcNetworkList(list);
      return "";
    },
  },
  status: {
    summary: "Ask the network's plugins whether they can take ADDs (1.1.0 and later)",
    async run(runtime, list) {
      await runtime.statusNetworkList(list);
      return "";
    },
  },
};

const ENVIRONMENT = `Environment:
  NETCONFPATH     folder of network configurations (default ${DEFAULT_NETCONF_PATH})
  CNI_PATH        plugin folders, separated by ":"
  CNI_ARGS        extra arguments for the plugins, "K1=V1;K2=V2"
  CAP_ARGS        capability arguments as a JSON object, e.g. '{"portMappings":[...]}'
  CNI_IFNAME      interface name when -i is not given (default eth0)
  CNI_CACHE_DIR   result cache folder (default ${DEFAULT_CACHE_DIR}; cnikit only)
  CNI_TIMEOUT     seconds each plugin call may take (default: no limit; cnikit only)`;

const FLAGS = `Flags:
  -h, --help            show this help
  -i, --ifname string   interface name (default: $CNI_IFNAME, else eth0)`;

function rootHelp(): string {
  const rows = [
    ...Object.entries(VERBS).map(([name, v]) => [name, v.summary]),
    ["help", "Show help for a command"],
    ["version", "Show the cnitool and CNI spec versions"],
  ];
  return `cnitool runs a CNI network configuration against an existing network namespace.

Usage:
  cnitool <command> <network-name> <netns> [flags]

Commands:
${rows.map(([name, summary]) => `  ${name!.padEnd(9)}${summary}`).join("\n")}

${FLAGS}

${ENVIRONMENT}

The container ID is "cnitool-" and the first 20 hex digits of the SHA-512 of the
absolute netns path, so every command on the same netns names the same attachment.
`;
}

function verbHelp(name: string): string {
  return `${VERBS[name]!.summary}.

Usage:
  cnitool ${name} <network-name> <netns> [flags]

${FLAGS}

${ENVIRONMENT}
`;
}

function versionText(): string {
  return `cnitool (cnikit ${CNIKIT_VERSION})\nCNI protocol versions supported: ${
    ALL_VERSIONS.join(", ")
  }\n`;
}

interface ParsedArgs {
  positionals: string[];
  ifname: string;
  help: boolean;
}

/** Flags may come anywhere, as with cobra: `-i X`, `-iX`, `-i=X`, `--ifname[=]X`, `--`. */
function parseArgs(args: string[]): ParsedArgs {
  const out: ParsedArgs = { positionals: [], ifname: "", help: false };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--") {
      out.positionals.push(...args.slice(i + 1));
      break;
    }
    if (arg === "-h" || arg === "--help") {
      out.help = true;
    } else if (arg === "-i" || arg === "--ifname") {
      if (i + 1 >= args.length) {
        throw new UsageError(
          arg === "-i" ? "flag needs an argument: 'i' in -i" : "flag needs an argument: --ifname",
        );
      }
      out.ifname = args[++i]!;
    } else if (arg.startsWith("--ifname=")) {
      out.ifname = arg.slice("--ifname=".length);
    } else if (arg.startsWith("-i") && !arg.startsWith("--")) {
      out.ifname = arg.slice(arg[2] === "=" ? 3 : 2);
    } else if (arg.startsWith("--")) {
      throw new UsageError(`unknown flag: ${arg.split("=")[0]}`);
    } else if (arg.startsWith("-") && arg !== "-") {
      throw new UsageError(`unknown shorthand flag: '${arg[1]}' in ${arg}`);
    } else {
      out.positionals.push(arg);
    }
  }
  return out;
}

/** CNI_ARGS for cnitool: strictly `K=V` pairs, none empty. */
export function parseCnitoolArgs(text: string): [string, string][] {
  return text.split(";").map((pair) => {
    const kv = pair.split("=");
    if (kv.length !== 2 || kv[0] === "" || kv[1] === "") {
      throw new Error(`invalid CNI_ARGS pair ${JSON.stringify(pair)}`);
    }
    return [kv[0]!, kv[1]!];
  });
}

function parseCapArgs(text: string): Record<string, unknown> | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new Error(`invalid CAP_ARGS: ${(e as Error).message}`);
  }
  if (value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new Error("invalid CAP_ARGS: not a JSON object");
  }
  return value as Record<string, unknown>;
}

function parseTimeout(text: string): number | undefined {
  if (text === "") return undefined;
  const seconds = Number(text);
  if (!Number.isFinite(seconds) || seconds < 0) {
    throw new Error(`invalid CNI_TIMEOUT ${JSON.stringify(text)}: want a number of seconds`);
  }
  return seconds === 0 ? undefined : seconds * 1000;
}

/** The container ID cnitool uses for a netns: `cnitool-` + 20 hex of SHA-512(path). */
export async function containerIdFor(netnsPath: string): Promise<string> {
  return `cnitool-${(await sha512Hex(netnsPath)).slice(0, 20)}`;
}

async function runVerb(verb: Verb, parsed: ParsedArgs): Promise<string> {
  const [network, netnsArg] = parsed.positionals.slice(1);
  if (network === undefined || netnsArg === undefined) {
    throw new UsageError(
      `requires at least 2 arg(s) (network name and netns), only received ${
        parsed.positionals.length - 1
      }`,
    );
  }
  const env = (name: string) => Deno.env.get(name) ?? "";
  const list = loadNetworkConf(env("NETCONFPATH") || DEFAULT_NETCONF_PATH, network);
  const capabilityArgs = env("CAP_ARGS") ? parseCapArgs(env("CAP_ARGS")) : undefined;
  const args = env("CNI_ARGS") ? parseCnitoolArgs(env("CNI_ARGS")) : undefined;
  const netns = absPath(netnsArg);
  const rt: RuntimeConf = {
    containerId: await containerIdFor(netns),
    netns,
    ifname: parsed.ifname || env("CNI_IFNAME") || "eth0",
  };
  if (args) rt.args = args;
  if (capabilityArgs) rt.capabilityArgs = capabilityArgs;
  const runtime = new CniRuntime({
    path: env("CNI_PATH").split(":").filter(Boolean),
    cacheDir: env("CNI_CACHE_DIR") || DEFAULT_CACHE_DIR,
    timeoutMs: parseTimeout(env("CNI_TIMEOUT")),
  });
  return await verb.run(runtime, list, rt);
}

function errorLine(error: unknown): string {
  const code = error instanceof CniError ? ` (code ${error.code})` : "";
  return `Error: ${errorText(error)}${code}\n`;
}

async function write(stream: { write(p: Uint8Array): Promise<number> }, text: string) {
  const bytes = new TextEncoder().encode(text);
  for (let done = 0; done < bytes.length;) done += await stream.write(bytes.subarray(done));
}

/**
 * Runs cnitool with `args` (the words after `cnitool`); returns the exit
 * code. Output goes to stdout; errors, one line each, to stderr.
 */
export async function cnitoolMain(args: string[]): Promise<number> {
  try {
    const parsed = parseArgs(args);
    const [command, topic] = parsed.positionals;
    if (command === undefined) {
      await write(Deno.stdout, rootHelp());
      return 0;
    }
    if (command === "help") {
      if (topic !== undefined && !(topic in VERBS)) {
        throw new UsageError(`unknown help topic "${topic}"`);
      }
      await write(Deno.stdout, topic === undefined ? rootHelp() : verbHelp(topic));
      return 0;
    }
    if (command === "version") {
      await write(Deno.stdout, versionText());
      return 0;
    }
    const verb = Object.hasOwn(VERBS, command) ? VERBS[command] : undefined;
    if (!verb) throw new UsageError(`unknown command "${command}" for "cnitool"`);
    if (parsed.help) {
      await write(Deno.stdout, verbHelp(command));
      return 0;
    }
    // Like the reference: the result JSON without a trailing newline.
    await write(Deno.stdout, await runVerb(verb, parsed));
    return 0;
  } catch (error) {
    const hint = error instanceof UsageError ? "Run 'cnitool --help' for usage.\n" : "";
    await write(Deno.stderr, errorLine(error) + hint);
    return 1;
  }
}
