/**
 * CNI spec versions: the list cnikit speaks, parsing and ordering as libcni
 * does ("" is 0.1.0, "1" is 1.0.0).
 * @module
 */

import { CniError, ErrorCode } from "../errors.ts";

/** Every spec version cnikit produces and accepts, oldest first. */
export const ALL_VERSIONS = [
  "0.1.0",
  "0.2.0",
  "0.3.0",
  "0.3.1",
  "0.4.0",
  "1.0.0",
  "1.1.0",
] as const;

/** The newest spec version; results are built in this shape. */
export const CURRENT_VERSION = "1.1.0";

/** The versions from `oldest` on, for a plugin that does not speak the older ones. */
export function versionsFrom(oldest: string): readonly string[] {
  return ALL_VERSIONS.slice(ALL_VERSIONS.indexOf(oldest as typeof ALL_VERSIONS[number]));
}

/**
 * What a plugin prints for VERSION: the newest version and the ones it
 * accepts (every version when `supported` is undefined).
 */
export function versionAnswer(supported: readonly string[] = ALL_VERSIONS): string {
  return JSON.stringify({ cniVersion: CURRENT_VERSION, supportedVersions: supported }, null, 4);
}

/** A version as `[major, minor, patch]`. */
export type VersionTuple = [number, number, number];

/**
 * Parses a version string the way libcni does.
 * @example
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * import { parseVersion } from "./version.ts";
 * deepEqual(parseVersion("1"), [1, 0, 0]);
 * deepEqual(parseVersion(""), [0, 1, 0]);
 * ```
 */
export function parseVersion(version: string): VersionTuple {
  if (version === "") return [0, 1, 0];
  const parts = version.split(".");
  if (parts.length > 3) {
    throw new CniError(ErrorCode.decodingFailure, `invalid version "${version}": too many dots`);
  }
  const numbers = parts.map((part) => {
    if (!/^\d+$/.test(part)) {
      throw new CniError(ErrorCode.decodingFailure, `failed to convert version "${version}"`);
    }
    return Number(part);
  });
  return [numbers[0] ?? 0, numbers[1] ?? 0, numbers[2] ?? 0];
}

/** Negative, zero or positive as `a` is older than, equal to or newer than `b`. */
export function compareVersions(a: string, b: string): number {
  const [x, y] = [parseVersion(a), parseVersion(b)];
  for (let i = 0; i < 3; i++) {
    const d = x[i]! - y[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

/** True when `a` is `b` or newer. */
export function versionAtLeast(a: string, b: string): boolean {
  return compareVersions(a, b) >= 0;
}

/** The version a config or result declares, with a missing one read as 0.1.0. */
export function normalizeVersion(version: string | undefined): string {
  return version === undefined || version === "" ? "0.1.0" : version;
}
