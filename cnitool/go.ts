/**
 * The few conventions of Go's standard library that libcni's files and
 * messages carry, reproduced so that cnikit writes the same bytes (cache
 * files, plugin stdin) and words its errors alike: JSON with sorted map keys
 * and HTML-safe escapes, `%T` type names, and `filepath.Clean`.
 * @module
 */

import { CniError } from "../lib/cni/errors.ts";

const HTML_UNSAFE = /[<>&\u2028\u2029]/g;

/** Go's encoder escapes these even inside strings; JSON readers do not care. */
function escapeHtml(json: string): string {
  return json.replace(HTML_UNSAFE, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).sort()) {
    const v = (value as Record<string, unknown>)[key];
    if (v !== undefined) out[key] = sortKeys(v);
  }
  return out;
}

/**
 * Compact JSON as Go marshals a `map[string]interface{}`: keys sorted at
 * every level.
 */
export function marshalMap(value: unknown): string {
  return escapeHtml(JSON.stringify(sortKeys(value)));
}

/**
 * JSON of a Go struct: the fields in the given order, `undefined` ones left
 * out (`omitempty`), each value marshalled as a map.
 */
export function marshalStruct(fields: [string, unknown][]): string {
  const parts = fields.filter(([, v]) => v !== undefined).map(([k, v]) =>
    `${JSON.stringify(k)}:${marshalMap(v)}`
  );
  return `{${parts.join(",")}}`;
}

/** JSON indented by four spaces with the keys in their own order (`MarshalIndent`). */
export function marshalIndent(value: unknown): string {
  return escapeHtml(JSON.stringify(value, null, 4));
}

/** The name Go's `%T` prints for a decoded JSON value. */
export function goTypeName(value: unknown): string {
  if (value === null || value === undefined) return "<nil>";
  if (Array.isArray(value)) return "[]interface {}";
  switch (typeof value) {
    case "string":
      return "string";
    case "number":
      return "float64";
    case "boolean":
      return "bool";
    default:
      return "map[string]interface {}";
  }
}

/** `filepath.Clean`: the shortest equivalent path, purely lexically. */
export function cleanPath(path: string): string {
  if (path === "") return ".";
  const rooted = path.startsWith("/");
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") {
      if (out.length && out[out.length - 1] !== "..") out.pop();
      else if (!rooted) out.push("..");
      continue;
    }
    out.push(part);
  }
  const joined = out.join("/");
  return rooted ? `/${joined}` : joined || ".";
}

/** `filepath.Join`: the parts joined by `/` and cleaned; empty parts skipped. */
export function joinPath(...parts: string[]): string {
  const nonEmpty = parts.filter((p) => p !== "");
  return nonEmpty.length ? cleanPath(nonEmpty.join("/")) : "";
}

/** `filepath.Abs`: `path` made absolute against the working directory, cleaned. */
export function absPath(path: string): string {
  return path.startsWith("/") ? cleanPath(path) : joinPath(Deno.cwd(), path);
}

/** `filepath.Dir`: all but the last element, cleaned ("." for none). */
export function dirName(path: string): string {
  const slash = path.lastIndexOf("/");
  return slash < 0 ? "." : cleanPath(path.slice(0, slash + 1));
}

/** `filepath.Ext`: the suffix from the last dot of the last element, or "". */
export function extName(path: string): string {
  for (let i = path.length - 1; i >= 0 && path[i] !== "/"; i--) {
    if (path[i] === ".") return path.slice(i);
  }
  return "";
}

/** The text an error prints as: `msg; details` for a CNI error, else its message. */
export function errorText(error: unknown): string {
  if (error instanceof CniError) return error.toString();
  if (error instanceof Error) return error.message;
  return String(error);
}
