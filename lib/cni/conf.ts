/**
 * Decoding a plugin's config at the boundary, the way the reference's Go
 * plugins decode theirs with encoding/json: a `null` value is the same as an
 * absent key, keys match their field case-insensitively (`IPMasq` sets
 * `ipMasq`), unknown keys are ignored. Failures become CNI errors: a value
 * of the wrong type is undecodable (code 6), anything else is an invalid
 * config (code 7). Every plugin decodes through here.
 * @module
 */

import * as z from "zod/mini";
import { CniError, ErrorCode } from "./errors.ts";
import { describeIssues, type Dns } from "./spec/schemas.ts";

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** The field of `names` that Go would decode JSON key `key` into, if any. */
function fieldOf(key: string, names: readonly string[]): string | undefined {
  if (names.includes(key)) return key;
  const lower = key.toLowerCase();
  return names.find((n) => n.toLowerCase() === lower);
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
  for (const [key, v] of Object.entries(value)) {
    const name = fieldOf(key, names);
    if (name === undefined) continue;
    if (v === null) delete out[name];
    else out[name] = v;
  }
  return out;
}

/**
 * A zod object schema that reads its input as Go decodes JSON into a
 * struct: unknown keys are ignored, keys match case-insensitively and
 * `null` is absent.
 * @example
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * import * as z from "zod/mini";
 * import { goStruct } from "./conf.ts";
 * const Conf = goStruct({ ipMasq: z.optional(z.boolean()), mtu: z.optional(z.number()) });
 * deepEqual(Conf.parse({ IPMASQ: true, mtu: null, other: 1 }), { ipMasq: true });
 * ```
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

/** The DNS section of a config (Go's `types.DNS`). */
export const DnsConf = goStruct({
  nameservers: goList(z.string()),
  domain: z.optional(z.string()),
  search: goList(z.string()),
  options: goList(z.string()),
});
export type DnsConf = z.infer<typeof DnsConf>;

/**
 * The keys every plugin config has (SPEC "Plugin configuration objects"),
 * as Go's `types.NetConf` decodes them; a plugin's schema spreads these and
 * adds its own: `goStruct({ ...NETCONF_FIELDS, mtu: z.optional(GoInt) })`.
 */
export const NETCONF_FIELDS = {
  cniVersion: z.optional(z.string()),
  name: z.string(),
  type: z.optional(z.string()),
  capabilities: z.optional(z.record(z.string(), z.boolean())),
  ipam: z.optional(goStruct({ type: z.optional(z.string()) })),
  dns: z.optional(DnsConf),
  prevResult: z.optional(z.unknown()),
};

/**
 * The top-level keys of `config` that no field of `fields` takes, matched
 * as Go matches them: what a plugin silently ignores.
 */
export function unknownKeys(config: Record<string, unknown>, fields: object): string[] {
  const names = Object.keys(fields);
  return Object.keys(config).filter((key) => fieldOf(key, names) === undefined);
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
export function dnsIsSet(dns: DnsConf | undefined): dns is DnsConf {
  return !!dns &&
    (dns.nameservers !== undefined || dns.search !== undefined || dns.options !== undefined ||
      !!dns.domain);
}

/** DNS settings with the empty fields left out, as Go's `omitempty` prints them. */
export function toDns(dns: DnsConf | undefined): Dns {
  const out: Dns = {};
  if (dns?.nameservers?.length) out.nameservers = dns.nameservers;
  if (dns?.domain) out.domain = dns.domain;
  if (dns?.search?.length) out.search = dns.search;
  if (dns?.options?.length) out.options = dns.options;
  return out;
}
