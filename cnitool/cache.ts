/**
 * The result cache in libcni's on-disk layout, so that cnikit, containerd,
 * CRI-O and libcni read each other's entries:
 * `<cacheDir>/results/<network>-<containerID>-<ifname>`, folder 0700, file
 * 0600, holding a `cniCacheV1` JSON entry (or, from before libcni 0.8, only
 * the raw result).
 * @module
 */

import * as z from "zod/mini";
import { convertResult, parseResult, resultToJSON } from "../lib/cni/spec/convert.ts";
import { type AnyResult, describeIssues } from "../lib/cni/spec/schemas.ts";
import { dirName, errorText, joinPath, marshalStruct } from "./go.ts";
import type { RuntimeConf } from "./types.ts";

/** libcni's default cache folder. */
export const DEFAULT_CACHE_DIR = "/var/lib/cni";
/** The `kind` of a current cache entry. */
export const CACHE_KIND = "cniCacheV1";

const Base64 = z.string().check(z.refine((s) => {
  try {
    Uint8Array.fromBase64(s);
    return true;
  } catch {
    return false;
  }
}, "illegal base64 data"));

/** A cache entry as Go decodes it: typed fields, `null` as absent, others ignored. */
const CacheEntry = z.looseObject({
  kind: z.nullish(z.string()),
  containerId: z.nullish(z.string()),
  config: z.nullish(Base64),
  ifName: z.nullish(z.string()),
  networkName: z.nullish(z.string()),
  netns: z.nullish(z.string()),
  cniArgs: z.nullish(z.array(z.array(z.string()))),
  capabilityArgs: z.nullish(z.record(z.string(), z.unknown())),
  result: z.nullish(z.record(z.string(), z.unknown())),
});
type CacheEntry = z.infer<typeof CacheEntry>;

/** One attachment found in the cache (libcni's `NetworkAttachment`). */
export interface NetworkAttachment {
  containerId: string;
  network: string;
  ifName: string;
  /** The network configuration the attachment was added with. */
  config: Uint8Array;
  netns: string;
  cniArgs?: [string, string][];
  capabilityArgs?: Record<string, unknown>;
}

const decoder = new TextDecoder();

type Decoded = { ok: true; entry: CacheEntry } | { ok: false; error: string };

function decodeEntry(bytes: Uint8Array): Decoded {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch (e) {
    return { ok: false, error: (e as Error).message };
  }
  if (value === null) value = {};
  const parsed = CacheEntry.safeParse(value);
  return parsed.success
    ? { ok: true, entry: parsed.data }
    : { ok: false, error: describeIssues(parsed.error) };
}

function pairs(args: string[][] | null | undefined): [string, string][] | undefined {
  return args?.map(([k, v]) => [k ?? "", v ?? ""]);
}

function convertCached(result: AnyResult, cniVersion: string): AnyResult {
  try {
    return convertResult(result, cniVersion);
  } catch (e) {
    throw new Error(
      `failed to convert cached result to config version "${cniVersion}": ${errorText(e)}`,
    );
  }
}

/** The result cache under one folder. */
export class ResultCache {
  /** @param dir the cache folder; results live in its `results/`. */
  constructor(readonly dir: string = DEFAULT_CACHE_DIR) {}

  /** The entry's path; every part of the key is required. */
  filePath(network: string, rt: Pick<RuntimeConf, "containerId" | "ifname">): string {
    if (network === "" || rt.containerId === "" || rt.ifname === "") {
      throw new Error(
        `cache file path requires network name (${JSON.stringify(network)}), container ID (${
          JSON.stringify(rt.containerId)
        }), and interface name (${JSON.stringify(rt.ifname)})`,
      );
    }
    return joinPath(this.dir, "results", `${network}-${rt.containerId}-${rt.ifname}`);
  }

  /** Writes the entry for an attachment after a successful ADD. */
  write(
    result: AnyResult | undefined,
    config: Uint8Array,
    network: string,
    rt: RuntimeConf,
  ): void {
    const caps = rt.capabilityArgs && Object.keys(rt.capabilityArgs).length
      ? rt.capabilityArgs
      : undefined;
    const json = marshalStruct([
      ["kind", CACHE_KIND],
      ["containerId", rt.containerId],
      ["config", config.toBase64()],
      ["ifName", rt.ifname],
      ["networkName", network],
      ["netns", rt.netns || undefined],
      ["cniArgs", rt.args?.length ? rt.args : undefined],
      ["capabilityArgs", caps],
      ["result", result ? resultToJSON(result) : undefined],
    ]);
    const path = this.filePath(network, rt);
    Deno.mkdirSync(dirName(path), { recursive: true, mode: 0o700 });
    Deno.writeTextFileSync(path, json, { mode: 0o600 });
  }

