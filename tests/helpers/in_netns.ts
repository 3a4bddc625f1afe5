/**
 * Runs a piece of TypeScript as its own Deno process inside a test
 * namespace, for library code that works on "the current namespace" (the
 * netfilter runners): the code's last expression, awaited, is printed as
 * JSON and returned. Imports are resolved against the repository root
 * (`import { x } from "@/lib/netfilter/iptables.ts"`).
 * @module
 */

import { spawnOutput, type TestNetns } from "./netns.ts";

const ROOT = new URL("../../", import.meta.url).href;

/** Evaluates `body` (statements, then `return <value>;`) inside `ns` and returns the value. */
export async function evalInNetns<T>(ns: TestNetns, imports: string, body: string): Promise<T> {
  const code = `${imports.replaceAll('"@/', `"${ROOT}`)}\n` +
    `const __value = await (async () => {\n${body}\n})();\n` +
    `console.log(JSON.stringify(__value ?? null));\n`;
  const out = await spawnOutput("ip", [
    "netns",
    "exec",
    ns.name,
    Deno.execPath(),
    "eval",
    "--ext=ts",
    code,
  ]);
  if (out.code !== 0) throw new Error(`eval in ${ns.name} failed (${out.code}): ${out.stderr}`);
  return JSON.parse(out.stdout.trim().split("\n").at(-1)!) as T;
}
