/**
 * Results across spec versions: decoding a result of any version and
 * converting it up or down, with libcni's rules (SPEC "Version conversion").
 * @module
 */

import type * as z from "zod/mini";
import { CniError, ErrorCode } from "../errors.ts";
import { parseCIDR } from "../ipnet.ts";
import {
  type AnyResult,
  describeIssues,
  type IPFamily02,
  Result,
  Result02,
  Result04,
  type Route,
} from "./schemas.ts";
import { normalizeVersion } from "./version.ts";

type Family = "0.2" | "0.4" | "1.x";

const FAMILY_OF: Record<string, Family> = {
  "0.1.0": "0.2",
  "0.2.0": "0.2",
  "0.3.0": "0.4",
  "0.3.1": "0.4",
  "0.4.0": "0.4",
  "1.0.0": "1.x",
  "1.1.0": "1.x",
};

const SCHEMA_OF: Record<Family, z.ZodMiniType<AnyResult>> = {
  "0.2": Result02,
  "0.4": Result04,
  "1.x": Result,
};

function familyOf(version: string): Family | undefined {
  return FAMILY_OF[normalizeVersion(version)];
}

/** True for a version whose results cnikit can decode and produce. */
export function isKnownResultVersion(version: string): boolean {
  return familyOf(version) !== undefined;
}

/** True when results of both versions share one shape (0.1-0.2, 0.3-0.4 or 1.x). */
export function sameResultShape(a: string, b: string): boolean {
  const family = familyOf(a);
  return family !== undefined && family === familyOf(b);
}

/**
 * Decodes a result. A missing or empty `cniVersion` is taken from
 * `defaultVersion` (libcni's fixup), and "" counts as 0.1.0.
 */
export function parseResult(value: unknown, defaultVersion = "0.1.0"): AnyResult {
  if (value === null) value = {};
  if (typeof value !== "object" || Array.isArray(value)) {
    throw new CniError(ErrorCode.decodingFailure, "failed to decode result: not a JSON object");
  }
  const declared = (value as { cniVersion?: unknown }).cniVersion;
  if (declared !== undefined && typeof declared !== "string") {
    throw new CniError(
      ErrorCode.decodingFailure,
      "failed to decode result: cniVersion: not a string",
    );
  }
  const version = declared ? declared : normalizeVersion(defaultVersion);
  const family = familyOf(version);
  if (!family) {
    throw new CniError(ErrorCode.decodingFailure, `unsupported CNI result version "${version}"`);
  }
  const parsed = SCHEMA_OF[family].safeParse({ ...value, cniVersion: version });
  if (!parsed.success) {
    throw new CniError(
      ErrorCode.decodingFailure,
      `failed to decode result: ${describeIssues(parsed.error)}`,
    );
  }
  return parsed.data;
}

function familyOfIP(address: string): "4" | "6" {
  return parseCIDR(address)?.ip.family === 4 ? "4" : "6";
}

function up02to04(r: Result02, version: string): Result04 {
  const ips: NonNullable<Result04["ips"]> = [];
  const routes: Route[] = [];
  for (const [family, block] of [["4", r.ip4], ["6", r.ip6]] as const) {
    if (!block) continue;
    ips.push({
      version: family,
      address: block.ip,
      ...(block.gateway ? { gateway: block.gateway } : {}),
    });
    routes.push(...(block.routes ?? []));
  }
  return { cniVersion: version, ips, routes, dns: r.dns ?? {} };
}

function up04to1x(r: Result04, version: string): Result {
  return {
    cniVersion: version,
    ...(r.interfaces ? { interfaces: r.interfaces } : {}),
    ips: (r.ips ?? []).map(({ version: _v, ...ip }) => ip),
    ...(r.routes ? { routes: r.routes } : {}),
    ...(r.dns ? { dns: r.dns } : {}),
  };
}

