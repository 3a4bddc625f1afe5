/**
 * tuning's sysctl keys: from a config key to a file under /proc/sys/net,
 * the admin's allowlist, and the duplicate-key check that needs the raw
 * config text (JSON.parse keeps only the last of two equal keys).
 * @module
 */

import { CniError, ErrorCode, invalidConfig } from "../../../lib/cni/errors.ts";

/** Where the reference reads the admin's allowlist; CNIKIT_TUNING_ALLOWLIST overrides it. */
export const DEFAULT_ALLOWLIST = "/etc/cni/tuning/allowlist.conf";

/** `path` with `.` and `..` resolved and repeated slashes folded, as Go's `filepath.Clean`. */
function cleanPath(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") out.pop();
    else out.push(part);
  }
  return "/" + out.join("/");
}

/**
 * The /proc/sys file of a sysctl key, or a code-7 error when it is not a
 * network sysctl. A key whose first separator is a dot is in sysctl(8)'s
 * dotted form, where a slash stands for a dot inside a name
 * (`net.ipv4.conf.eth0/100.rp_filter`); a key with a slash first is a path
 * and keeps its dots. `IFNAME` (the first one) becomes the interface name,
 * after that conversion so that a name with a dot survives.
 */
export function sysctlPath(key: string, ifname: string): string {
  const firstSep = key.search(/[./]/);
  const dotted = firstSep >= 0 && key[firstSep] === ".";
  const relative = dotted ? key.replace(/[./]/g, (c) => (c === "." ? "/" : ".")) : key;
  const substituted = relative.replace("IFNAME", ifname);
  const file = cleanPath(`/proc/sys/${substituted}`);
  if (!file.startsWith("/proc/sys/net/")) {
    throw invalidConfig(`invalid net sysctl key: ${JSON.stringify(substituted)}`);
  }
  return file;
}

/**
 * The allowlist's patterns (one regular expression a line, blank lines
 * skipped), or undefined when the file does not exist: then every network
 * sysctl is allowed.
 */
export function readAllowlist(path: string): string[] | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new CniError(
      ErrorCode.ioFailure,
      `failed to read the sysctl allowlist ${path}: ${(e as Error).message}`,
    );
  }
  return text.split("\n").map((l) => l.trim()).filter((l) => l !== "");
}

/**
 * Refuses every key that matches none of the allowlist's patterns. A
 * pattern matches anywhere in the key unless it anchors itself, as Go's
 * `regexp.MatchString` does.
 */
export function checkAllowlist(keys: Iterable<string>, allowlist: string[]): void {
  const patterns = allowlist.map((p) => {
    try {
      return new RegExp(p);
    } catch (e) {
      throw invalidConfig(
        `invalid pattern ${JSON.stringify(p)} in the sysctl allowlist: ${(e as Error).message}`,
      );
    }
  });
  for (const key of keys) {
    if (!patterns.some((p) => p.test(key))) {
      throw invalidConfig(
        `Sysctl ${key} is not allowed. Only the following sysctls are allowed: [${
          allowlist.join(" ")
        }]`,
      );
    }
  }
}

/**
 * A just-enough JSON reader over the raw config: it walks the top-level
 * object and reports every key of a `sysctl` object (the key matched
 * case-insensitively, as Go matches fields) that appears twice. The config
 * has already been parsed successfully, so the text is valid JSON.
 */
export function checkDuplicateSysctlKeys(raw: string): void {
  let i = 0;
  const space = () => {
    while (i < raw.length && " \t\r\n".includes(raw[i]!)) i++;
  };
  const string = (): string => {
    const start = i;
    for (i++; raw[i] !== '"'; i++) if (raw[i] === "\\") i++;
    i++;
    return JSON.parse(raw.slice(start, i));
  };
  const skip = (): void => {
    space();
    const c = raw[i];
    if (c === '"') {
      string();
    } else if (c === "{" || c === "[") {
      const close = c === "{" ? "}" : "]";
      i++;
      space();
      while (raw[i] !== close) {
        if (c === "{") {
          string();
          space();
          i++; // the colon
        }
        skip();
        space();
        if (raw[i] === ",") i++;
        space();
      }
      i++;
    } else {
      while (i < raw.length && !",}] \t\r\n".includes(raw[i]!)) i++;
    }
  };
  const seen = new Set<string>();
  space();
  if (raw[i] !== "{") return;
  i++;
  space();
  while (raw[i] !== "}") {
    const key = string();
    space();
    i++; // the colon
    space();
    if (key.toLowerCase() === "sysctl" && raw[i] === "{") {
      i++;
      space();
      while (raw[i] !== "}") {
        const name = string();
        if (seen.has(name)) {
          throw invalidConfig(
            "duplicated sysctl keys are not allowed",
            `key ${JSON.stringify(name)}`,
          );
        }
        seen.add(name);
        space();
        i++;
        skip();
        space();
        if (raw[i] === ",") i++;
        space();
      }
      i++;
    } else {
      skip();
    }
    space();
    if (raw[i] === ",") i++;
    space();
  }
}
