/**
 * Turns the ES-module chunks of `deno bundle --code-splitting` into plain
 * async function bodies that the launcher evaluates itself.
 *
 * Why: Deno's module loader analyses every module it loads (a full parse in
 * Rust to find its dependencies) before V8 ever sees it. Measured on this
 * project's build machine, a 400 KB module costs 56–72 ms more to import
 * than an empty one, while reading the same text and evaluating it costs
 * 3 ms; a bridge ADD loads ~120 KB of chunks. As function bodies the chunks
 * skip the loader and are parsed once, lazily, by V8.
 *
 * The transformation relies on the regular shape esbuild gives a chunk: a
 * run of `import … from "./chunk.js"` statements first, one `export{…}`
 * clause last, and `import("./chunk.js")` for a lazy chunk. Anything else
 * that looks like module syntax fails the build, rather than being guessed
 * at. Imports become `const` destructuring of the exporting chunk's
 * namespace object, evaluated once; that is exact as long as no module
 * reassigns an exported binding (no `export let`), which
 * tests/layout_test.ts enforces.
 * @module
 */

/** The name the loader's function is bound to inside every chunk body. */
export const LOAD = "__cnikitLoad";

const IMPORT_STATEMENT = /^import(?:(\{[^}]*\})from|\*as ([\w$]+) from)?"(\.\/[\w.-]+\.js)";/;
const EXPORT_CLAUSE = /export\{([^}]*)\};?\s*$/;
const LAZY_IMPORT = /(?<![\w$.])import\("(\.\/[\w.-]+\.js)"\)/g;
/** `import` or `export` used as a statement or call anywhere we did not rewrite. */
const LEFTOVER_MODULE_SYNTAX =
  /(?<![\w$.])(?:import\s*[{*"]|export\s*[{*]|export\s+(?:default|const|let|var|function|class)\b|import\.meta)/;

/** `{a as b,c}` → `{a:b,c}`: an import list as a destructuring pattern. */
function destructuring(list: string): string {
  return list.replace(/([\w$]+) as ([\w$]+)/g, "$1:$2");
}

/** `e as a,f,g as default` → `a:e,f,default:g`: an export list as an object literal's entries. */
function exportEntries(list: string): string {
  return list.split(",").filter((s) => s.trim() !== "").map((item) => {
    const [local, exported] = item.trim().split(/\s+as\s+/);
    return exported === undefined ? local! : `${JSON.stringify(exported)}:${local}`;
  }).join(",");
}

/** One leading `import` statement: what it binds, from which chunk. */
interface ChunkImport {
  list?: string;
  namespace?: string;
  from: string;
}

/** The run of `import … from "./x.js"` statements a chunk starts with, and the code after it. */
function leadingImports(code: string): { imports: ChunkImport[]; rest: string } {
  const imports: ChunkImport[] = [];
  let rest = code;
  for (let m = IMPORT_STATEMENT.exec(rest); m; m = IMPORT_STATEMENT.exec(rest)) {
    imports.push({ list: m[1], namespace: m[2], from: m[3]! });
    rest = rest.slice(m[0].length).replace(/^\s+/, "");
  }
  return { imports, rest };
}

/**
 * One chunk's ES-module text as the body of an async function of `LOAD`
 * that returns the chunk's exports. Throws on any module syntax it does not
 * know, naming the chunk.
 */
export function chunkToScript(name: string, code: string): string {
  const { imports, rest } = leadingImports(code);
  const head = imports.map(({ list, namespace, from }) => {
    const loaded = `await ${LOAD}(${JSON.stringify(from)})`;
    if (list !== undefined) return `const${destructuring(list)}=${loaded};`;
    return namespace !== undefined ? `const ${namespace}=${loaded};` : `${loaded};`;
  });
  const exported = EXPORT_CLAUSE.exec(rest);
  const tail = exported ? `return{${exportEntries(exported[1]!)}};` : "";
  const body = (exported ? rest.slice(0, exported.index) : rest).replace(
    LAZY_IMPORT,
    (_, from: string) => `${LOAD}(${JSON.stringify(from)})`,
  );
  const leftover = LEFTOVER_MODULE_SYNTAX.exec(body);
  if (leftover) {
    const at = body.slice(Math.max(0, leftover.index - 40), leftover.index + 40);
    throw new Error(`${name}: module syntax the launcher cannot load: …${at}…`);
  }
  // Chunks are strict as modules are; sourceURL names the chunk in stack traces.
  return `"use strict";${head.join("")}\n${body}\n${tail}\n//# sourceURL=${name}\n`;
}

/**
 * A static import cycle would make the loader wait on itself (ES modules
 * resolve cycles with live bindings; plain functions cannot). esbuild does
 * not emit one for this code, and the build fails if it ever does.
 */
export function assertNoCycle(chunks: ReadonlyMap<string, string>): void {
  const state = new Map<string, "visiting" | "done">();
  const visit = (name: string, path: string[]): void => {
    if (state.get(name) === "done") return;
    if (state.get(name) === "visiting") {
      throw new Error(`static import cycle among chunks: ${[...path, name].join(" → ")}`);
    }
    state.set(name, "visiting");
    for (const { from } of leadingImports(chunks.get(name) ?? "").imports) {
      visit(from.slice(2), [...path, name]);
    }
    state.set(name, "done");
  };
  for (const name of chunks.keys()) visit(name, []);
}

/**
 * The launcher's loader, as source: `load("./x.js")` evaluates a chunk once
 * and gives every caller the same exports. `dir` is an expression for the
 * chunk folder's path ending in `/`.
 */
export function loaderSource(dir: string): string {
  return `const A=(async()=>{}).constructor,c=new Map(),${LOAD}=(n)=>{let p=c.get(n);` +
    `if(!p){p=new A("${LOAD}",Deno.readTextFileSync(${dir}+n.slice(2)))(${LOAD});c.set(n,p)}` +
    `return p};`;
}