function down1xto04(r: Result, version: string): Result04 {
  return {
    cniVersion: version,
    ...(r.interfaces
      ? {
        interfaces: r.interfaces.map(({ name, mac, sandbox }) => ({
          name,
          ...(mac !== undefined ? { mac } : {}),
          ...(sandbox !== undefined ? { sandbox } : {}),
        })),
      }
      : {}),
    ips: (r.ips ?? []).map((ip) => ({ version: familyOfIP(ip.address), ...ip })),
    ...(r.routes ? { routes: r.routes } : {}),
    dns: r.dns ?? {},
  };
}

function down04to02(r: Result04, version: string): Result02 {
  const out: Result02 = { cniVersion: version };
  for (const ip of r.ips ?? []) {
    const key = ip.version === "4" ? "ip4" : ip.version === "6" ? "ip6" : undefined;
    if (!key || out[key]) continue;
    const block: IPFamily02 = { ip: ip.address };
    if (ip.gateway) block.gateway = ip.gateway;
    out[key] = block;
  }
  if (!out.ip4 && !out.ip6) {
    throw new CniError(ErrorCode.incompatibleVersion, "cannot convert: no valid IP addresses");
  }
  for (const route of r.routes ?? []) {
    // A route only goes with an IP of its own family (libcni drops the rest).
    const target = familyOfIP(route.dst) === "4" ? out.ip4 : out.ip6;
    if (!target) continue;
    (target.routes ??= []).push({ dst: route.dst, ...(route.gw ? { gw: route.gw } : {}) });
  }
  out.dns = r.dns ?? {};
  return out;
}

/**
 * Converts a result to `toVersion` ("" means 0.1.0). Converting to the
 * version it already has returns it unchanged.
 * @example
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * import { convertResult, resultToJSON } from "./convert.ts";
 * const result = {
 *   cniVersion: "1.1.0",
 *   interfaces: [{ name: "eth0", sandbox: "/run/netns/x" }],
 *   ips: [{ address: "10.1.0.2/24", gateway: "10.1.0.1", interface: 0 }],
 * };
 * deepEqual(resultToJSON(convertResult(result, "0.2.0")), {
 *   cniVersion: "0.2.0",
 *   ip4: { ip: "10.1.0.2/24", gateway: "10.1.0.1" },
 *   dns: {},
 * });
 * ```
 */
export function convertResult(result: AnyResult, toVersion: string): AnyResult {
  const target = normalizeVersion(toVersion);
  const from = familyOf(result.cniVersion);
  const to = familyOf(target);
  if (!from || !to) {
    throw new CniError(
      ErrorCode.incompatibleVersion,
      `no converter for CNI result version ${result.cniVersion} to ${target}`,
    );
  }
  if (result.cniVersion === target) return result;
  if (from === to) return { ...result, cniVersion: target };
  if (from === "0.2") {
    const r04 = up02to04(result as Result02, target);
    return to === "0.4" ? r04 : up04to1x(r04, target);
  }
  if (from === "0.4") {
    return to === "1.x"
      ? up04to1x(result as Result04, target)
      : down04to02(result as Result04, target);
  }
  const r04 = down1xto04(result as Result, target);
  return to === "0.4" ? r04 : down04to02(r04, target);
}

/** Converts any result to the current (1.1.0) shape that plugins work in. */
export function toCurrentResult(result: AnyResult): Result {
  return convertResult(result, "1.1.0") as Result;
}

/**
 * Serialises a result as libcni would: a 1.x result leaves out an empty
 * `dns`, older ones always print it.
 */
export function resultToJSON(result: AnyResult): Record<string, unknown> {
  const out: Record<string, unknown> = { ...result };
  // libcni's DNS fields are all omitempty: an empty list or domain is not printed.
  const dns = Object.fromEntries(
    Object.entries(result.dns ?? {}).filter(([, v]) =>
      v !== undefined && v !== "" && !(Array.isArray(v) && !v.length)
    ),
  );
  if (familyOf(result.cniVersion) === "1.x" && !Object.keys(dns).length) delete out.dns;
  else out.dns = dns;
  for (const key of ["interfaces", "ips", "routes"]) {
    if (Array.isArray(out[key]) && (out[key] as unknown[]).length === 0) delete out[key];
  }
  return out;
}
