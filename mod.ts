/**
 * cnikit as a library: the skeleton for writing CNI plugins in TypeScript,
 * the spec's types, result conversion, CNI_ARGS parsing and delegation.
 *
 * ```ts
 * import { pluginMain, type Plugin } from "./mod.ts";
 * const hello: Plugin = {
 *   name: "hello",
 *   add: (args) => Promise.resolve(args.prevResult ?? { cniVersion: "1.1.0" }),
 *   del: () => Promise.resolve(),
 * };
 * if (import.meta.main) await pluginMain(hello);
 * ```
 * @module
 */

export {
  type CmdArgs,
  CNIKIT_VERSION,
  type Command,
  type Plugin,
  pluginMain,
  runPlugin,
} from "./lib/cni/skel.ts";
export { CniError, ErrorCode, toErrorObject } from "./lib/cni/errors.ts";
export { parseCniArgs } from "./lib/cni/args.ts";
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
