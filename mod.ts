/**
 * cnikit as a library: what a TypeScript CNI plugin needs — the skeleton
 * (env, versions, prevResult, error rendering), config decoding with Go's
 * rules, the spec's types and result conversion, CNI_ARGS parsing and
 * delegation to IPAM plugins.
 *
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * import { type Plugin, runPlugin } from "./mod.ts";
 *
 * const hello: Plugin = {
 *   name: "hello",
 *   add: (args) => Promise.resolve(args.prevResult ?? { cniVersion: "1.1.0" }),
 *   del: () => Promise.resolve(),
 * };
 * // A plugin's main is `await pluginMain(hello)`; runPlugin is the same without the process.
 * const out = await runPlugin(hello, {
 *   env: { CNI_COMMAND: "DEL", CNI_CONTAINERID: "c1", CNI_IFNAME: "eth0", CNI_PATH: "/opt/cni/bin" },
 *   readStdin: () => Promise.resolve(new TextEncoder().encode('{"cniVersion":"1.0.0","name":"n"}')),
 * });
 * deepEqual(out, { code: 0, stdout: "" });
 * ```
 * @module
 */

export {
  type CmdArgs,
  type Command,
  type Plugin,
  type PluginIO,
  pluginMain,
  type PluginOutput,
  runPlugin,
} from "./lib/cni/skel.ts";
export {
  CniError,
  ErrorCode,
  type ErrorObject,
  invalidConfig,
  toErrorObject,
} from "./lib/cni/errors.ts";
export {
  DnsConf,
  dnsIsSet,
  GoInt,
  goList,
  goStruct,
  NETCONF_FIELDS,
  parseConf,
  toDns,
  unknownKeys,
} from "./lib/cni/conf.ts";
export { parseCniArgs } from "./lib/cni/args.ts";
export { ifNameProblem, validateContainerId, validateIfName } from "./lib/cni/validate.ts";
export { delegate, execPlugin, findPlugin } from "./lib/cni/invoke.ts";
export {
  convertResult,
  parseResult,
  resultToJSON,
  toCurrentResult,
} from "./lib/cni/spec/convert.ts";
export {
  ALL_VERSIONS,
  compareVersions,
  CURRENT_VERSION,
  parseVersion,
} from "./lib/cni/spec/version.ts";
export * from "./lib/cni/spec/schemas.ts";
