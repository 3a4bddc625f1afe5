/**
 * Path helpers for the hot start-up path. `node:path` and `node:url` pull in
 * Deno's Node compatibility layer, which costs milliseconds on every plugin
 * start; these few lines cost nothing.
 * @module
 */

/**
 * The folder beside a launcher build's `cnikit` that holds its code: the
 * entry `main.js` and one chunk per applet and shared part.
 */
export const CHUNK_DIR = "cnikit.d";

/** The last component of a path (`/a/b/bridge` → `bridge`). */
export function baseName(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  return trimmed.slice(trimmed.lastIndexOf("/") + 1);
}

/** The filesystem path of a `file:` URL. */
export function filePathOf(url: string): string {
  return decodeURIComponent(new URL(url).pathname);
}

/** The file this program runs as: the compiled binary, or the bundle launcher. */
export function executablePath(): string {
  if (Deno.build.standalone) return Deno.execPath();
  return Deno.mainModule.startsWith("file:") ? filePathOf(Deno.mainModule) : Deno.execPath();
}
