/**
 * The names a runtime passes to a plugin, validated with the reference's
 * rules and codes: container IDs, network names, interface names and the
 * network namespace path. The runtime (cnitool) checks what it sends with
 * the same functions the plugin skeleton checks what it receives.
 * @module
 */

import { CniError, ErrorCode } from "./errors.ts";

const VALID_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$/;

/** Validates a container ID as libcni does (code 3 when empty, 4 when malformed). */
export function validateContainerId(id: string): void {
  if (id === "") throw new CniError(ErrorCode.unknownContainer, "missing containerID");
  if (!VALID_NAME.test(id)) {
    throw new CniError(ErrorCode.invalidEnvironment, "invalid characters in containerID", id);
  }
}

/** Validates a network name (code 7). */
export function validateNetworkName(name: string): void {
  if (name === "") throw new CniError(ErrorCode.invalidNetworkConfig, "missing network name");
  if (!VALID_NAME.test(name)) {
    throw new CniError(
      ErrorCode.invalidNetworkConfig,
      "invalid characters found in network name",
      name,
    );
  }
}

/**
 * Why `name` cannot be a Linux interface name (the kernel's rules), or
 * undefined when it can.
 * @example
 * ```ts
 * import { deepEqual } from "node:assert/strict";
 * import { ifNameProblem } from "./validate.ts";
 * deepEqual(ifNameProblem("eth0"), undefined);
 * deepEqual(ifNameProblem("a-name-far-too-long"), "interface name is too long");
 * ```
 */
export function ifNameProblem(name: string): string | undefined {
  if (name.length === 0) return "interface name is empty";
  if (new TextEncoder().encode(name).length > 15) return "interface name is too long";
  if (name === "." || name === "..") return "interface name is . or ..";
  if (/[/:\s]/.test(name)) return "interface name contains / or : or whitespace characters";
  return undefined;
}

/** Validates CNI_IFNAME (code 4). */
export function validateIfName(name: string): void {
  const problem = ifNameProblem(name);
  if (problem === undefined) return;
  const details = problem.endsWith("too long")
    ? "interface name should be less than 16 characters"
    : "";
  throw new CniError(ErrorCode.invalidEnvironment, problem, details);
}

function statOrUndefined(path: string): Deno.FileInfo | undefined {
  try {
    return Deno.statSync(path);
  } catch {
    return undefined;
  }
}

/** The namespace file of the calling thread; every nsfs file shares its device. */
const OWN_NETNS = "/proc/thread-self/ns/net";

/**
 * Validates a CNI_NETNS path without entering it: a missing path is an
 * unknown container (code 3), a file that is not a namespace (it does not
 * live on the kernel's nsfs) is an invalid netns (code 8). A namespace of
 * another kind is caught when entering it.
 */
export function validateNetnsPath(path: string): void {
  const target = statOrUndefined(path);
  if (!target) {
    throw new CniError(
      ErrorCode.unknownContainer,
      `failed to open netns "${path}": no such file or directory`,
    );
  }
  const own = statOrUndefined(OWN_NETNS);
  if (own && target.dev !== own.dev) {
    throw new CniError(ErrorCode.invalidNetns, `"${path}" is not a network namespace`);
  }
}

/** True when `path` is the netns this thread is in (the skeleton's own-netns guard). */
export function isOwnNetns(path: string): boolean {
  const mine = statOrUndefined(OWN_NETNS);
  const theirs = statOrUndefined(path);
  return !!mine && !!theirs && mine.ino === theirs.ino && mine.dev === theirs.dev;
}
