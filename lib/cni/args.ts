/**
 * CNI_ARGS (`K=V;K=V`) parsing with libcni's rules: every pair needs exactly
 * one `=`, unknown keys are refused unless `IgnoreUnknown` is true.
 * @module
 */

import { CniError, ErrorCode } from "./errors.ts";

function parseBool(pair: string, text: string): boolean {
  // libcni lower-cases the value first, so "TRUE" and "False" count too.
  const lower = text.toLowerCase();
  if (lower === "1" || lower === "true") return true;
  if (lower === "0" || lower === "false") return false;
  throw new CniError(
    ErrorCode.invalidEnvironment,
    `ARGS: error parsing value of pair "${pair}": boolean unmarshal error: invalid input ${text}`,
  );
}

/**
 * Parses CNI_ARGS, keeping only the keys a plugin knows.
 * @example
 * ```ts
 * import { deepEqual, throws } from "node:assert/strict";
 * import { parseCniArgs } from "./args.ts";
 * deepEqual(parseCniArgs("IgnoreUnknown=1;IP=10.0.0.5;K8S_POD_NAME=p", ["IP"]), { IP: "10.0.0.5" });
 * throws(() => parseCniArgs("IP=10.0.0.5;K8S_POD_NAME=p", ["IP"]), /unknown args/);
 * ```
 */
export function parseCniArgs(raw: string, known: readonly string[]): Record<string, string> {
  if (raw === "") return {};
  const out: Record<string, string> = {};
  const unknown: string[] = [];
  let ignoreUnknown = false;
  for (const pair of raw.split(";")) {
    const kv = pair.split("=");
    if (kv.length !== 2) {
      throw new CniError(ErrorCode.invalidEnvironment, `ARGS: invalid pair "${pair}"`);
    }
    const [key, value] = kv as [string, string];
    // Every IgnoreUnknown pair is checked and the last one wins, as in libcni.
    if (key === "IgnoreUnknown") ignoreUnknown = parseBool(pair, value);
    else if (known.includes(key)) out[key] = value;
    else unknown.push(pair);
  }
  if (unknown.length && !ignoreUnknown) {
    throw new CniError(
      ErrorCode.invalidEnvironment,
      `ARGS: unknown args [${unknown.map((p) => `"${p}"`).join(" ")}]`,
    );
  }
  return out;
}
