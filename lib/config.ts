/**
 * Parsing a plugin's config with its zod schema at the boundary, turning
 * failures into CNI errors: a value of the wrong type is undecodable
 * (code 6), anything else is an invalid config (code 7).
 * @module
 */

import type * as z from "zod/mini";
import { CniError, ErrorCode } from "./errors.ts";
import { describeIssues } from "./spec/schemas.ts";

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
