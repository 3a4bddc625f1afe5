/**
 * Parsing a plugin's config with its zod schema at the boundary, turning
 * failures into CNI errors: a value of the wrong type is undecodable
 * (code 6), anything else is an invalid config (code 7).
 * @module
 */

import * as z from "zod/mini";
import { CniError, ErrorCode } from "./errors.ts";
import { describeIssues } from "./spec/schemas.ts";

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Picks the keys of `value` that Go's encoding/json would decode into a
 * struct with the fields `names`: an exact match first, else any spelling
 * that matches case-insensitively; the later of two wins. `null` values are
 * dropped, since Go leaves the field untouched for them.
 */
function goFields(
  value: Record<string, unknown>,
  names: readonly string[],
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  let folded: Map<string, string> | undefined;
  for (const [key, v] of Object.entries(value)) {
    let name: string | undefined = key;
    if (!names.includes(key)) {
      folded ??= new Map(names.map((n) => [n.toLowerCase(), n]));
      name = folded.get(key.toLowerCase());
    }
    if (name === undefined) continue;
    if (v === null) delete out[name];
    else out[name] = v;
  }
  return out;
}

/**
 * A zod object schema that reads its input with {@link goFields}: unknown
 * keys are ignored, keys match case-insensitively and `null` is absent.
 */
export function goStruct<S extends z.core.$ZodLooseShape>(
  shape: S,
): z.ZodMiniPipe<z.ZodMiniTransform<unknown, unknown>, z.ZodMiniObject<S>> {
  const names = Object.keys(shape);
  return z.pipe(
    z.transform((v: unknown) => (isPlainObject(v) ? goFields(v, names) : v)),
    z.object(shape),
  );
}

/** Go's `int`: any integral JSON number. */
export const GoInt = z.number().check(z.int());

/** A list that Go would decode from `null` as empty. */
export function goList<T extends z.core.SomeType>(item: T) {
  return z.optional(z.nullable(z.array(item)));
}

/** Parses `config` with `schema` or throws a CniError naming every bad key. */
export function parseConf<T>(schema: z.ZodMiniType<T>, config: unknown, what = "netconf"): T {
  // The input is reported so that a wrong type (input present) can be told
  // from a missing key (input undefined).
  const parsed = schema.safeParse(config, { reportInput: true });
  if (parsed.success) return parsed.data;
  const wrongType = parsed.error.issues.every((issue) =>
    issue.code === "invalid_type" && (issue as { input?: unknown }).input !== undefined
  );
  throw new CniError(
    wrongType ? ErrorCode.decodingFailure : ErrorCode.invalidNetworkConfig,
    `failed to load ${what}: ${describeIssues(parsed.error)}`,
  );
}

/** True when a `dns` section sets anything (then it replaces the IPAM's DNS). */
export function dnsIsSet(
  dns: { nameservers?: unknown; domain?: string; search?: unknown; options?: unknown } | undefined,
): boolean {
  return !!dns &&
    (dns.nameservers !== undefined || dns.search !== undefined || dns.options !== undefined ||
      !!dns.domain);
}