  /** The bytes of an attachment's entry, or `undefined` when there is none. */
  #read(network: string, rt: RuntimeConf): Uint8Array | undefined {
    const path = this.filePath(network, rt);
    try {
      return Deno.readFileSync(path);
    } catch {
      return undefined;
    }
  }

  /** Removes an attachment's entry; a missing one is fine. */
  remove(network: string, rt: Pick<RuntimeConf, "containerId" | "ifname">): void {
    try {
      Deno.removeSync(this.filePath(network, rt));
    } catch { /* nothing cached, or nothing to name it by */ }
  }

  /**
   * The cached result of an attachment, converted to `cniVersion`;
   * `undefined` when nothing is cached. Throws when the entry cannot be
   * decoded or converted.
   */
  readResult(network: string, cniVersion: string, rt: RuntimeConf): AnyResult | undefined {
    const bytes = this.#read(network, rt);
    if (!bytes) return undefined;
    const decoded = decodeEntry(bytes);
    if (decoded.ok && decoded.entry.kind === CACHE_KIND) {
      return convertCached(parseResult(decoded.entry.result ?? {}), cniVersion);
    }
    // Before libcni 0.8 the file held only the result.
    let legacy: unknown;
    try {
      legacy = JSON.parse(decoder.decode(bytes));
    } catch (e) {
      throw new Error(`decoding version from network config: ${(e as Error).message}`);
    }
    return convertCached(parseResult(legacy), cniVersion);
  }

  /**
   * The configuration an attachment was added with, and `rt` with the
   * cached CNI args and capability args; `undefined` when nothing is cached.
   */
  readConfig(
    network: string,
    rt: RuntimeConf,
  ): { config: Uint8Array; rt: RuntimeConf } | undefined {
    const bytes = this.#read(network, rt);
    if (!bytes) return undefined;
    const decoded = decodeEntry(bytes);
    if (!decoded.ok) {
      throw new Error(`failed to unmarshal cached network "${network}" config: ${decoded.error}`);
    }
    const entry = decoded.entry;
    if (entry.kind !== CACHE_KIND) {
      throw new Error(
        `read cached network "${network}" config has wrong kind: ${entry.kind ?? ""}`,
      );
    }
    const cached: RuntimeConf = { ...rt };
    const args = pairs(entry.cniArgs);
    if (args) cached.args = args;
    if (entry.capabilityArgs) cached.capabilityArgs = entry.capabilityArgs;
    else delete cached.capabilityArgs;
    return { config: Uint8Array.fromBase64(entry.config ?? ""), rt: cached };
  }

  /**
   * Every attachment in the cache, in file-name order, optionally only
   * those of one container. Unreadable and foreign files are skipped.
   */
  attachments(containerId = ""): NetworkAttachment[] {
    const dir = joinPath(this.dir, "results");
    let names: string[];
    try {
      names = [...Deno.readDirSync(dir)].map((e) => e.name).sort();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return [];
      throw e;
    }
    const out: NetworkAttachment[] = [];
    for (const name of names) {
      if (containerId) {
        const part = `-${containerId}-`;
        const at = name.indexOf(part);
        if (at <= 0 || at + part.length >= name.length) continue;
      }
      let bytes: Uint8Array;
      try {
        bytes = Deno.readFileSync(joinPath(dir, name));
      } catch {
        continue;
      }
      const decoded = decodeEntry(bytes);
      if (!decoded.ok || decoded.entry.kind !== CACHE_KIND) continue;
      const e = decoded.entry;
      if (containerId && e.containerId !== containerId) continue;
      if (!e.ifName || !e.networkName) continue;
      const attachment: NetworkAttachment = {
        containerId: e.containerId ?? "",
        network: e.networkName,
        ifName: e.ifName,
        config: Uint8Array.fromBase64(e.config ?? ""),
        netns: e.netns ?? "",
      };
      const args = pairs(e.cniArgs);
      if (args) attachment.cniArgs = args;
      if (e.capabilityArgs) attachment.capabilityArgs = e.capabilityArgs;
      out.push(attachment);
    }
    return out;
  }
}
