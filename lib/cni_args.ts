/**
 * CNI_ARGS (`K=V;K=V`) parsing with libcni's rules: every pair needs exactly
 * one `=`, unknown keys are refused unless `IgnoreUnknown` is true.
 * @module
 */

import { CniError, ErrorCode } from "./errors.ts";

function parseBool(text: string): boolean {
  if (["1", "true", "True"].includes(text)) return true;
  if (["0", "false", "False"].includes(text)) return false;
  throw new CniError(
    ErrorCode.invalidEnvironment,
    `boolean unmarshal error: invalid input ${text}`,
  );
}

/**
 * Parses CNI_ARGS, keeping only the keys a plugin knows.
 * @example
 * ```ts
 * import { parseCniArgs } from "./cni_args.ts";
 * parseCniArgs("IgnoreUnknown=1;IP=10.0.0.5;K8S_POD_NAME=p", ["IP"]); // { IP: "10.0.0.5" }
 * ```
 */
export function parseCniArgs(raw: string, known: readonly string[]): Record<string, string> {
  if (raw === "") return {};
  const pairs = raw.split(";").map((pair) => {
    const kv = pair.split("=");
    if (kv.length !== 2) {
      throw new CniError(ErrorCode.invalidEnvironment, `ARGS: invalid pair "${pair}"`);
    }
    return kv as [string, string];
  });
  const ignoreUnknown = pairs.some(([k, v]) => k === "IgnoreUnknown" && parseBool(v));
  const out: Record<string, string> = {};
  const unknown: string[] = [];
  for (const [key, value] of pairs) {
    if (key === "IgnoreUnknown") continue;
    if (known.includes(key)) out[key] = value;
    else unknown.push(key);
  }
  if (unknown.length && !ignoreUnknown) {
    throw new CniError(
      ErrorCode.invalidEnvironment,
      `ARGS: unknown args [${unknown.map((k) => `"${k}"`).join(" ")}]`,
    );
  }
  return out;
}
